"""Redraw ``docs/optimize_demo_pareto.png`` from the trials stored in ``optimize_demo.json``.

The plot needs no study database: every trial's three objectives (refusal rate, first-token
KL, refusal likelihood) are in the results file, and the Pareto front over all three is
recomputed from them (:func:`vauban.search.optimizing.pareto_mask`), as docs/benchmarks.md's table is.

    python benchmarks/optimize_demo_plot.py
"""

from __future__ import annotations

import json
from pathlib import Path

from vauban.plots import plot_pareto
from vauban.search.trials import OptimizeResult, Trial, pareto_mask

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "optimize_demo.json"
PLOT = ROOT / "docs" / "optimize_demo_pareto.png"


def stored_result(path: Path = RESULTS) -> OptimizeResult:
    """The study of ``path`` as an :class:`OptimizeResult` (trial parameters left out)."""
    record = json.loads(path.read_text())["optimize"]
    trials = record["trials"]
    front = pareto_mask([(t["refusal"], t["kl"], t["refusal_likelihood"]) for t in trials])
    return OptimizeResult(
        trials=tuple(
            Trial(
                number=t["number"],
                refusal=t["refusal"],
                kl=t["kl"],
                seconds=t["seconds"],
                params=None,
                likelihood=t["refusal_likelihood"],
                pareto=on,
                plain=t["plain"],
                selection_refusal=t["selection_refusal"],
            )
            for t, on in zip(trials, front, strict=True)
        ),
        n_prompts=record["n_prompts"],
        n_harmless=record["n_harmless"],
        seed=record["seed"],
        n_selection=record["n_selection"],
    )


if __name__ == "__main__":
    result = stored_result()
    assert result.best.number == json.loads(RESULTS.read_text())["optimize"]["best"], "pick differs"
    plot_pareto(result, PLOT)
    print(
        f"{PLOT}: {len(result.trials)} trials, front {[t.number for t in result.pareto]}, "
        f"pick {result.best.number}"
    )
