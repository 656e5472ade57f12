"""A pytest plugin for timing tests on a shared machine: per test (setup, call and teardown) the
wall seconds and the process CPU seconds (children included), and the load average, one JSON line
each, appended to ``$CPUTIME_OUT`` (default ``cputime.jsonl``). CPU seconds depend far less on what
else runs than wall seconds do (benchmarks/results/suite_time.json)::

    CPUTIME_OUT=WORK/times.jsonl PYTHONPATH=src:benchmarks python -m pytest tests/test_x.py -p cputime_plugin
"""

from __future__ import annotations

import json
import os
import resource
import time

_START: dict[str, tuple[float, float]] = {}


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    _START[nodeid] = (time.perf_counter(), _cpu())


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    wall, used = _START.pop(nodeid)
    record = {
        "test": nodeid,
        "wall_s": round(time.perf_counter() - wall, 1),
        "cpu_s": round(_cpu() - used, 1),
        "load1": round(os.getloadavg()[0], 2),
    }
    with open(os.environ.get("CPUTIME_OUT", "cputime.jsonl"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
