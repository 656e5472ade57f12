"""How long ``vauban --help`` takes: the library is imported lazily, so parsing comes first.

Times ``python -m vauban.cli --help`` in fresh processes for each source tree given (default:
this checkout's ``src``), best and median of ``--runs``, with the peak RSS of the child and
whether torch was imported; writes ``benchmarks/results/cli_startup.json``.

    git archive 601a55b src | tar -x -C /tmp/before   # the last commit with eager imports
    python benchmarks/cli_startup.py --src /tmp/before/src@601a55b --src src
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "cli_startup.json"
PROBE = (
    "import runpy, sys; sys.argv = ['vauban', '--help']\n"
    "try: runpy.run_module('vauban.cli', run_name='__main__')\n"
    "except SystemExit: pass\n"
    "import resource\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr)\n"
    "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)"
)


def time_help(tree: str, runs: int) -> dict[str, object]:
    """``tree``: a source directory, or ``DIR@COMMIT`` for one exported from that commit."""
    path, _, commit = tree.partition("@")
    src = Path(path).resolve()
    env = {**os.environ, "PYTHONPATH": str(src)}
    seconds, torch_loaded, peak = [], set(), 0
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
        )
        seconds.append(time.perf_counter() - start)
        *_, rss, torch = done.stderr.strip().splitlines()
        torch_loaded.add(torch == "TORCH")
        peak = max(peak, int(rss))
    commit = (
        commit
        or subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    )
    return {
        "src": str(src),
        "git": commit,
        "best_s": round(min(seconds), 3),
        "median_s": round(statistics.median(seconds), 3),
        "runs": runs,
        "imports_torch": torch_loaded == {True},
        "peak_rss_bytes": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", help="a source tree, DIR or DIR@COMMIT (repeatable)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": commit,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "trees": [time_help(src, args.runs) for src in args.src or [str(ROOT / "src")]],
    }
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
