"""Reliability on the real demo model: determinism, integrity, and SIGKILL during a 2 GB export.

    python benchmarks/reliability_demo.py [--kills 4] [--out DIR]

1. Measures the direction twice (same model, bundled prompts) and checks it is bit-identical.
2. Exports the cut model twice and checks that every file's sha256 in the two records match,
   and that ``vauban.verify`` passes on both.
3. Kills (SIGKILL) a forked export at evenly spaced moments of the export's own run time (the
   cut before it is not counted), and checks after each kill that the target is absent or
   complete (verified), that the next export succeeds and that no temporary directory is left.

Prints one JSON document with the figures (also written to ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import torch

from vauban import VaubanError, cut, export, load, measure, verify
from vauban.core.atomic import TEMP_TAG
from vauban.exports.exporting import RECORD_FILE, cut_record, versions


def _export(model, tokenizer, direction, out: Path, overwrite: bool = False, started=None) -> float:
    """Cut, export, undo; returns the export's own wall time (the cut is not timed)."""
    with cut(model, direction) as applied:
        record = cut_record("demo", applied, direction)
        if started is not None:
            started.set()
        start = time.perf_counter()
        export(model, tokenizer, out, direction=direction, record=record, overwrite=overwrite)
        return time.perf_counter() - start


def _child(model, tokenizer, direction, out, started):
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool (it hangs)
    _export(model, tokenizer, direction, out, started=started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-repeat", action="store_true", help="skip the determinism part (step 1-2)")
    args = parser.parse_args()
    scratch = Path(args.out or tempfile.mkdtemp(prefix="vauban-reliability-"))
    figures: dict = {"versions": versions(), "threads": torch.get_num_threads()}

    model, tokenizer = load(device="cpu")
    start = time.perf_counter()
    first = measure(model, tokenizer)
    figures["measure_s"] = round(time.perf_counter() - start, 1)
    second = first if args.no_repeat else measure(model, tokenizer)
    if not args.no_repeat:
        figures["direction_bit_identical"] = bool(
            torch.equal(first.direction, second.direction)
            and torch.equal(first.harmful_means, second.harmful_means)
            and torch.equal(first.harmless_means, second.harmless_means)
            and first.cosine_scores == second.cosine_scores
        )

    runs = [scratch / f"export{i}" for i in range(1 if args.no_repeat else 2)]
    seconds = [_export(model, tokenizer, d, r) for d, r in zip((first, second), runs, strict=False)]
    figures["export_s"] = round(sum(seconds) / len(seconds), 1)
    records = [json.loads((r / RECORD_FILE).read_text()) for r in runs]
    figures["export_files"] = len(records[0]["files"])
    figures["export_bytes"] = sum(f["bytes"] for f in records[0]["files"].values())
    if not args.no_repeat:
        figures["export_hashes_identical"] = records[0]["files"] == records[1]["files"]
    start = time.perf_counter()
    for r in runs:
        verify(r)
    figures["verify_s"] = round((time.perf_counter() - start) / len(runs), 1)

    ctx = multiprocessing.get_context("fork")
    duration = figures["export_s"]
    lost = 0
    for k in range(args.kills):
        out = scratch / f"killed{k}" / "abliterated"
        out.parent.mkdir(parents=True)
        started = ctx.Event()
        child = ctx.Process(target=_child, args=(model, tokenizer, first, out, started))
        child.start()
        started.wait()  # the cut is done: the export starts now
        time.sleep(duration * (k + 1) / (args.kills + 1))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        try:
            state = "absent" if not out.exists() else ("complete" if verify(out) else "?")
        except VaubanError:
            state = "partial"
        lost += state == "partial"
        left = [p.name for p in out.parent.iterdir() if TEMP_TAG in p.name]
        _export(model, tokenizer, first, out, overwrite=True)
        verify(out)
        remaining = [p.name for p in out.parent.iterdir() if TEMP_TAG in p.name]
        figures.setdefault("kills", []).append(
            {
                "at_s": round(duration * (k + 1) / (args.kills + 1), 2),
                "target": state,
                "temp_left_by_kill": len(left),
                "temp_after_next_export": len(remaining),
            }
        )
        shutil.rmtree(out.parent)
    figures["kill_points"] = args.kills
    figures["outputs_lost_or_partial"] = lost
    shutil.rmtree(scratch, ignore_errors=True)
    text = json.dumps(figures, indent=1)
    print(text)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    name = "reliability_demo_kills.json" if args.no_repeat else "reliability_demo.json"
    (results / name).write_text(text + "\n")


if __name__ == "__main__":
    main()
