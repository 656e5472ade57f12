"""CPU speed of the quick pipeline on the demo model, as ratios measured side by side.

Absolute times on a shared 2-core machine move with whatever else runs, so every comparison
here runs both sides in the same process, one after the other, and the system load is
recorded before and after. Sections (``--only``, default all):

- ``pipeline``: wall time of each stage of the quick pipeline: load from the warm cache,
  measure (128 + 128 prompts), cut, export, evaluate (20 prompts, 64 tokens, reference KL);
- ``measure``: vauban's batched capture vs the same capture one prompt at a time (same
  prompts; the activations are checked equal) and vs the plain transformers loop
  (``output_hidden_states`` with vocabulary logits);
- ``generate``: batched greedy generation vs one prompt at a time (answers compared);
- ``scores``: the reference perplexity/KL pass with one model and a reversible cut, in
  memory-sized batches vs fixed batches of 16 (numbers checked equal).

    nice -n 5 python benchmarks/cpu.py                 # writes benchmarks/results/cpu_demo.json
    python benchmarks/cpu.py --only measure --loop-prompts 32
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import vauban
from vauban.edit.editing import compute_dtype as _compute_dtype
from vauban.evaluation.evaluating import Pair, answer_scores, default_eval_prompts
from vauban.exports.exporting import export
from vauban.runtime.activations import last_token_residuals
from vauban.runtime.generating import generate
from vauban.text.prompts import encode_chat, load_pairs, load_prompts

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_demo.json"


CPU_SECONDS: dict[str, float] = {}  # process CPU time of the last timed call, by label


def timed(fn: Callable[[], Any], label: str = "") -> tuple[float, Any]:
    """Wall time of ``fn()``; its process CPU time goes to :data:`CPU_SECONDS` [label]. On a
    shared machine the CPU time (divided by the threads) is the steadier figure: it does not
    count the time other processes held the cores."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    CPU_SECONDS[label] = time.process_time() - cpu
    return time.perf_counter() - start, out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def pipeline(model: Any, tokenizer: Any, load_s: float) -> dict[str, Any]:
    """Each stage of the quick pipeline, as `vauban run` does it (probing and steering aside)."""
    times: dict[str, float] = {"load": load_s}
    times["measure"], direction = timed(lambda: vauban.measure(model, tokenizer), "measure")
    times["cut"], applied = timed(lambda: vauban.cut(model, direction), "cut")
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "out"
        times["export"], _ = timed(lambda: export(model, tokenizer, target, direction=direction), "export")
    times["evaluate"], result = timed(lambda: vauban.evaluate(model, model, tokenizer), "evaluate")
    applied.undo()
    total = sum(times.values())
    threads = torch.get_num_threads()
    cpu = {stage: CPU_SECONDS.get(stage, 0.0) / threads for stage in times}
    print(
        f"pipeline: {total:.0f} s in all (target <= 180 s); CPU time / {threads} threads: "
        f"{sum(cpu.values()):.0f} s"
    )
    for stage, seconds in times.items():
        share = 100 * seconds / total
        print(f"  {stage:9s} {seconds:7.1f} s  {share:4.0f} %   CPU/threads {cpu[stage]:6.1f} s")
    print(f"  {result.summary()}")
    return {
        "seconds": {k: round(v, 2) for k, v in times.items()},
        "total_s": round(total, 1),
        "cpu_seconds_per_thread": {k: round(v, 2) for k, v in cpu.items()},
        "layer": direction.layer_index,
        "evaluation": {k: v for k, v in result.record().items() if k not in ("before", "after")},
    }


@torch.inference_mode()
def hf_loop(model: Any, ids: list[list[int]]) -> torch.Tensor:
    """What one writes with plain transformers: one prompt per call, every hidden state, logits."""
    rows = []
    for seq in ids:
        out = model(torch.tensor([seq]), output_hidden_states=True)
        rows.append(torch.stack([h[0, -1] for h in out.hidden_states[1:]]).float())
    return torch.stack(rows)


def measure_section(model: Any, tokenizer: Any, n: int) -> dict[str, Any]:
    prompts = (load_prompts("harmful") + load_prompts("harmless"))[:: max(1, 256 // n)][:n]
    ids = encode_chat(tokenizer, prompts)
    t_batched, batched = timed(lambda: last_token_residuals(model, tokenizer, prompts))
    t_loop, loop = timed(lambda: last_token_residuals(model, tokenizer, prompts, batch_size=1))
    t_hf, hf = timed(lambda: hf_loop(model, ids))
    diff = float((batched - loop).abs().max() / loop.abs().max())
    # the last hidden state transformers returns has the final norm applied: compare the others
    diff_hf = float((batched[:, :-1] - hf[:, :-1]).abs().max() / hf[:, :-1].abs().max())
    print(
        f"measure, {n} prompts: batched {t_batched:.1f} s, one at a time {t_loop:.1f} s "
        f"({t_loop / t_batched:.1f}x), plain transformers loop {t_hf:.1f} s ({t_hf / t_batched:.1f}x); "
        f"max relative difference {diff:.1e} / {diff_hf:.1e}"
    )
    return {
        "prompts": n,
        "batched_s": round(t_batched, 2),
        "one_at_a_time_s": round(t_loop, 2),
        "hf_loop_s": round(t_hf, 2),
        "speedup_vs_loop": round(t_loop / t_batched, 2),
        "speedup_vs_hf_loop": round(t_hf / t_batched, 2),
        "max_rel_diff_vs_loop": diff,
        "max_rel_diff_vs_hf_loop": diff_hf,
    }


def generate_section(model: Any, tokenizer: Any, n: int, tokens: int) -> dict[str, Any]:
    prompts = default_eval_prompts(n)
    t_batched, batched = timed(lambda: generate(model, tokenizer, prompts, max_tokens=tokens, batch_size=n))
    t_seq, seq = timed(lambda: generate(model, tokenizer, prompts, max_tokens=tokens, batch_size=1))
    same = sum(a == b for a, b in zip(batched, seq, strict=True))
    print(
        f"generate, {n} prompts x {tokens} tokens: batched {t_batched:.1f} s, one at a time {t_seq:.1f} s "
        f"({t_seq / t_batched:.1f}x); identical answers {same}/{n}"
    )
    return {
        "prompts": n,
        "max_tokens": tokens,
        "batched_s": round(t_batched, 2),
        "one_at_a_time_s": round(t_seq, 2),
        "speedup": round(t_seq / t_batched, 2),
        "identical_answers": same,
    }


def scores_section(model: Any, tokenizer: Any) -> dict[str, Any]:
    pairs = load_pairs("reference")
    direction = vauban.measure(model, tokenizer, load_prompts("harmful")[:16], load_prompts("harmless")[:16])
    with vauban.cut(model, direction):
        pair = Pair(model, model)
        t_auto, auto = timed(lambda: answer_scores(pair, tokenizer, pairs))
        t_fixed, fixed = timed(lambda: answer_scores(pair, tokenizer, pairs, batch_size=16))
    pairs_of_numbers = zip(vars(auto).values(), vars(fixed).values(), strict=True)
    equal = all(abs(a - b) <= 1e-6 * abs(b) for a, b in pairs_of_numbers)
    print(
        f"reference scores, {len(pairs)} answers: memory-sized batches {t_auto:.1f} s, batches of 16 "
        f"{t_fixed:.1f} s ({t_fixed / t_auto:.2f}x); equal to 1e-6: {equal}"
    )
    return {
        "auto_s": round(t_auto, 2),
        "batch16_s": round(t_fixed, 2),
        "speedup": round(t_fixed / t_auto, 2),
        "equal": equal,
        "auto": vars(auto),
        "batch16": vars(fixed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="*",
        default=["pipeline", "measure", "generate", "scores"],
        choices=["pipeline", "measure", "generate", "scores"],
    )
    parser.add_argument("--loop-prompts", type=int, default=64, help="prompts for the one-at-a-time loops")
    parser.add_argument("--gen-prompts", type=int, default=8)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args()
    rows: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_before": load_average(),
    }
    print(
        f"{rows['cpu']}, {rows['cores']} cores, {rows['torch_threads']} torch threads, "
        f"load {rows['load_average_before']}"
    )
    load_s, (model, tokenizer) = timed(vauban.load_model, "load")
    rows["attention"] = model.config._attn_implementation
    rows["cut_compute_dtype"] = str(_compute_dtype(next(model.parameters())))  # the cut's arithmetic
    rows["git"] = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent, capture_output=True, text=True
    ).stdout.strip()
    sections = {
        "pipeline": lambda: pipeline(model, tokenizer, load_s),
        "measure": lambda: measure_section(model, tokenizer, args.loop_prompts),
        "generate": lambda: generate_section(model, tokenizer, args.gen_prompts, args.gen_tokens),
        "scores": lambda: scores_section(model, tokenizer),
    }
    for name in args.only:
        rows[name] = sections[name]()
        rows[f"load_average_after_{name}"] = load_average()
        if args.json:  # after every section, so a long run interrupted keeps what it measured
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(f"load average after: {load_average()}; raw numbers: {args.json}")


if __name__ == "__main__":
    main()
