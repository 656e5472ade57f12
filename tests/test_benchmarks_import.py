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
    try:
        spec.loader.exec_module(module)
    except ImportError as error:  # an optional runtime a benchmark needs (mlx, llama.cpp) is fine
        if error.name and error.name.split(".")[0] in {"mlx", "mlx_lm", "llama_cpp", "lm_eval", "optuna"}:
            pytest.skip(f"{script} needs {error.name}")
        raise
    finally:
        sys.modules.pop(name, None)
