"""Does the optimizer's pick beat the plain alpha = 1 cut on prompts it never saw? (issue 5)

Runs ``vauban.search.optimizing`` with its defaults (seeded multi-objective TPE; search refusal on bundled
eval prompts 20-59, first-token KL on 48 bundled harmless prompts; the pick checked on eval
prompts 60-99), then evaluates side by side on held-out prompts no part of vauban has seen:

- the original model, the plain cut (trial 0 of every study) and the pick (``result.best``);
- the search's own pick without the check (the lowest-KL trial no weaker than the plain cut on
  the search prompts), when it differs, to show what the check is worth;
- the refined trial (the plain cut with per-layer weights from ``vauban.search.refining``), when it is
  none of the above.

Held out: refusal on a seeded sample of AdvBench (``--heldout-n`` prompts, ``--max-tokens``
greedy tokens, judged as ``evaluate`` judges) and the first-token KL(original ‖ cut) on the 48
bundled reference prompts; ``--full`` adds perplexity and the KL at every position of the
reference answers. Prints a table and writes ``benchmarks/results/optimize_demo.json``. The
study is an SQLite file: rerun to resume it::

    nice -n 5 python benchmarks/optimize_demo.py --trials 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from demo_inputs import ADVBENCH, DIRECTION_HELP, advbench_sample, load_or_measure
from vauban import load
from vauban.evaluation.evaluating import Pair, answer_scores
from vauban.judge import get_judge
from vauban.judge.answers import completions
from vauban.runtime.scoring import first_token_logprobs, kl_divergence
from vauban.search.optimizing import optimize
from vauban.search.trials import Trial, candidates
from vauban.text.prompts import load_pairs

RESULTS = Path(__file__).parent / "results"


def held_out(model, tokenizer, prompts, pairs, base, max_tokens: int, full: bool, judge=None) -> dict:
    answers = completions(model, tokenizer, prompts, max_tokens=max_tokens, batch_size=None, judge=judge)
    refusals = sum(a.refused for a in answers)
    out = {
        "refusals": refusals,
        "refusal": refusals / len(answers),
        "first_token_kl": kl_divergence(base, first_token_logprobs(model, tokenizer, [p for p, _ in pairs])),
        "refused": [[a.prompt, a.text] for a in answers if a.refused],
    }
    if full:
        scores = answer_scores(Pair(model, model), tokenizer, pairs)
        out |= {"kl": scores.kl, "perplexity": scores.perplexity_after}
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--study", default="/tmp/vauban_optimize_demo.db", help="SQLite study (resumes)")
    parser.add_argument("--direction", help=DIRECTION_HELP)
    parser.add_argument("--advbench", default=str(ADVBENCH), help="AdvBench harmful_behaviors.csv")
    parser.add_argument("--heldout-n", type=int, default=100, help="AdvBench prompts (seeded sample)")
    parser.add_argument("--max-tokens", type=int, default=64, help="answer tokens judged when held out")
    parser.add_argument("--full", action="store_true", help="also perplexity and all-position KL")
    parser.add_argument("--json", default=str(RESULTS / "optimize_demo.json"))
    parser.add_argument(
        "--judge", default=None, help="refusal judge spec, for the search and held out (default: markers)"
    )
    args = parser.parse_args()
    if not Path(args.advbench).is_file():
        parser.error(f"no AdvBench CSV at {args.advbench}; pass --advbench PATH")
    return args


def points_to_check(result) -> list[tuple[str, Trial]]:
    """The plain cut, the pick, the search's unchecked pick and the refined trial, each once."""
    unchecked = next(iter(candidates(result)), result.plain)
    points: list[tuple[str, Trial]] = [("plain", result.plain)]
    if result.best.number != result.plain.number:
        points.append(("pick", result.best))
    if unchecked.number not in (result.plain.number, result.best.number):
        points.append(("unchecked", unchecked))
    refined = next((t for t in result.trials if t.params.refined), None)
    if refined is not None and refined.number not in [t.number for _, t in points]:
        points.append(("refined", refined))
    return points


def point_rows(model, tokenizer, direction, points, prompts, pairs, base, args, judge) -> list[dict]:
    """Each point's cut applied in turn and judged on the held-out prompts, against the plain cut."""
    rows = []
    for role, trial in points:
        start = time.perf_counter()
        with trial.params.apply(model, direction):
            scores = held_out(model, tokenizer, prompts, pairs, base, args.max_tokens, args.full, judge)
        rows.append(
            {
                "role": role,
                "trial": trial.number,
                "search": {
                    "refusal": trial.refusal,
                    "first_token_kl": trial.kl,
                    "refusal_likelihood": trial.likelihood,
                    "selection_refusal": trial.selection_refusal,
                },
                "held_out": scores,
                "cut": trial.params.record(),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(
            f"held out, {role} (trial {trial.number}): refused {scores['refusals']}/{len(prompts)}, "
            f"first-token KL {scores['first_token_kl']:.4f}",
            flush=True,
        )
    plain = rows[0]["held_out"]
    for row in rows[1:]:
        h = row["held_out"]
        row["dominates_plain_held_out"] = (
            h["refusals"] <= plain["refusals"] and h["first_token_kl"] < plain["first_token_kl"]
        )
    return rows


def print_table(rows: list[dict], n_prompts: int, n_pairs: int, max_tokens: int, n_orig: int) -> None:
    print(
        f"\nheld out: {n_prompts} AdvBench prompts ({max_tokens} tokens), first-token KL on "
        f"{n_pairs} reference prompts; the original refuses {n_orig}/{n_prompts}"
    )
    print("        point   search refusal / ft-KL / selection   held-out refused   ft-KL   dominates plain")
    for row in rows:
        s, h = row["search"], row["held_out"]
        sel = "-" if s["selection_refusal"] is None else f"{s['selection_refusal']:.1%}"
        label = f"{row['role']} #{row['trial']}"
        print(
            f"{label:>13}   {s['refusal']:6.1%} / {s['first_token_kl']:.4f} / {sel:>6}          "
            f"{h['refusals']:3d} ({h['refusal']:5.1%})   {h['first_token_kl']:.4f}   "
            f"{row.get('dominates_plain_held_out', '-')}"
        )


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    judge = get_judge(args.judge)
    model, tokenizer = load()
    direction = load_or_measure(model, tokenizer, args.direction)
    print(direction.summary(), flush=True)
    result = optimize(
        model,
        tokenizer,
        direction,
        n_trials=args.trials,
        seed=args.seed,
        study=args.study,
        show_progress=True,
        judge=judge,
    )
    print(result.table())
    print(result.summary(), flush=True)
    t_search = time.perf_counter() - t0

    prompts = advbench_sample(args.heldout_n, args.seed, args.advbench)
    pairs = load_pairs("reference")
    base = first_token_logprobs(model, tokenizer, [p for p, _ in pairs])
    original = completions(
        model, tokenizer, prompts, max_tokens=args.max_tokens, batch_size=None, judge=judge
    )
    n_orig = sum(a.refused for a in original)
    print(f"held out: the original refuses {n_orig}/{len(prompts)}", flush=True)
    rows = point_rows(model, tokenizer, direction, points_to_check(result), prompts, pairs, base, args, judge)
    print_table(rows, len(prompts), len(pairs), args.max_tokens, n_orig)
    print(f"{result.seconds_per_trial:.1f} s per trial over {len(result.trials)} trials")
    report = {
        "model": direction.model_path,
        "direction_layer": direction.layer_index,
        "trials": len(result.trials),
        "seed": args.seed,
        "seconds_per_trial": round(result.seconds_per_trial, 1),
        "search": {
            "validation_prompts": result.n_prompts,
            "harmless_prompts": result.n_harmless,
            "selection_prompts": result.n_selection,
            "settings": result.settings,
            "seconds": round(t_search, 1),
        },
        "held_out": {
            "benchmark": "AdvBench (seeded sample)",
            "harmful_prompts": len(prompts),
            "reference_prompts": len(pairs),
            "max_tokens": args.max_tokens,
            "judge": judge.spec,
            "original_refused": n_orig,
        },
        "points": rows,
        "optimize": result.record(),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
