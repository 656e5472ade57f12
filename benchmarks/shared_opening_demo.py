"""The shared chat opening prefilled once (runtime.batching.shared_opening) against the code before
it, on the demo model, CPU: residual capture (measure's step) and greedy generation (evaluate's).

Run once per code version, in its own process (``PYTHONPATH`` selects the version), then compare::

    PYTHONPATH=OLD/src python benchmarks/shared_opening_demo.py --label before -o WORK/before.json
    PYTHONPATH=src python benchmarks/shared_opening_demo.py --label after -o WORK/after.json \
        --compare WORK/before.json

Process CPU seconds are recorded beside wall seconds: on a shared machine the CPU time of the job
is the steadier number. ``--compare`` adds how many answers differ and the residuals' largest gap.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Any) -> tuple[Any, dict[str, float]]:
    wall, used = time.perf_counter(), cpu()
    out = fn()
    return out, {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(cpu() - used, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, help="results file of the other version")
    parser.add_argument("--capture", type=int, default=128, help="bundled harmful prompts captured")
    parser.add_argument("--tokens", type=int, default=32, help="answer tokens generated")
    args = parser.parse_args()

    from vauban import quick
    from vauban.evaluation.evaluating import default_eval_prompts, default_safe_prompts
    from vauban.runtime.activations import last_token_residuals
    from vauban.runtime.generating import generate_tokens
    from vauban.text.prompts import load_prompts

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model, tokenizer = quick.load()
    harmful = load_prompts("harmful")[: args.capture]
    prompts = default_eval_prompts() + default_safe_prompts()  # evaluate's 36 generated prompts
    result: dict[str, Any] = {"label": args.label, "load_before": os.getloadavg()[0]}
    residuals, result["capture"] = timed(
        lambda: last_token_residuals(model, tokenizer, harmful, prompt_set="harmful")
    )
    tokens, result["generate"] = timed(
        lambda: generate_tokens(model, tokenizer, prompts, max_tokens=args.tokens)
    )
    result.update(
        load_after=os.getloadavg()[0],
        prompts={"capture": len(harmful), "generate": len(prompts), "tokens": args.tokens},
        torch_threads=torch.get_num_threads(),
        tokens_out=tokens,
    )
    torch.save(residuals, args.out.with_suffix(".pt"))
    if args.compare:
        other = json.loads(args.compare.read_text())
        theirs = torch.load(args.compare.with_suffix(".pt"))
        result["compare"] = {
            "answers_differing": sum(a != b for a, b in zip(tokens, other["tokens_out"], strict=True)),
            "residuals_max_abs_gap": float((residuals - theirs).abs().max()),
            "residuals_max_abs": float(theirs.abs().max()),
        }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "tokens_out"}, indent=1))


if __name__ == "__main__":
    main()
