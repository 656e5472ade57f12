"""vauban's search front on the report prompts: where a heretic pick sits against the trade-off
curve vauban's own search found (stage ``frontier`` of ``benchmarks/peers.py``).

One pick per tool says little when the picks refuse at different levels: a lighter cut always
costs less KL. So the trials of vauban's search front are measured by the same yardstick as the
picks (``peers_evaluate``'s ``refusal`` and ``kl`` rows: refusals on the 100 report AdvBench
goals at evaluate's answer length, first-token KL on the 100 report harmless prompts, KL over
the first 64 tokens of the 48 bundled reference answers). Which trials: for each refusal level
of the front on vauban's search prompts, the one with the lowest search KL, at most
``--frontier-trials`` of them spread over the levels (the pick is measured already). Each row
is kept in ``WORK/eval/frontier_<trial>.json``; the stage resumes.

The same stage measures the one-command default's cut (``vauban abliterate``'s direction,
weight 1 everywhere) with heretic's two default edit options, which the default leaves off:
the projected direction (heretic's ``orthogonalize_direction``) and the norm-preserving edit
(closest to heretic's ``row_normalization = FULL``), in ``WORK/eval/variant_<name>.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from peers_common import say
from vauban.evaluation.evaluating import DEFAULT_MAX_TOKENS


def front_trials(pareto: dict, limit: int) -> list[int]:
    """The lowest-KL front trial of each refusal level (fewest refusals first), the pick
    excluded, thinned evenly to ``limit`` levels (keeping the first and the last)."""
    best: dict[float, dict] = {}
    for t in pareto["trials"]:
        if t["pareto"] and t["number"] != pareto["best"]:
            level = best.get(t["refusal"])
            if level is None or t["kl"] < level["kl"]:
                best[t["refusal"]] = t
    levels = [best[r]["number"] for r in sorted(best)]
    if len(levels) <= limit:
        return levels
    if limit == 1:
        return levels[:1]
    step = (len(levels) - 1) / (limit - 1)
    return sorted({levels[round(i * step)] for i in range(limit)}, key=levels.index)


VARIANTS = {
    "projected+norm_preserving": {"projected": True, "norm_preserving": True},
    "norm_preserving": {"norm_preserving": True},
    "projected": {"projected": True},
}


def measure_cuts(work: Path, files: dict[str, Path], cuts: dict[str, tuple], max_tokens: int) -> None:
    """``cuts``: file stem -> (CutSpec, direction, extra fields); each missing row measured on a
    second copy of the original with the cut applied (``refusal`` and ``kl`` rows, as for the
    exports), the cut undone after it."""
    from peers_common import model_dirs
    from peers_evaluate import vauban_metrics
    from vauban import load

    store = work / "eval"
    todo = {stem: cut for stem, cut in cuts.items() if not (store / f"{stem}.json").is_file()}
    if not todo:
        return
    metrics = vauban_metrics(files, max_tokens)
    original = model_dirs(work)["original"]
    base, tokenizer = load(str(original))
    model = load(str(original))[0]
    cache: dict = {}
    for stem, (spec, direction, extra) in todo.items():
        start = time.perf_counter()
        with spec.apply(model, spec.vector(model, tokenizer, direction)):
            row = {
                k: v for m in ("refusal", "kl") for k, v in metrics[m](base, model, tokenizer, cache).items()
            }
        row |= extra | {"seconds": round(time.perf_counter() - start, 1)}
        (store / f"{stem}.json").write_text(json.dumps(row, indent=1) + "\n")
        say(
            f"{stem}: refusals {row['refusals']}/100, first-token KL {row['first_token_kl']:.4f}, "
            f"reference KL {row['reference_kl']:.4f} ({row['seconds']} s)"
        )


def measure_variants(work: Path, files: dict[str, Path], max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
    """The default export's cut with heretic's default edit options (:data:`VARIANTS`)."""
    from vauban import DirectionResult
    from vauban.methods.cutspec import CutSpec

    direction = DirectionResult.load(work / "exports" / "vauban_default" / "vauban_direction.safetensors")
    cuts = {
        f"variant_{name}": (CutSpec(**options), direction, {"variant": name, **options})
        for name, options in VARIANTS.items()
    }
    measure_cuts(work, files, cuts, max_tokens)


def measure_front(
    work: Path, files: dict[str, Path], limit: int, max_tokens: int = DEFAULT_MAX_TOKENS
) -> None:
    """The front trials of :func:`front_trials` on the report prompts."""
    from vauban import DirectionResult
    from vauban.methods.cutspec import CutSpec

    pareto_file = work / "optimize" / "pareto.json"
    pareto = json.loads(pareto_file.read_text())
    direction = DirectionResult.load(work / "exports" / "vauban_optimize" / "vauban_direction.safetensors")
    trials = {t["number"]: t for t in pareto["trials"]}
    measure_cuts(
        work,
        files,
        {
            f"frontier_{n}": (
                CutSpec.from_params(pareto_file, trial=n),
                direction,
                {
                    "trial": n,
                    "search_refusal": trials[n]["refusal"],
                    "search_kl": trials[n]["kl"],
                    "cut": trials[n]["cut"],
                },
            )
            for n in front_trials(pareto, limit)
        },
        max_tokens,
    )
