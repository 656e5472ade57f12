"""The machinery of the measured tables (``benchmarks/readme_tables.py``): the registry, reading
results files (each remembered as a source of the table being built), and markdown helpers.

A table builder is a function decorated ``@table("name")`` that reads its results files with
:func:`load` and returns markdown lines; :func:`build` runs one and appends its ``Source:`` line.
The builders are in ``tables_quality.py`` (what a cut does to the model), ``tables_frontier.py``
(the frontier of ``frontier.py``) and ``tables_speed.py`` (how fast and how large).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

TABLES: dict[str, Callable[[], list[str]]] = {}
_read: list[str] = []  # results files read by the table being built, in order


def table(name: str) -> Callable[[Callable[[], list[str]]], Callable[[], list[str]]]:
    """Register a table builder under its README marker name."""

    def register(fn: Callable[[], list[str]]) -> Callable[[], list[str]]:
        TABLES[name] = fn
        return fn

    return register


def load(name: str) -> dict[str, Any]:
    """A results file of ``benchmarks/results/``, remembered as a source of the current table."""
    path = RESULTS / name
    if not path.is_file():
        raise SystemExit(f"readme_tables: {path} is missing; run the benchmark that writes it")
    if name not in _read:
        _read.append(name)
    return json.loads(path.read_text())


# Files written before results recorded their own commit: the last commit that changed each (git
# log, read once and kept here, so --check gives the same answer in a shallow clone) and the run's
# date from the file or its notes. New results files record ``git`` and ``date`` themselves.
COMMITTED: dict[str, tuple[str, str]] = {
    "cpu_demo.json": ("332ffa3", "2026-11-27"),
    "optimize_demo.json": ("2c72966", "2026-11-27"),
    "gpu_h100_llama-3.1-8b.json": ("e7b26c9", "2026-11-27"),
    "gpu_h100_kernel_sweep.json": ("0742e11", "2026-11-27"),
    "gpu_2xh100_llama-3.1-8b.json": ("e7b26c9", "2026-11-27"),
    "gpu_h200_llama-3.1-8b.json": ("8116238", "2026-11-30"),
    "gpu_2xh200_replicas.json": ("8116238", "2026-11-30"),
    "gpu_2xh200_llama-3.1-8b.json": ("8116238", "2026-11-30"),
}


def provenance(name: str) -> str:
    """``file (commit X, date)``: what the file records about itself, else :data:`COMMITTED`."""
    data = json.loads((RESULTS / name).read_text())
    commit = data.get("git") or data.get("commit")
    date = str(data.get("date", ""))[:10]
    if commit:
        return f"`benchmarks/results/{name}` (run at commit {commit}, {date})"
    if name in COMMITTED:
        committed, day = COMMITTED[name]
        return f"`benchmarks/results/{name}` (committed in {committed}, run {date or day})"
    raise SystemExit(f"readme_tables: {name} records no commit; add 'git' and 'date' to it")


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def pct(x: float, digits: int = 0) -> str:
    return f"{x * 100:.{digits}f} %"


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score 95 % interval of ``k`` successes in ``n`` trials (scipy's)."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def pct_ci(rate: float, n: int) -> str:
    """``rate`` of ``n`` as a percentage with its Wilson 95 % interval: ``8 % (2–27)``."""
    k = round(rate * n)
    low, high = wilson(k, n)
    return f"{pct(rate)} ({100 * low:.0f}–{100 * high:.0f})"


def seconds(x: float) -> str:
    return f"{x:.1f} s" if x < 10 else f"{x:,.0f} s"


def build(name: str) -> str:
    _read.clear()
    lines = TABLES[name]()
    sources = "; ".join(provenance(f) for f in _read)
    return "\n".join([*lines, "", f"Source: {sources}."]) + "\n"
