"""Greedy answers on the CPU: ``model.generate`` against the loop that drops finished rows
(:mod:`vauban.runtime.shrinking`), on the demo model (Qwen2.5-Coder-0.5B-Instruct, float32).

The prompts are ``evaluate``'s answer set: the first 20 bundled evaluation prompts and the first
16 bundled over-refusal prompts, 128 answer tokens, one batch of 36 rows (as ``evaluate`` batches
them on the CPU). Both loops run on the same inputs, one after the other (``--repeat`` times,
alternating); the tokens must be equal. Writes ``results/shrinking_demo_cpu.json``.

    OMP_NUM_THREADS=2 python benchmarks/shrinking_demo.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from provenance import stamp
from vauban import quick
from vauban.core.atomic import write_file
from vauban.evaluation.evaluating import DEFAULT_MAX_TOKENS, default_eval_prompts, default_safe_prompts
from vauban.runtime import shrinking
from vauban.runtime.batching import left_pad
from vauban.runtime.generating import greedy_config, stop_token_ids
from vauban.text.prompts import encode_chat, pad_id

RESULTS = Path(__file__).parent / "results"


def with_generate(model, tokenizer, inputs, mask, tokens):
    """What ``generate_tokens`` did on the CPU before: transformers' ``generate``, padded out."""
    out = model.generate(
        input_ids=inputs, attention_mask=mask, generation_config=greedy_config(model, tokenizer, tokens)
    )
    new = out[:, inputs.shape[1] :]
    return torch.nn.functional.pad(new, (0, tokens - new.shape[1]), value=pad_id(tokenizer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "shrinking_demo_cpu.json")
    parser.add_argument("--conditions", default="2 CPU cores, no other job running", help="recorded as is")
    args = parser.parse_args()
    model, tokenizer = quick.load()
    prompts = [*default_eval_prompts(), *default_safe_prompts()]
    pad, stops = pad_id(tokenizer), stop_token_ids(model, tokenizer)
    inputs, mask, _ = left_pad(encode_chat(tokenizer, prompts), pad, torch.device("cpu"))
    loops = {
        "generate": lambda: with_generate(model, tokenizer, inputs, mask, args.tokens),
        "shrinking": lambda: shrinking.greedy(model, inputs, mask, args.tokens, stops, pad),
    }
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    tokens: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for _ in range(args.repeat):
            for name, run in loops.items():
                t0 = time.perf_counter()
                tokens[name] = run()
                seconds[name].append(round(time.perf_counter() - t0, 1))
                print(name, seconds[name][-1], "s", flush=True)
    ended = torch.isin(tokens["shrinking"], torch.tensor(stops))
    lengths = torch.where(ended.any(-1), ended.float().argmax(-1) + 1, args.tokens).tolist()
    out = {
        **stamp(),
        "what": "greedy answers on the CPU: model.generate vs the loop that drops finished rows",
        "model": "demo (Qwen2.5-Coder-0.5B-Instruct, float32)",
        "prompts": "bundled eval_harmful[:20] + over_refusal[:16], chat-formatted, one batch",
        "rows": len(prompts),
        "answer_tokens": args.tokens,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "speedup": round(min(seconds["generate"]) / min(seconds["shrinking"]), 2),
        "tokens_equal": bool(torch.equal(tokens["generate"], tokens["shrinking"])),
        "answer_lengths": lengths,
        "row_steps_computed": {"generate": len(prompts) * max(lengths), "shrinking": sum(lengths)},
        "conditions": args.conditions,
    }
    print(json.dumps(out, indent=1))
    write_file(args.out, lambda tmp: tmp.write_text(json.dumps(out, indent=1) + "\n"))


if __name__ == "__main__":
    main()
