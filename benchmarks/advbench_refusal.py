"""Refusal rate on AdvBench before and after abliteration (development evaluation).

AdvBench (Zou et al., 2023; MIT) is not shipped with vauban; pass the CSV path. Greedy answers,
``--max-tokens`` new tokens, judged by ``--judge`` (default: vauban's refusal markers; see
``vauban.judge``). Example:

    python benchmarks/advbench_refusal.py ../shared/data/advbench_harmful_behaviors.csv \\
        --export abliterated-demo --judge markers
"""

from __future__ import annotations

import argparse
import json
import time

from vauban import load
from vauban.judge import Judge, get_judge, run_judge
from vauban.runtime.generating import generate
from vauban.text import prompts


def refusal_rate(
    model_path: str | None, goals: list[str], max_tokens: int, batch_size: int, judge: Judge
) -> dict:
    model, tokenizer = load(model_path)
    start = time.perf_counter()
    answers = generate(model, tokenizer, goals, max_tokens=max_tokens, batch_size=batch_size)
    refused = [v.refusal for v in run_judge(judge, goals, answers)]
    return {
        "model": model_path or "demo",
        "judge": judge.spec,
        "max_tokens": max_tokens,
        "prompts": len(goals),
        "refusal_rate": sum(refused) / len(goals),
        "seconds": round(time.perf_counter() - start, 1),
        "examples": [
            {"prompt": g, "answer": a, "refused": r} for g, a, r in zip(goals, answers, refused, strict=True)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="AdvBench harmful_behaviors.csv")
    parser.add_argument("--base", default=None, help="base model (default: the demo model)")
    parser.add_argument("--export", required=True, help="abliterated model directory")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", default=None, help="write full results here")
    parser.add_argument("--judge", default=None, help="refusal judge spec (default: markers)")
    args = parser.parse_args()
    goals = prompts.load_prompts(args.csv)[: args.limit]
    judge = get_judge(args.judge)
    results = [
        refusal_rate(path, goals, args.max_tokens, args.batch_size, judge)
        for path in (args.base, args.export)
    ]
    for r in results:
        print(
            f"{r['model']}: refusal {r['refusal_rate']:.1%} of {r['prompts']} "
            f"(judge {r['judge']}, {r['max_tokens']} tokens, {r['seconds']} s)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
