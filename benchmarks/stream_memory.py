"""Peak memory of the streamed cut (``vauban cut``) against the size of the checkpoint it cuts.

A child process imports vauban, loads nothing but the direction, records its peak RSS, cuts
the checkpoint on disk (:func:`vauban.exports.streaming.stream_export`, one tensor at a time) and records
the peak again; the difference is what the cut itself needed. The checkpoint is the demo
model's float32 directory from the cache (2.5 GB, one safetensors file); the direction is a
random unit vector (memory does not depend on its values).

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/stream_memory.py
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "stream_memory.json"

CHILD = """
import resource, sys, time, torch
from vauban.model.loading import demo_model_dir
from vauban.exports.streaming import stream_export, weight_files
src = demo_model_dir()
direction = torch.randn(896, generator=torch.Generator().manual_seed(0))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
stream_export(src, sys.argv[1], direction)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
size = sum(f.stat().st_size for f in weight_files(src))
print(before, peak, size, seconds)
"""


def main() -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", CHILD, f"{tmp}/cut"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    before, peak, size, seconds = done.stdout.split()[-4:]
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": commit,
        "checkpoint": "demo model, float32, one safetensors file",
        "checkpoint_bytes": int(size),
        "rss_before_bytes": int(before),
        "peak_rss_bytes": int(peak),
        "peak_increase_bytes": int(peak) - int(before),
        "seconds": round(float(seconds), 1),
    }
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
