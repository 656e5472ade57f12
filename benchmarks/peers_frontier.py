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
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from peers import say
from vauban.evaluating import DEFAULT_MAX_TOKENS


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


def measure_front(work: Path, files: dict[str, Path], limit: int,
                  max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
    """Every missing front row: the trial's cut applied to a second copy of the original, its
    ``refusal`` and ``kl`` rows measured as for the exports, the cut undone."""
    from peers_evaluate import model_dirs, vauban_metrics
    from vauban import DirectionResult, load
    from vauban.cutspec import CutSpec

    pareto_file = work / "optimize" / "pareto.json"
    pareto = json.loads(pareto_file.read_text())
    store = work / "eval"
    todo = [n for n in front_trials(pareto, limit) if not (store / f"frontier_{n}.json").is_file()]
    if not todo:
        return
    metrics = vauban_metrics(files, max_tokens)
    original = model_dirs(work)["original"]
    base, tokenizer = load(str(original))
    model = load(str(original))[0]
    direction = DirectionResult.load(work / "exports" / "vauban_optimize" / "vauban_direction.safetensors")
    cache: dict = {}
    for number in todo:
        spec = CutSpec.from_params(pareto_file, trial=number)
        trial = next(t for t in pareto["trials"] if t["number"] == number)
        start = time.perf_counter()
        with spec.apply(model, spec.vector(model, tokenizer, direction)):
            row = {k: v for m in ("refusal", "kl")
                   for k, v in metrics[m](base, model, tokenizer, cache).items()}
        row |= {"trial": number, "search_refusal": trial["refusal"], "search_kl": trial["kl"],
                "cut": trial["cut"], "seconds": round(time.perf_counter() - start, 1)}
        (store / f"frontier_{number}.json").write_text(json.dumps(row, indent=1) + "\n")
        say(f"frontier trial {number} (search: refusal {trial['refusal']:.1%}, KL {trial['kl']:.4f}): "
            f"refusals {row['refusals']}/100, first-token KL {row['first_token_kl']:.4f}, "
            f"reference KL {row['reference_kl']:.4f} ({row['seconds']} s)")


def read_front(store: Path) -> list[dict]:
    """The measured front rows, fewest refusals first."""
    rows = [json.loads(p.read_text()) for p in store.glob("frontier_*.json")]
    return sorted(rows, key=lambda r: (r["refusals"], r["first_token_kl"]))
