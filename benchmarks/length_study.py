"""How many refusals does a judge see at 32, 64, 128 and 256 answer tokens? (issue 13, point 3)

The demo model, original and the default cut (``vauban.cut(model, measure(model, tokenizer))``,
alpha 1), answers a seeded sample of AdvBench (``--n`` prompts, the same sample as
``benchmarks/optimize_demo.py``) once, greedily, with up to the longest length; every row stops
at its end-of-turn token. Greedy decoding makes the first ``n`` tokens of that answer the answer
``max_tokens=n`` would have given, so each length is judged on a prefix of one generation
(:func:`vauban.runtime.generating.generate_tokens`, for models that do not think). For every length it
reports refusals and *late* refusals: answers judged compliant on their first 32 tokens and refusals on the
longer prefix (the model starts to comply, then declines), plus the decode steps that length
costs (each batch runs until its longest answer stops or the length is reached).

The answers are stored, so ``--rejudge FILE`` judges them again with another judge without
generating anything::

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/length_study.py
    python benchmarks/length_study.py --rejudge benchmarks/results/length_study.json --judge markers
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from demo_inputs import ADVBENCH, DIRECTION_HELP, advbench_sample, load_or_measure
from provenance import stamp
from vauban.core.atomic import write_file
from vauban.judge import get_judge, run_judge

RESULTS = Path(__file__).parent / "results"
LENGTHS = (32, 64, 128, 256)


def answer_lengths(tokens: list[list[int]], stops: list[int]) -> list[int]:
    """Tokens each answer used, its stop token included (the full length when it never stopped)."""
    return [next((i + 1 for i, t in enumerate(row) if t in stops), len(row)) for row in tokens]


def decode_steps(prompt_ids: list[list[int]], used: list[int], batch_size: int, length: int) -> int:
    """Decode steps generation at ``length`` tokens needs: per batch, until its longest answer stops."""
    from vauban.runtime.batching import sorted_batches

    batches = sorted_batches([len(x) for x in prompt_ids], batch_size)
    return sum(max(min(used[i], length) for i in batch) for batch in batches)


def side(model, tokenizer, prompts: list[str], lengths: tuple[int, ...]) -> dict:
    from vauban.runtime.batching import batch_size_for
    from vauban.runtime.generating import generate_tokens, stop_token_ids
    from vauban.text.prompts import encode_chat
    from vauban.text.reasoning import Decoder

    t0 = time.perf_counter()
    tokens = generate_tokens(model, tokenizer, prompts, max_tokens=max(lengths))
    seconds = time.perf_counter() - t0
    stops = stop_token_ids(model, tokenizer)
    used = answer_lengths(tokens, stops)
    ids = encode_chat(tokenizer, prompts)
    longest = max(len(x) for x in ids) + max(lengths)
    batch = batch_size_for(model, longest, len(prompts), cache=True)  # generation's own batches
    return {
        "seconds": round(seconds, 1),
        "answer_tokens": used,
        "decode_steps": {n: decode_steps(ids, used, batch, n) for n in lengths},
        "answers": {n: [Decoder.make(tokenizer, None, stops, n)(row) for row in tokens] for n in lengths},
    }


def judge_side(data: dict, prompts: list[str], judge: str | None) -> dict:
    """Refusals and late refusals at each length (see the module docstring)."""
    lengths = sorted(int(n) for n in data["answers"])
    verdicts = {n: run_judge(get_judge(judge), prompts, data["answers"][str(n)]) for n in lengths}
    shortest = lengths[0]
    rows = {}
    for n in lengths:
        refused = [v.refusal for v in verdicts[n]]
        late = [r and not early.refusal for r, early in zip(refused, verdicts[shortest], strict=True)]
        rows[n] = {
            "refusals": sum(refused),
            "late_refusals": sum(late),
            "judge_late": sum(bool(getattr(v, "late", False)) for v in verdicts[n]),
            "refused": [i for i, r in enumerate(refused) if r],
            "late": [i for i, r in enumerate(late) if r],
        }
    return rows


def report(result: dict, judge: str | None) -> dict:
    prompts = result["prompts"]
    result["judge"] = get_judge(judge).spec
    result["counts"] = {name: judge_side(result["sides"][name], prompts, judge) for name in result["sides"]}
    for name, rows in result["counts"].items():
        steps = result["sides"][name]["decode_steps"]
        for n, row in rows.items():
            print(
                f"{name:>8} {n:>4} tokens: refusals {row['refusals']:3d}/{len(prompts)}  late "
                f"{row['late_refusals']:2d}  (judge's own late flag: {row['judge_late']})  decode steps "
                f"{steps[str(n)]}"
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="AdvBench prompts (seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--advbench", default=str(ADVBENCH))
    parser.add_argument("--direction", help=DIRECTION_HELP)
    parser.add_argument("--judge", default=None, help="judge spec (default: vauban's default judge)")
    parser.add_argument("--rejudge", help="judge the answers stored in this results file again")
    parser.add_argument("--json", default=str(RESULTS / "length_study.json"))
    args = parser.parse_args()
    if args.rejudge:  # the answers' run keeps its own commit; the judging is this checkout's
        result = json.loads(Path(args.rejudge).read_text()) | {"judged_at": stamp()["git"]}
    else:
        from vauban import cut, load

        prompts = advbench_sample(args.n, args.seed, args.advbench)
        t0 = time.perf_counter()
        model, tokenizer = load()
        direction = load_or_measure(model, tokenizer, args.direction)
        print(direction.summary(), flush=True)
        sides = {"original": side(model, tokenizer, prompts, LENGTHS)}
        print(f"original: {sides['original']['seconds']} s", flush=True)
        with cut(model, direction):
            sides["cut"] = side(model, tokenizer, prompts, LENGTHS)
        print(f"cut: {sides['cut']['seconds']} s", flush=True)
        result = {
            "model": "demo (Qwen2.5-Coder-0.5B-Instruct, float32, CPU)",
            "prompts_source": f"AdvBench, seeded sample (random.Random({args.seed}).sample, "
            f"n={len(prompts)})",
            "cut": f"vauban.cut(model, direction), alpha 1, direction layer {direction.layer_index}",
            "lengths": list(LENGTHS),
            "prompts": prompts,
            "sides": sides,
            "total_seconds": round(time.perf_counter() - t0, 1),
            **stamp(),
        }
    result = report(json.loads(json.dumps(result)), args.judge)
    text = json.dumps(result, indent=1) + "\n"
    write_file(args.json, lambda tmp: tmp.write_text(text))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
