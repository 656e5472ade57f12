"""Speed of vauban's hot paths, as ratios against the naive way of doing the same thing.

Runs on a random-weight model built from a real config (no weights need to travel): by default
a Llama-3.1-8B-shaped model in bf16 on CUDA, or a small Llama shape on CPU. Prints a table;
``--json`` writes the numbers.

    python benchmarks/speed.py                      # CUDA if available
    python benchmarks/speed.py --shape small        # quick CPU run

What is compared:
- measure: vauban's batched, length-sorted capture (decoder only, hooks, no logits) vs one
  prompt at a time through ``model(..., output_hidden_states=True)`` (full logits each time);
- cut: applying + undoing the reversible cut on every layer (bit-exact restore checked);
- steer: greedy generation with steering hooks on every layer vs without (overhead ratio);
- kl: scoring the reference answers with one model + reversible cut vs two model copies.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import build_tokenizer
from vauban import cut, measure
from vauban.evaluation.evaluating import Pair, answer_scores
from vauban.methods.steering import Steering
from vauban.runtime.batching import left_pad
from vauban.text.prompts import encode_chat, load_pairs, load_prompts

SHAPES = {
    # Llama-3.1-8B: the shape most abliteration users run
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
    "small": dict(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=32000,
        max_position_embeddings=2048,
    ),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Any, device: torch.device, repeat: int = 1) -> tuple[float, Any]:
    """Median wall time of ``repeat`` runs after one warm-up (synchronized)."""
    out = fn()
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="vauban speed benchmarks")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompts", type=int, default=128, help="per set, for measure")
    parser.add_argument("--json", default=None)
    return parser.parse_args()


def measure_rows(
    model: Any, tokenizer: Any, harmful: list[str], harmless: list[str], device: torch.device
) -> tuple[dict[str, Any], Any]:
    """vauban's capture vs one prompt at a time with all hidden states; and the direction."""
    t_ours, direction = timed(lambda: measure(model, tokenizer, harmful, harmless), device)
    ids = encode_chat(tokenizer, harmful + harmless)

    @torch.inference_mode()
    def naive() -> None:
        for seq in ids:
            model(torch.tensor([seq], device=device), output_hidden_states=True)

    t_naive, _ = timed(naive, device)
    return {"measure_s": t_ours, "measure_naive_s": t_naive, "measure_speedup": t_naive / t_ours}, direction


def cut_rows(model: Any, direction: Any, device: torch.device) -> dict[str, Any]:
    """Apply + undo on every layer, and whether the undo is bit-exact."""
    state = {k: v.clone() for k, v in model.state_dict().items() if "layers" in k}

    def apply_undo() -> None:
        c = cut(model, direction)
        sync(device)
        c.undo()

    t_cut, _ = timed(apply_undo, device, repeat=3)
    exact = all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    return {"cut_apply_undo_s": t_cut, "undo_bit_exact": exact}


def steer_rows(
    model: Any, tokenizer: Any, harmful: list[str], direction: Any, device: torch.device
) -> dict[str, Any]:
    """Steering overhead in generation: same prompts, exactly 64 new tokens each (no early stop)."""
    input_ids, mask, _ = left_pad(encode_chat(tokenizer, (harmful * 2)[:32]), 0, device)

    @torch.inference_mode()
    def plain() -> None:
        model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=64,
            min_new_tokens=64,
            pad_token_id=0,
        )

    def steered() -> None:
        with Steering(model, direction, 1.0):
            plain()

    t_plain, _ = timed(plain, device, repeat=3)
    t_steer, _ = timed(steered, device, repeat=3)
    return {"generate_s": t_plain, "generate_steered_s": t_steer, "steer_overhead": t_steer / t_plain}


def kl_rows(model: Any, tokenizer: Any, direction: Any, device: torch.device) -> dict[str, Any]:
    """Scoring the reference answers: one model + reversible cut vs two copies (where two fit)."""
    pairs = load_pairs("reference")
    with cut(model, direction):
        t_one, _ = timed(lambda: answer_scores(Pair(model, model), tokenizer, pairs), device)
    rows: dict[str, Any] = {"kl_one_model_s": t_one}
    if device.type == "cpu" or torch.cuda.mem_get_info()[0] > 2.2 * sum(
        p.numel() * p.element_size() for p in model.parameters()
    ):
        import copy

        twin = copy.deepcopy(model)
        cut(twin, direction)
        t_two, _ = timed(lambda: answer_scores(Pair(model, twin), tokenizer, pairs), device)
        rows["kl_two_models_s"] = t_two
        rows["kl_one_model_cost"] = t_one / t_two
        del twin
    return rows


def report(rows: dict[str, Any]) -> None:
    print(f"{'step':28s} {'seconds':>10s}")
    for key, value in rows.items():
        if isinstance(value, float):
            print(f"{key:28s} {value:10.3f}")
    print(f"measure: {rows['measure_speedup']:.1f}x faster than one-by-one output_hidden_states")
    print(f"steering overhead: {100 * (rows['steer_overhead'] - 1):+.1f}% generation time")
    if "kl_one_model_cost" in rows:
        print(
            f"one-model KL (undo/redo per batch) costs {rows['kl_one_model_cost']:.2f}x two copies, "
            "at half the memory"
        )
    print(f"undo bit-exact: {rows['undo_bit_exact']}")


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    shape = args.shape or ("llama-3.1-8b" if device.type == "cuda" else "small")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **SHAPES[shape])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    tokenizer = build_tokenizer()
    harmful = load_prompts("harmful")[: args.prompts]
    harmless = load_prompts("harmless")[: args.prompts]
    rows: dict[str, Any] = {
        "shape": shape,
        "device": str(device),
        "dtype": str(dtype),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"{shape} {dtype} on {rows['gpu']}: {params:.2f} B params")
    measured, direction = measure_rows(model, tokenizer, harmful, harmless, device)
    rows |= measured
    rows |= cut_rows(model, direction, device)
    rows |= steer_rows(model, tokenizer, harmful, direction, device)
    rows |= kl_rows(model, tokenizer, direction, device)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
