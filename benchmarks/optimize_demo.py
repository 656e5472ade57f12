"""Does a short optimization beat the plain alpha = 1 cut on prompts it never saw? (issue 5)

Runs ``vauban.optimize`` (seeded multi-objective TPE; refusal on the first ``--validation-n``
bundled eval prompts from 20 on, first-token KL on the first ``--harmless-n`` bundled harmless
prompts), then evaluates side by side, on held-out prompts:

- the plain cut (the first trial of every study: the measured direction, weight 1 everywhere);
- the Pareto points that dominate it on the search prompts (at most ``--candidates``, lowest
  search KL first), or, when none does, the Pareto points with no more search refusals.

Held out: refusal on bundled eval prompts 60-99 (``--max-tokens`` greedy tokens, judged as
``evaluate`` judges), and the first-token KL(original ‖ cut) on the 48 bundled reference prompts
(the quantity ``evaluate`` reports as first-token KL); ``--full`` adds perplexity and the KL at
every position of the reference answers. Prints a table and writes
``benchmarks/results/optimize_demo.json``. The study is an SQLite file: rerun to resume it, or
with ``--trials`` at most the finished count to evaluate without searching further::

    nice -n 5 python benchmarks/optimize_demo.py --trials 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vauban import DirectionResult, load, measure
from vauban.evaluate import Pair, answer_scores, completions
from vauban.optimize import Trial, first_token_logprobs, kl_divergence, optimize
from vauban.prompts import bundled_records, load_pairs, load_prompts

RESULTS = Path(__file__).parent / "results"


def candidates(result, limit: int) -> list[Trial]:
    plain = result.plain
    front = [t for t in result.pareto if not t.plain]
    better = [t for t in front if t.refusal <= plain.refusal and t.kl < plain.kl]
    pool = better or [t for t in front if t.refusal <= plain.refusal]
    return sorted(pool, key=lambda t: t.kl)[:limit]


def held_out(model, tokenizer, prompts, pairs, base, max_tokens: int, full: bool) -> dict:
    answers = completions(model, tokenizer, prompts, max_tokens=max_tokens, batch_size=None)
    out = {
        "refused": sum(a.refused for a in answers),
        "refusal": sum(a.refused for a in answers) / len(answers),
        "first_token_kl": kl_divergence(base, first_token_logprobs(model, tokenizer, [p for p, _ in pairs])),
    }
    if full:
        scores = answer_scores(Pair(model, model), tokenizer, pairs)
        out |= {"kl": scores.kl, "perplexity": scores.perplexity_after}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--study", default="/tmp/vauban_optimize_demo.db", help="SQLite study (resumes)")
    parser.add_argument("--direction", help="a saved direction (default: measure it, ~1 min)")
    parser.add_argument("--validation-n", type=int, default=40, help="search prompts: eval 20..20+N-1")
    parser.add_argument("--harmless-n", type=int, default=48, help="search KL: first N harmless prompts")
    parser.add_argument("--search-tokens", type=int, default=16, help="answer tokens judged per prompt")
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64, help="answer tokens judged when held out")
    parser.add_argument("--full", action="store_true", help="also perplexity and all-position KL")
    parser.add_argument("--json", default=str(RESULTS / "optimize_demo.json"))
    args = parser.parse_args()
    if not 1 <= args.validation_n <= 40:
        parser.error("--validation-n must be within 1..40 (eval prompts 20-59; 60-99 are held out)")

    t0 = time.perf_counter()
    model, tokenizer = load()
    if args.direction:
        direction = DirectionResult.load(args.direction)
    else:
        direction = measure(model, tokenizer)
        direction.save("/tmp/vauban_demo_direction.safetensors")
    print(direction.summary(), flush=True)
    records = bundled_records("eval_harmful")
    validation = [r["prompt"] for r in records[20 : 20 + args.validation_n]]
    harmless = load_prompts("harmless")[: args.harmless_n]
    result = optimize(model, tokenizer, direction, n_trials=args.trials, seed=args.seed, study=args.study,
                      prompts=validation, harmless=harmless, max_tokens=args.search_tokens,
                      show_progress=True)
    print(result.table())
    print(result.summary(), flush=True)
    t_search = time.perf_counter() - t0

    prompts, pairs = [r["prompt"] for r in records[60:100]], load_pairs("reference")
    base = first_token_logprobs(model, tokenizer, [p for p, _ in pairs])
    original = completions(model, tokenizer, prompts, max_tokens=args.max_tokens, batch_size=None)
    rows = []
    for trial in [result.plain, *candidates(result, args.candidates)]:
        start = time.perf_counter()
        with trial.params.apply(model, direction):
            scores = held_out(model, tokenizer, prompts, pairs, base, args.max_tokens, args.full)
        rows.append({"trial": trial.number, "plain": trial.plain,
                     "search": {"refusal": trial.refusal, "first_token_kl": trial.kl},
                     "held_out": scores, "cut": trial.params.record(),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(f"held out, trial {trial.number}: {scores}", flush=True)
    plain = rows[0]["held_out"]
    for row in rows[1:]:
        h = row["held_out"]
        row["dominates_plain_held_out"] = (h["refusal"] <= plain["refusal"]
                                           and h["first_token_kl"] < plain["first_token_kl"])

    n_orig = sum(a.refused for a in original)
    print(f"\nheld out: {len(prompts)} harmful prompts (eval 60-99, {args.max_tokens} tokens), "
          f"first-token KL on {len(pairs)} reference prompts; the original refuses {n_orig}/{len(prompts)}")
    print("      trial   search refusal / ft-KL   held-out refusal   ft-KL   dominates plain")
    for row in rows:
        s, h = row["search"], row["held_out"]
        label = f"{row['trial']}{' (plain)' if row['plain'] else ''}"
        print(f"{label:>11}   {s['refusal']:6.1%} / {s['first_token_kl']:.4f}      "
              f"{h['refused']:3d} ({h['refusal']:5.1%})   {h['first_token_kl']:.4f}   "
              f"{row.get('dominates_plain_held_out', '-')}")
    print(f"{result.seconds_per_trial:.1f} s per trial over {len(result.trials)} trials")
    report = {
        "model": direction.model_path,
        "direction_layer": direction.layer_index,
        "trials": len(result.trials),
        "seed": args.seed,
        "seconds_per_trial": round(result.seconds_per_trial, 1),
        "search": {"validation_prompts": result.n_prompts, "harmless_prompts": result.n_harmless,
                   "answer_tokens": args.search_tokens, "seconds": round(t_search, 1)},
        "held_out": {"harmful_prompts": len(prompts), "reference_prompts": len(pairs),
                     "max_tokens": args.max_tokens, "original_refusal": n_orig / len(prompts)},
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
