"""The README's set-up command, timed on a fresh clone: what a new user waits for.

    git clone REPO clone && cd clone
    python3 -m venv .venv && .venv/bin/pip install -e ".[demo]" \
        && .venv/bin/vauban run --output-dir abliterated-demo

run with an empty vauban cache (``VAUBAN_CACHE``), so ``load`` includes the one-time assembly and
dequantization of the demo GGUF. ``vauban run --json`` reports every step's wall time and
result (direction, probes, evaluation, steering); they are stored with the install time, the
versions pip chose, the commit and the machine's load in ``benchmarks/results/run_demo.json``,
which backs the demo-run table of docs/benchmarks.md (``benchmarks/readme_tables.py``).

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/fresh_clone.py   # ~10 min, ~5 GiB
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "run_demo.json"
VERSIONS = ("torch", "transformers", "accelerate", "safetensors", "gguf", "numpy", "matplotlib")


def run(command: str, cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{command!r} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=str(ROOT), help="what to clone (default: this checkout)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "-C", args.repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="vauban-fresh-") as tmp:
        clone, cache = Path(tmp) / "clone", Path(tmp) / "cache"
        subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VAUBAN_") and k != "PYTHONPATH"}
        env["VAUBAN_CACHE"] = str(cache)
        load_before = os.getloadavg()
        install_s, _ = run('python3 -m venv .venv && .venv/bin/pip install -q -e ".[demo]"', clone, env)
        _, listing = run(".venv/bin/pip list --format json", clone, env)
        versions = {p["name"].lower(): p["version"] for p in json.loads(listing)}
        run_s, out = run(".venv/bin/vauban run --output-dir abliterated-demo --json", clone, env)
        report = json.loads(out)
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": commit,
        "command": 'python3 -m venv .venv && .venv/bin/pip install -e ".[demo]" && '
        ".venv/bin/vauban run --output-dir abliterated-demo",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {name: versions.get(name) for name in VERSIONS},
        "install_s": round(install_s, 1),
        "run_s": round(run_s, 1),
        "total_s": round(install_s + run_s, 1),
        "first_run": True,  # empty VAUBAN_CACHE: load includes the GGUF dequantization
        "run": report,
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "run"}, indent=1))
    print("seconds:", report.get("seconds"))


if __name__ == "__main__":
    main()
