"""Every benchmark script imports against today's API (a renamed function fails here, not in
the middle of an hour-long run). Scripts are loaded as modules, never run: work lives under
``if __name__ == "__main__"``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    name = f"_bench_{script[:-3]}"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import registers it (dataclasses look their module up there)
    try:
        spec.loader.exec_module(module)
    except ImportError as error:  # an optional runtime a benchmark needs (mlx, llama.cpp) is fine
        if error.name and error.name.split(".")[0] in {"mlx", "mlx_lm", "llama_cpp", "lm_eval", "optuna"}:
            pytest.skip(f"{script} needs {error.name}")
        raise
    finally:
        sys.modules.pop(name, None)


def test_peers_frontier_takes_the_cheapest_trial_of_each_refusal_level(monkeypatch):
    """The front rows the peers benchmark measures: per refusal level the lowest-KL front trial,
    never the pick (measured already), thinned evenly keeping both ends."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from peers_frontier import front_trials

    trials = [
        (0, 0.0, 0.06, True),
        (1, 0.0, 0.02, True),
        (2, 0.0, 0.03, True),
        (3, 0.1, 0.01, True),
        (4, 0.1, 0.005, False),
        (5, 0.2, 0.004, True),
        (6, 0.4, 0.002, True),
    ]
    pareto = {
        "best": 1,
        "trials": [{"number": n, "refusal": r, "kl": k, "pareto": p} for n, r, k, p in trials],
    }
    assert front_trials(pareto, 10) == [2, 3, 5, 6]
    assert front_trials(pareto, 2) == [2, 6]
    assert front_trials(pareto, 1) == [2]
