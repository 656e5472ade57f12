"""Does a short optimization beat the plain alpha = 1 cut on prompts it never saw? (issue 5)

Runs ``vauban.optimize`` (seeded multi-objective TPE, refusal on bundled eval prompts 20-59 and
first-token KL on the bundled harmless set), then evaluates side by side, on held-out prompts:

- the plain cut (trial 0 of every study: the measured direction, weight 1 on every writer);
- the Pareto points that dominate it on the search prompts (at most ``--candidates``, lowest
  search KL first), or, when none does, the Pareto points with no more search refusals.

Held out: refusal on bundled eval prompts 0-19 and 60-99 (60 prompts, ``--max-tokens`` greedy
tokens, as ``evaluate`` judges them), KL and perplexity on the 48 bundled reference answers
(every answer position and first answer token). Prints a table and writes
``benchmarks/results/optimize_demo.json``. Example (about 30 min on a 2-core CPU)::

    nice -n 5 python benchmarks/optimize_demo.py --trials 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vauban import DirectionResult, load, measure
from vauban.evaluate import Pair, answer_scores, completions
from vauban.optimize import Trial, optimize
from vauban.prompts import bundled_records, load_pairs, load_prompts

RESULTS = Path(__file__).parent / "results"


def held_out_prompts() -> list[str]:
    records = bundled_records("eval_harmful")
    return [r["prompt"] for r in records[:20] + records[60:100]]


def candidates(result, limit: int) -> list[Trial]:
    plain = result.plain
    front = [t for t in result.pareto if not t.plain]
    better = [t for t in front if t.refusal <= plain.refusal and t.kl < plain.kl]
    pool = better or [t for t in front if t.refusal <= plain.refusal]
    return sorted(pool, key=lambda t: t.kl)[:limit]


def evaluate_trial(model, tokenizer, direction, trial: Trial, prompts, pairs, max_tokens: int) -> dict:
    start = time.perf_counter()
    with trial.params.apply(model, direction):
        answers = completions(model, tokenizer, prompts, max_tokens=max_tokens, batch_size=None)
        scores = answer_scores(Pair(model, model), tokenizer, pairs)
    return {
        "trial": trial.number,
        "plain": trial.plain,
        "search": {"refusal": trial.refusal, "first_token_kl": trial.kl},
        "held_out": {
            "refusal": sum(a.refused for a in answers) / len(answers),
            "refused": sum(a.refused for a in answers),
            "first_token_kl": scores.first_token_kl,
            "kl": scores.kl,
            "perplexity": scores.perplexity_after,
        },
        "cut": trial.params.record(),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--study", default="/tmp/vauban_optimize_demo.db", help="SQLite study (resumes)")
    parser.add_argument("--direction", help="a saved direction (default: measure it, ~1 min)")
    parser.add_argument("--harmless-n", type=int, default=48,
                        help="first N bundled harmless prompts for the search's KL (fewer = faster trials)")
    parser.add_argument("--search-tokens", type=int, default=16, help="answer tokens judged per prompt")
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", default=str(RESULTS / "optimize_demo.json"))
    args = parser.parse_args()

    t0 = time.perf_counter()
    model, tokenizer = load()
    if args.direction:
        direction = DirectionResult.load(args.direction)
    else:
        direction = measure(model, tokenizer)
        direction.save("/tmp/vauban_demo_direction.safetensors")
    print(direction.summary(), flush=True)
    harmless = load_prompts("harmless")[: args.harmless_n]
    result = optimize(model, tokenizer, direction, n_trials=args.trials, seed=args.seed, study=args.study,
                      harmless=harmless, max_tokens=args.search_tokens, show_progress=True)
    print(result.table())
    print(result.summary(), flush=True)

    prompts, pairs = held_out_prompts(), load_pairs("reference")
    original = completions(model, tokenizer, prompts, max_tokens=args.max_tokens, batch_size=None)
    rows = [evaluate_trial(model, tokenizer, direction, t, prompts, pairs, args.max_tokens)
            for t in [result.plain, *candidates(result, args.candidates)]]
    plain = rows[0]["held_out"]
    for row in rows[1:]:
        h = row["held_out"]
        row["dominates_plain_held_out"] = (h["refusal"] <= plain["refusal"]
                                           and h["first_token_kl"] < plain["first_token_kl"])

    print(f"\nheld out: {len(prompts)} harmful prompts (eval 0-19, 60-99), {len(pairs)} reference answers;"
          f" original refuses {sum(a.refused for a in original)}/{len(prompts)}")
    print("trial   search refusal / ft-KL   held-out refusal   ft-KL     KL      ppl   dominates plain")
    for row in rows:
        s, h = row["search"], row["held_out"]
        label = f"{row['trial']}{' (plain)' if row['plain'] else ''}"
        print(f"{label:>11}  {s['refusal']:6.1%} / {s['first_token_kl']:.4f}   "
              f"{h['refused']:3d} ({h['refusal']:5.1%})   {h['first_token_kl']:.4f}  {h['kl']:.4f}  "
              f"{h['perplexity']:6.2f}   "
              f"{row.get('dominates_plain_held_out', '-')}")
    print(f"{result.seconds_per_trial:.1f} s per trial over {len(result.trials)} trials")
    report = {
        "model": direction.model_path,
        "direction_layer": direction.layer_index,
        "trials": len(result.trials),
        "seed": args.seed,
        "seconds_per_trial": round(result.seconds_per_trial, 1),
        "search": {"validation_prompts": result.n_prompts, "harmless_prompts": result.n_harmless,
                   "answer_tokens": args.search_tokens},
        "held_out": {"harmful_prompts": len(prompts), "reference_answers": len(pairs),
                     "max_tokens": args.max_tokens,
                     "original_refusal": sum(a.refused for a in original) / len(prompts)},
        "points": rows,
        "pareto": [t.record() for t in result.pareto],
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
