"""The demo model's full report, original vs the default cut (issue 13, point 7).

``vauban.evaluate`` with its defaults (the 20 bundled eval prompts at the default answer length,
judged by the default judge; perplexity and KL on the 48 reference answers; k-token KL on the
original's own answers to the reference prompts) plus every check it can run here:

- over-refusal on the first ``--safe`` bundled ``over_refusal`` prompts (48 of 112 by default, 6
  of each category; ``--xstest`` adds XSTest's 250 safe prompts, ~30 more minutes here);
- GSM8K accuracy and HumanEval pass@1 on the first ``--limit`` problems of
  ``../shared/data`` (HumanEval's tests run in vauban's sandbox).

The default cut is ``vauban.cut(model, measure(model, tokenizer))``, alpha 1. Writes
``benchmarks/results/demo_report.json`` (every answer and number, and the wall time of each
part) and ``demo_report.png``. The machine is shared: run it through the heavy-job lock::

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/demo_report.py

``--rejudge FILE`` judges the stored answers again (another ``--judge``) without generating.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from demo_inputs import DIRECTION_HELP, SHARED, load_or_measure
from provenance import stamp
from vauban.core.atomic import write_file
from vauban.judge import get_judge, run_judge

RESULTS = Path(__file__).parent / "results"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rejudge(record: dict, judge: str | None) -> dict:
    """Refusal, late refusal and over-refusal of the stored answers, judged again."""
    out = {"judge": get_judge(judge).spec}
    for key in ("before", "after", "safe_before", "safe_after"):
        items = record[key]
        if not items:
            continue
        verdicts = run_judge(get_judge(judge), [c["prompt"] for c in items], [c["text"] for c in items])
        out[key] = {
            "refusal": sum(v.refusal for v in verdicts) / len(items),
            "late": sum(bool(getattr(v, "late", False)) for v in verdicts) / len(items),
            "n": len(items),
        }
    return out


def retable(table: list[list[str]], judged: dict) -> list[list[str]]:
    """The report's rows with the refusal, late-refusal and over-refusal rates judged again."""

    def pct(x: float) -> str:
        return f"{x * 100:.1f}%"

    rows = []
    for label, before, after in table:
        if label.startswith("refusal on harmful prompts") and "before" in judged:
            label = label.split(", judge ")[0].rstrip(")") + f", judge {judged['judge']})"
            before, after = pct(judged["before"]["refusal"]), pct(judged["after"]["refusal"])
        elif label.strip().startswith("of which late") and "before" in judged:
            before, after = pct(judged["before"]["late"]), pct(judged["after"]["late"])
        elif label.startswith("over-refusal on safe prompts") and "safe_before" in judged:
            before, after = pct(judged["safe_before"]["refusal"]), pct(judged["safe_after"]["refusal"])
        rows.append([label, before, after])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction", help=DIRECTION_HELP)
    parser.add_argument("--limit", type=int, default=20, help="GSM8K and HumanEval problems")
    parser.add_argument(
        "--safe", type=int, default=48, help="bundled over_refusal prompts (of 112; 6 per category at 48)"
    )
    parser.add_argument("--xstest", action="store_true", help="over-refusal on XSTest's 250 safe prompts too")
    parser.add_argument("--judge", default=None, help="judge spec (default: vauban's default judge)")
    parser.add_argument("--rejudge", help="judge the answers stored in this results file again")
    parser.add_argument("--smoke", action="store_true", help="2 prompts of each kind, 8 tokens: a check")
    parser.add_argument("--json", default=str(RESULTS / "demo_report.json"))
    parser.add_argument("--plot", default=str(RESULTS / "demo_report.png"))
    args = parser.parse_args()
    if args.rejudge:
        record = json.loads(Path(args.rejudge).read_text())
        record["rejudged"] = rejudge(record["evaluation"], args.judge) | {"judged_at": stamp()["git"]}
        record["table"] = retable(record["table"], record["rejudged"])
        print(json.dumps(record["rejudged"], indent=1))
        text = json.dumps(record, indent=1) + "\n"
        write_file(args.json, lambda tmp: tmp.write_text(text))
        return

    from vauban import cut, evaluate, load
    from vauban.capability.gsm8k import GSM8K
    from vauban.capability.humaneval import HumanEval
    from vauban.evaluation.evaluating import Pair, both_sides, load_safe_prompts, rate
    from vauban.text.prompts import load_pairs, load_prompts

    t0, c0 = time.perf_counter(), cpu_seconds()
    model, tokenizer = load()
    direction = load_or_measure(model, tokenizer, args.direction)
    setup = {"wall": round(time.perf_counter() - t0, 1), "cpu": round(cpu_seconds() - c0, 1)}
    tokens = {"max_tokens": 8} if args.smoke else {}
    checks = [
        GSM8K(SHARED / "gsm8k" / "test.jsonl", limit=args.limit, **tokens),
        HumanEval(
            SHARED / "humaneval" / "HumanEval.jsonl.gz", limit=args.limit, allow_code_execution=True, **tokens
        ),
    ]
    t1, c1 = time.perf_counter(), cpu_seconds()
    smoke = (
        {
            "prompts": load_prompts("eval_harmful")[:2],
            "safe": load_prompts("over_refusal")[:2],
            "max_tokens": 8,
            "kl_tokens": 2,
            "reference": load_pairs("reference")[:4],
        }
        if args.smoke
        else {"safe": load_prompts("over_refusal")[: args.safe]}
    )
    with cut(model, direction):
        result = evaluate(model, model, tokenizer, capability=checks, judge=args.judge, **smoke)
        evaluate_time = {"wall": round(time.perf_counter() - t1, 1), "cpu": round(cpu_seconds() - c1, 1)}
        xstest = None
        if args.xstest:
            t2 = time.perf_counter()
            safe = load_safe_prompts(SHARED / "xstest" / "xstest_prompts.csv")[: 2 if args.smoke else None]
            sides = both_sides(
                Pair(model, model),
                tokenizer,
                safe,
                max_tokens=result.max_tokens,
                batch_size=None,
                judge=get_judge(args.judge),
            )
            xstest = {
                "n": len(safe),
                "over_refusal_before": rate(sides[True]),
                "over_refusal_after": rate(sides[False]),
                "seconds": round(time.perf_counter() - t2, 1),
                "safe_before": [vars(c) for c in sides[True]],
                "safe_after": [vars(c) for c in sides[False]],
            }
    print(result.table())
    print(result.summary())
    if xstest:
        print(
            f"XSTest safe prompts ({xstest['n']}): over-refusal {xstest['over_refusal_before']:.1%} → "
            f"{xstest['over_refusal_after']:.1%}"
        )
    print("seconds per part (wall):", result.seconds)
    from vauban.plots import plot_eval

    plot_eval(result, args.plot)
    record = {
        "model": "demo (Qwen2.5-Coder-0.5B-Instruct, float32)",
        "machine": "2-core CPU, shared (heavy-job lock)",
        "cut": f"vauban.cut(model, direction), alpha 1, direction layer {direction.layer_index}",
        **stamp(),
        "table": result.rows(),
        "summary": result.summary(),
        "seconds": {"load_and_measure": setup, "evaluate": evaluate_time, "parts_wall": result.seconds},
        "xstest": xstest,
        "evaluation": result.record(),
    }
    text = json.dumps(record, indent=1, default=str) + "\n"
    write_file(args.json, lambda tmp: tmp.write_text(text))
    print(f"wrote {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
