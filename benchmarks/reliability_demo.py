"""Reliability on the real demo model: determinism, integrity, and SIGKILL during a 2 GB export.

    python benchmarks/reliability_demo.py [--kills 4] [--out DIR]

1. Measures the direction twice (same model, bundled prompts) and checks it is bit-identical.
2. Exports the cut model twice and checks that every file's sha256 in the two records match,
   and that ``vauban.verify`` passes on both.
3. Kills (SIGKILL) a forked export at evenly spaced moments of its run time, and checks after
   each kill that the target is absent or complete (verified), that the next export succeeds
   and that no temporary directory is left.

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
from vauban.atomic import TEMP_TAG
from vauban.export import RECORD_FILE, cut_record, versions


def _export(model, tokenizer, direction, out: Path, overwrite: bool = False) -> Path:
    with cut(model, direction) as applied:
        record = cut_record("demo", applied, direction)
        return export(model, tokenizer, out, direction=direction, record=record, overwrite=overwrite)


def _child(model, tokenizer, direction, out):
    _export(model, tokenizer, direction, out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    scratch = Path(args.out or tempfile.mkdtemp(prefix="vauban-reliability-"))
    figures: dict = {"versions": versions(), "threads": torch.get_num_threads()}

    model, tokenizer = load(device="cpu")
    start = time.perf_counter()
    first = measure(model, tokenizer)
    figures["measure_s"] = round(time.perf_counter() - start, 1)
    second = measure(model, tokenizer)
    figures["direction_bit_identical"] = bool(
        torch.equal(first.direction, second.direction)
        and torch.equal(first.harmful_means, second.harmful_means)
        and torch.equal(first.harmless_means, second.harmless_means)
        and first.cosine_scores == second.cosine_scores
    )

    start = time.perf_counter()
    runs = [_export(model, tokenizer, d, scratch / f"export{i}") for i, d in enumerate((first, second))]
    figures["export_s"] = round((time.perf_counter() - start) / 2, 1)
    records = [json.loads((r / RECORD_FILE).read_text()) for r in runs]
    figures["export_files"] = len(records[0]["files"])
    figures["export_bytes"] = sum(f["bytes"] for f in records[0]["files"].values())
    figures["export_hashes_identical"] = records[0]["files"] == records[1]["files"]
    start = time.perf_counter()
    for r in runs:
        verify(r)
    figures["verify_s"] = round((time.perf_counter() - start) / 2, 1)

    ctx = multiprocessing.get_context("fork")
    duration = figures["export_s"]
    lost = 0
    for k in range(args.kills):
        out = scratch / f"killed{k}" / "abliterated"
        out.parent.mkdir(parents=True)
        child = ctx.Process(target=_child, args=(model, tokenizer, first, out))
        child.start()
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
        figures.setdefault("kills", []).append({"at_s": round(duration * (k + 1) / (args.kills + 1), 2),
                                                "target": state, "temp_left_by_kill": len(left),
                                                "temp_after_next_export": len(remaining)})
        shutil.rmtree(out.parent)
    figures["kill_points"] = args.kills
    figures["outputs_lost_or_partial"] = lost
    shutil.rmtree(scratch, ignore_errors=True)
    text = json.dumps(figures, indent=1)
    print(text)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "reliability_demo.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
