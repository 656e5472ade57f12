"""GPU speed of vauban's hot paths against the hardware's limits and plain transformers, one run.

A random-weight model with the exact Llama-3.1-8B config in bfloat16 is built on the GPU (real
weights cannot travel to the benchmark machine). Everything is measured side by side in one
process, on one device:

- ceilings: device-to-device copy bandwidth (bytes read + written) and a bf16 8192³ matmul;
- capture: last-token residuals of 256 prompts (all layers) in tokens/s and as a fraction of
  the bf16 peak (model FLOPs of the real tokens / time / 790 TFLOP/s), vs one prompt at a time;
- cut: all 64 residual-writing matrices, fused Triton kernel vs PyTorch (bf16 math, float32
  math, vauban's PyTorch path) vs the bound of reading and writing each matrix once;
- generation: vauban's static-cache CUDA-graph loop vs ``model.generate``, batched and
  sequential, vs the bound of reading the weights once per step;
- one optimization trial: refusals on 100 prompts x 64 tokens + first-token KL on 100 harmless
  prompts, with the cut applied and undone;
- refinement (``vauban.refine``): one gradient step of the per-writer weights on 48 harmless
  prompts + 24 teacher-forced refusals (forward + backward), and its peak memory;
- export: GB/s of ``vauban.export`` (hashes and checks included) and of ``save_pretrained``;
- with two GPUs: the exported model loaded with ``device="auto"`` (split over both) is measured,
  generated from, cut and evaluated, and compared with the single-GPU model.

    python benchmarks/gpu.py --out results.json          # on the GPU machine
    python benchmarks/gpu.py --shape small --device cpu  # smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import vauban.generate as vgen
from conftest import build_tokenizer
from vauban import arch, cut, export, kernels, load_model, measure
from vauban.activations import last_token_residuals
from vauban.batching import left_pad
from vauban.evaluating import completions, evaluate
from vauban.prompts import encode_chat, load_prompts, pad_id

PEAK_BF16 = 790e12  # FLOP/s, the reference (8192³ bf16 matmul on an H100 here)
NOMINAL_BW = 3.0e12  # B/s, the reference

SHAPES = {
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=131072, rope_theta=500000.0, head_dim=128,
                         rms_norm_eps=1e-5, tie_word_embeddings=False,
                         rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=4, vocab_size=32000,
                  max_position_embeddings=2048),
}


class Bench:
    """Timings and results, written to JSON after every section so a crash keeps what ran."""

    def __init__(self, device: torch.device, out: Path | None) -> None:
        self.device = device
        self.out = out
        self.rows: dict[str, Any] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def time(self, fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> tuple[float, Any]:
        """Median seconds of ``repeat`` synchronized runs after ``warmup`` runs."""
        out = None
        for _ in range(warmup):
            out = fn()
        times = []
        for _ in range(repeat):
            self.sync()
            start = time.perf_counter()
            out = fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2], out

    def section(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        print(f"--- {name}", flush=True)
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as err:  # a benchmark reports what broke and goes on
            traceback.print_exc()
            result = {"error": f"{type(err).__name__}: {err}"[:500]}
        result["section_s"] = round(time.perf_counter() - start, 1)
        self.rows[name] = result
        for key, value in result.items():
            print(f"  {key:32s} {value:.4g}" if isinstance(value, float) else f"  {key:32s} {value}",
                  flush=True)
        if self.out:
            self.out.write_text(json.dumps(self.rows, indent=2, default=str))


def ceilings(b: Bench) -> dict[str, Any]:
    if b.device.type != "cuda":
        return {"copy_GBps": float("nan"), "matmul_TFLOPs": float("nan")}
    src = torch.randn(1024 * 1024 * 1024, device=b.device, dtype=torch.bfloat16)  # 2 GiB
    dst = torch.empty_like(src)
    t_copy, _ = b.time(lambda: dst.copy_(src), repeat=10)
    a = torch.randn(8192, 8192, device=b.device, dtype=torch.bfloat16)
    c = torch.randn(8192, 8192, device=b.device, dtype=torch.bfloat16)
    t_mm, _ = b.time(lambda: a @ c, repeat=10)
    return {"copy_GBps": 2 * 2 * 1024**3 / t_copy / 1e9, "matmul_TFLOPs": 2 * 8192**3 / t_mm / 1e12}


def graph_check(b: Bench) -> dict[str, Any]:
    """Tokens of the CUDA-graph loop = eager static loop = ``generate``, tiny float32 models."""
    from conftest import build_model

    tokenizer = build_tokenizer()
    r: dict[str, Any] = {}
    for model_type in ("llama", "qwen2", "gpt2"):
        model = build_model(model_type).to(b.device)
        ids, mask, _ = left_pad(encode_chat(tokenizer, load_prompts("harmful")[:12]), pad_id(tokenizer),
                                b.device)
        stops = vgen.stop_token_ids(model, tokenizer)
        with torch.inference_mode():
            ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=24,
                                 eos_token_id=stops, pad_token_id=pad_id(tokenizer))[:, ids.shape[1]:]
        graph = vgen.static_greedy(model, ids, mask, 24, stops, pad_id(tokenizer), graph=True)
        eager = vgen.static_greedy(model, ids, mask, 24, stops, pad_id(tokenizer), graph=False)
        r[f"{model_type}_graph_eq_eager"] = bool(torch.equal(graph, eager))
        r[f"{model_type}_graph_eq_generate"] = bool(torch.equal(graph[:, : ref.shape[1]], ref))
    return r


def flops_per_token(model: Any, context: float) -> float:
    """Forward FLOPs of one token through every decoder layer (no logits), attention included."""
    layers = arch.decoder_layers(model)
    params = sum(p.numel() for layer in layers for p in layer.parameters() if p.dim() == 2)
    d = arch.d_model(model)
    return 2 * params + 4 * len(layers) * d * context


def capture(b: Bench, model: Any, tokenizer: Any, prompts: list[str]) -> dict[str, Any]:
    ids = encode_chat(tokenizer, prompts)
    lengths = [len(x) for x in ids]
    tokens = sum(lengths)
    context = sum(n * (n + 1) / 2 for n in lengths) / tokens
    flops = tokens * flops_per_token(model, context)
    r: dict[str, Any] = {"prompts": len(prompts), "tokens": tokens, "mean_len": tokens / len(prompts)}
    t_tok, _ = b.time(lambda: encode_chat(tokenizer, prompts), repeat=1)
    r["tokenize_s"] = t_tok
    for batch in (None, 64, 128, 256):
        t, acts = b.time(lambda bs=batch: last_token_residuals(model, tokenizer, prompts, batch_size=bs,
                                                               show_progress=False))
        key = f"batch_{batch or 'default'}"
        r[f"{key}_tok_s"] = tokens / t
        r[f"{key}_peak_frac"] = flops / t / PEAK_BF16
        r[f"{key}_peak_frac_excl_tokenize"] = flops / (t - t_tok) / PEAK_BF16
        if batch is None:
            reference = acts
        else:
            r[f"{key}_max_rel_diff"] = float(((acts - reference).norm(dim=-1) / reference.norm(dim=-1)).max())
    r.update(profile_capture(model, tokenizer, prompts[:64]))
    few = ids[:32]

    @torch.inference_mode()
    def naive() -> None:  # one prompt at a time, full logits, all hidden states
        for seq in few:
            model(torch.tensor([seq], device=b.device), output_hidden_states=True)

    t, _ = b.time(naive, repeat=1)
    r["one_at_a_time_tok_s"] = sum(len(x) for x in few) / t
    r["batched_vs_one_at_a_time"] = max(v for k, v in r.items() if k.endswith("_tok_s") and "batch_" in k) / (
        r["one_at_a_time_tok_s"])
    return r


def profile_capture(model: Any, tokenizer: Any, prompts: list[str]) -> dict[str, Any]:
    """Share of GPU time per kernel family in one 64-prompt capture batch."""
    if not torch.cuda.is_available():
        return {}
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        last_token_residuals(model, tokenizer, prompts, batch_size=64, show_progress=False)
        torch.cuda.synchronize()
    events = [(e.key, e.device_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in events) or 1.0
    top = sorted(events, key=lambda e: -e[1])[:8]
    return {"profile_gpu_ms": total / 1e3,
            "profile_top": [f"{100 * t / total:.0f}% {k[:70]}" for k, t in top]}


def writers(model: Any) -> list[tuple[str, torch.Tensor, int]]:
    layers = list(range(arch.num_layers(model)))
    return [(w.name, w.weight, w.axis) for w in arch.residual_writers(model, layers)]


def cut_bench(b: Bench, model: Any, direction: torch.Tensor) -> dict[str, Any]:
    mats = writers(model)
    nbytes = sum(w.numel() * w.element_size() for _, w, _ in mats)
    r: dict[str, Any] = {"matrices": len(mats), "GB": nbytes / 1e9,
                         "bound_ms_3TBps": 2 * nbytes / NOMINAL_BW * 1e3}
    copy_bw = b.rows.get("ceilings", {}).get("copy_GBps")
    if copy_bw and math.isfinite(copy_bw):
        r["bound_ms_measured_bw"] = 2 * nbytes / (copy_bw * 1e9) * 1e3
    bound = r.get("bound_ms_measured_bw", r["bound_ms_3TBps"])
    v = direction.to(b.device, torch.float32)
    saved = [w.detach().clone() for _, w, _ in mats]

    def restore() -> None:
        for (_, w, _), s in zip(mats, saved, strict=True):
            w.data.copy_(s)

    def torch_bf16() -> None:  # the issue's baseline: W -= outer(d, d @ W), in the weights' dtype
        d16 = v.to(mats[0][1].dtype)
        for _, w, axis in mats:
            view = w.data.movedim(axis, 0)
            view -= torch.outer(d16, d16 @ view)

    def torch_fp32() -> None:
        for _, w, axis in mats:
            view = w.data.movedim(axis, 0)
            view.copy_((view.float() - torch.outer(v, v @ view.float())).to(view.dtype))

    with torch.no_grad():
        t, _ = b.time(torch_bf16, repeat=5)
        r["torch_bf16_ms"] = t * 1e3
        restore()
        t, _ = b.time(torch_fp32, repeat=5)
        r["torch_fp32_ms"] = t * 1e3
        restore()
    r["torch_bf16_x_bound"] = r["torch_bf16_ms"] / bound
    r["torch_fp32_x_bound"] = r["torch_fp32_ms"] / bound
    if not (b.device.type == "cuda" and kernels.available()):
        return r

    # kernel level: r = vᵀW, then the fused update with in-register undo replay and miss capture
    views = [w.data.movedim(axis, -1) for _, w, axis in mats]
    edits: list[Any] = []

    def fused_apply() -> None:
        edits.clear()
        for view in views:
            edits.append(kernels.apply_(view, v, 1.0))

    def fused_undo() -> None:
        for view, (rr, _, _) in zip(views, edits, strict=True):
            kernels.shift_(view, v, rr, 1.0)
        for (_, w, _), (_, index, values) in zip(mats, edits, strict=True):
            w.data.view(-1)[index] = values

    def apply_undo() -> None:
        fused_apply()
        fused_undo()

    b.time(apply_undo, repeat=1)  # compile
    restore()
    times_apply, times_undo = [], []
    for _ in range(5):
        b.sync()
        t0 = time.perf_counter()
        fused_apply()
        b.sync()
        t1 = time.perf_counter()
        fused_undo()
        b.sync()
        times_apply.append(t1 - t0)
        times_undo.append(time.perf_counter() - t1)
    r["fused_apply_ms"] = sorted(times_apply)[2] * 1e3
    r["fused_undo_ms"] = sorted(times_undo)[2] * 1e3
    r["fused_apply_x_bound"] = r["fused_apply_ms"] / bound
    r["fused_undo_x_bound"] = r["fused_undo_ms"] / bound
    r["fused_undo_bit_exact"] = all(torch.equal(w, s) for (_, w, _), s in zip(mats, saved, strict=True))
    r["misses_per_element"] = sum(e[1].numel() for e in edits) / sum(w.numel() for _, w, _ in mats)
    shift_only = []
    for _ in range(5):  # read + write once: the bound's own pattern
        b.sync()
        t0 = time.perf_counter()
        for view, e in zip(views, edits, strict=True):
            kernels.shift_(view, v, e[0], 0.0)
        b.sync()
        shift_only.append(time.perf_counter() - t0)
    r["fused_shift_only_ms"] = sorted(shift_only)[2] * 1e3
    # where the first application's time goes: r = vᵀW alone (no host sync), and one host round
    # trip per matrix (apply_ reads its miss count back before the next matrix)
    t, _ = b.time(lambda: [kernels.removed(view, v) for view in views], repeat=5)
    r["fused_r_only_ms"] = t * 1e3
    t, _ = b.time(lambda: [int(torch.zeros(1, device=b.device)) for _ in views], repeat=5)
    r["host_round_trips_ms"] = t * 1e3
    restore()
    # accuracy: the fused cut against float32 PyTorch math on one matrix
    _, w, axis = mats[1]
    view = w.data.movedim(axis, -1)
    rr = view.float() @ v
    ref = (view.float() - rr.unsqueeze(-1) * v).to(w.dtype)
    got_r, _, _ = kernels.apply_(view, v, 1.0)
    r["fused_r_rel_err"] = float((got_r - rr).norm() / rr.norm())
    r["fused_equal_to_fp32_torch_frac"] = float((view == ref).float().mean())
    r["fused_max_abs_diff_vs_fp32_torch"] = float((view.float() - ref.float()).abs().max())
    restore()

    # API level: vauban.cut (fused) and vauban.cut with the PyTorch path, apply + undo
    def api(fused: bool) -> tuple[float, float, bool]:
        original = kernels.supported
        if not fused:
            kernels.supported = lambda p: False
        try:
            c = cut(model, direction)  # warm
            c.undo()
            ta, tu = [], []
            for _ in range(3):
                b.sync()
                t0 = time.perf_counter()
                c = cut(model, direction)
                b.sync()
                t1 = time.perf_counter()
                c.undo()
                b.sync()
                ta.append(t1 - t0)
                tu.append(time.perf_counter() - t1)
            exact = all(torch.equal(w, s) for (_, w, _), s in zip(mats, saved, strict=True))
            return sorted(ta)[1], sorted(tu)[1], exact
        finally:
            kernels.supported = original

    for label, fused in (("api_fused", True), ("api_torch", False)):
        ta, tu, exact = api(fused)
        r[f"{label}_apply_ms"] = ta * 1e3
        r[f"{label}_undo_ms"] = tu * 1e3
        r[f"{label}_undo_bit_exact"] = exact
    r["api_fused_apply_x_bound"] = r["api_fused_apply_ms"] / bound
    restore()
    return r


def kernel_sweep(b: Bench, model: Any, direction: torch.Tensor) -> dict[str, Any]:
    """Tile shapes of the fused cut's kernels, timed over all 64 matrices; the best are kept."""
    mats = writers(model)
    nbytes = sum(w.numel() * w.element_size() for _, w, _ in mats)
    v = direction.to(b.device, torch.float32)
    views = [w.data.movedim(axis, -1) for _, w, axis in mats]
    saved = [w.detach().clone() for _, w, _ in mats]
    r: dict[str, Any] = {}
    tiles = [(256, 16, 4), (256, 32, 4), (256, 64, 8), (128, 32, 4), (512, 16, 8), (128, 64, 8), (64, 64, 4)]
    best = {}
    for name in ("REMOVED_TILE", "TRACK_TILE"):
        times = {}
        for tile in tiles:
            setattr(kernels, name, tile)
            if name == "REMOVED_TILE":
                t, _ = b.time(lambda: [kernels.removed(view, v) for view in views], repeat=3)
            else:
                def apply_undo() -> None:
                    edits = [kernels.apply_(view, v, 1.0) for view in views]
                    for view, (rr, index, values), (_, w, _) in zip(views, edits, mats, strict=True):
                        kernels.shift_(view, v, rr, 1.0)
                        w.data.view(-1)[index] = values

                times_apply = []
                apply_undo()
                for _ in range(3):
                    b.sync()
                    t0 = time.perf_counter()
                    edits = [kernels.apply_(view, v, 1.0) for view in views]
                    b.sync()
                    times_apply.append(time.perf_counter() - t0)
                    for view, (rr, index, values), (_, w, _) in zip(views, edits, mats, strict=True):
                        kernels.shift_(view, v, rr, 1.0)
                        w.data.view(-1)[index] = values
                t = sorted(times_apply)[1]
                assert all(torch.equal(w, s) for (_, w, _), s in zip(mats, saved, strict=True))
            times[tile] = t
            r[f"{name}_{'x'.join(map(str, tile))}_ms"] = t * 1e3
        best[name] = min(times, key=times.__getitem__)
        setattr(kernels, name, best[name])
    r.update({f"best_{k}": v for k, v in best.items()})
    bound = 2 * nbytes / (b.rows["ceilings"]["copy_GBps"] * 1e9)
    r["best_r_x_read_bound"] = min(v for k, v in r.items() if k.startswith("REMOVED")) / 1e3 / (bound / 2)
    r["best_apply_x_bound"] = min(v for k, v in r.items() if k.startswith("TRACK")) / 1e3 / bound
    c = cut(model, direction)
    c.undo()
    ta = []
    for _ in range(3):
        b.sync()
        t0 = time.perf_counter()
        c = cut(model, direction)
        b.sync()
        ta.append(time.perf_counter() - t0)
        c.undo()
    r["api_fused_apply_ms"] = sorted(ta)[1] * 1e3
    r["undo_bit_exact"] = all(torch.equal(w, s) for (_, w, _), s in zip(mats, saved, strict=True))
    return r


def generation(b: Bench, model: Any, tokenizer: Any, prompts: list[str]) -> dict[str, Any]:
    r: dict[str, Any] = {}
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = b.rows.get("ceilings", {}).get("copy_GBps", float("nan")) * 1e9
    pad = pad_id(tokenizer)

    def batch(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask, _ = left_pad(encode_chat(tokenizer, texts), pad, b.device)
        return ids, mask

    @torch.inference_mode()
    def plain(ids: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                             min_new_tokens=n, pad_token_id=pad)
        return out[:, ids.shape[1]:]

    def fast(ids: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
        return vgen.static_greedy(model, ids, mask, n, [], pad)  # no stops: every row runs n steps

    for rows, n in ((20, 100), (100, 64)):
        ids, mask = batch(prompts[:rows])
        t_plain, out_plain = b.time(lambda ids=ids, mask=mask, n=n: plain(ids, mask, n), repeat=2)
        t_fast, out_fast = b.time(lambda ids=ids, mask=mask, n=n: fast(ids, mask, n), repeat=3)
        key = f"b{rows}x{n}"
        r[f"{key}_plain_tok_s"] = rows * n / t_plain
        r[f"{key}_fast_tok_s"] = rows * n / t_fast
        r[f"{key}_speedup"] = t_plain / t_fast
        r[f"{key}_bound_tok_s"] = rows * bw / weights  # one weight read per step, KV cache ignored
        same = (out_plain == out_fast).all(-1)
        r[f"{key}_rows_identical_frac"] = float(same.float().mean())
        first = (out_plain != out_fast).float().argmax(-1)
        r[f"{key}_first_divergence_mean_step"] = float(torch.where(same, n, first).float().mean())
    seq = prompts[:3]
    t_plain_seq, _ = b.time(lambda: [plain(*batch([p]), 100) for p in seq], repeat=1)
    t_fast_seq, _ = b.time(lambda: [fast(*batch([p]), 100) for p in seq], repeat=1)
    r["seq_plain_tok_s"] = 300 / t_plain_seq
    r["seq_fast_tok_s"] = 300 / t_fast_seq
    r["b20_fast_vs_seq_plain"] = r["b20x100_fast_tok_s"] / r["seq_plain_tok_s"]
    # the library entry point (tokenize, batch from free memory, decode), 100 prompts x 64 tokens
    t_lib, _ = b.time(lambda: vgen.generate(model, tokenizer, prompts[:100], max_tokens=64,
                                            show_progress=False), repeat=2)
    r["generate_api_100x64_s"] = t_lib
    from vauban.steering import Steering

    with Steering(model, torch.randn(arch.d_model(model)), 1.0):  # hooks: the eager static loop
        t_steer, _ = b.time(lambda: vgen.generate(model, tokenizer, prompts[:20], max_tokens=32,
                                                  show_progress=False), repeat=1)
    r["steered_generate_20x32_s"] = t_steer
    return r


@torch.inference_mode()
def first_token_logprobs(model: Any, tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    ids, mask, positions = left_pad(encode_chat(tokenizer, prompts), pad_id(tokenizer), model.device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1,
                   use_cache=False).logits[:, -1]
    return torch.log_softmax(logits.float(), dim=-1)


def trial(b: Bench, model: Any, tokenizer: Any, harmful: list[str], harmless: list[str],
          direction: torch.Tensor) -> dict[str, Any]:
    base = first_token_logprobs(model, tokenizer, harmless)

    def one() -> float:
        with cut(model, direction, alpha=1.0):
            answers = completions(model, tokenizer, harmful, max_tokens=64, batch_size=None)
            logp = first_token_logprobs(model, tokenizer, harmless)
        kl = float((base.exp() * (base - logp)).sum(-1).mean())
        return sum(c.refused for c in answers) / len(answers) + kl

    r: dict[str, Any] = {"prompts": len(harmful), "harmless": len(harmless), "max_tokens": 64}
    r["fast_s"], _ = b.time(one, repeat=2)
    original_ok, original_supported = vgen.fast_loop_ok, kernels.supported
    vgen.fast_loop_ok = lambda m: False  # model.generate in batches of 64, PyTorch cut
    kernels.supported = lambda p: False
    try:
        r["plain_s"], _ = b.time(one, repeat=1)
    finally:
        vgen.fast_loop_ok, kernels.supported = original_ok, original_supported
    r["speedup"] = r["plain_s"] / r["fast_s"]
    return r


def refine_bench(b: Bench, model: Any, tokenizer: Any, harmful: list[str], harmless: list[str],
                 direction: torch.Tensor) -> dict[str, Any]:
    from vauban.refine import refine

    neutral = harmless[:48]
    refusals = [(p, "I'm sorry, but I can't help with that request.") for p in harmful[:24]]
    base = first_token_logprobs(model, tokenizer, neutral)
    steps = 3
    if b.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, _ = b.time(lambda: refine(model, tokenizer, direction, neutral, base, refusals, steps=steps),
                        repeat=1, warmup=0)
    r: dict[str, Any] = {"harmless": len(neutral), "refusals": len(refusals), "steps": steps,
                         "seconds": seconds, "seconds_per_step": seconds / (steps + 1)}
    if b.device.type == "cuda":
        r["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return r


def export_bench(b: Bench, model: Any, tokenizer: Any, root: Path) -> dict[str, Any]:
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    t_vauban, _ = b.time(lambda: export(model, tokenizer, root / "vauban", overwrite=True), repeat=1,
                         warmup=0)
    t_plain, _ = b.time(lambda: model.save_pretrained(root / "plain"), repeat=1, warmup=0)
    shutil.rmtree(root / "plain", ignore_errors=True)
    return {"GB": nbytes / 1e9, "vauban_export_GBps": nbytes / t_vauban / 1e9,
            "save_pretrained_GBps": nbytes / t_plain / 1e9}


def multi_gpu(b: Bench, model: Any, tokenizer: Any, root: Path, harmful: list[str],
              harmless: list[str]) -> dict[str, Any]:
    split, _ = load_model(root / "vauban", device="auto", dtype="bfloat16")
    devices = sorted({str(p.device) for p in split.parameters()})
    r: dict[str, Any] = {"devices": devices, "hf_device_map_values": sorted({str(v) for v in getattr(
        split, "hf_device_map", {}).values()})}
    one = measure(model, tokenizer, harmful, harmless, show_progress=False)
    two = measure(split, tokenizer, harmful, harmless, show_progress=False)
    r["same_layer"] = one.layer_index == two.layer_index
    r["direction_cosine"] = float(torch.nn.functional.cosine_similarity(
        one.direction.double(), two.direction.double(), dim=0))
    answers_one = vgen.generate(model, tokenizer, harmful[:8], max_tokens=16, show_progress=False)
    answers_two = vgen.generate(split, tokenizer, harmful[:8], max_tokens=16, show_progress=False)
    r["generate_same_answers_frac"] = sum(a == c for a, c in zip(answers_one, answers_two, strict=True)) / 8
    second_gpu = next(p for p in split.parameters() if p.device.index == 1 and p.dim() == 2)
    probe = second_gpu.detach().clone()
    c = cut(split, two)
    result = evaluate(split, split, tokenizer, prompts=harmful[:8], max_tokens=16, show_progress=False)
    c.undo()
    r["cut_edited_tensors"] = len(c.edited)
    r["evaluate_kl"] = result.kl
    r["undo_bit_exact_on_gpu1"] = bool(torch.equal(second_gpu, probe))
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description="vauban GPU benchmarks")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    parser.add_argument("--prompts", type=int, default=128, help="per set (smoke tests: fewer)")
    args = parser.parse_args()
    skip = set(args.skip.split(",")) - {""}
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    b = Bench(device, args.out)
    import transformers

    b.rows["env"] = {
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "gpus": torch.cuda.device_count(), "torch": torch.__version__,
        "transformers": transformers.__version__, "shape": args.shape, "dtype": str(dtype),
        "triton": __import__("triton").__version__ if kernels.available() else None,
    }
    print(b.rows["env"], flush=True)
    b.section("ceilings", lambda: ceilings(b))
    if "graph_check" not in skip:
        b.section("graph_check", lambda: graph_check(b))
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **SHAPES[args.shape])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = None
    tokenizer = build_tokenizer()
    harmful = load_prompts("harmful")[: args.prompts]
    harmless = load_prompts("harmless")[: args.prompts]
    direction = torch.nn.functional.normalize(torch.randn(config.hidden_size), dim=0)
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "capture": lambda: capture(b, model, tokenizer, harmful + harmless),
        "cut": lambda: cut_bench(b, model, direction),
        "kernel_sweep": lambda: kernel_sweep(b, model, direction),
        "generation": lambda: generation(b, model, tokenizer, harmful),
        "trial": lambda: trial(b, model, tokenizer, harmful[:100], harmless[:100], direction),
        "refine": lambda: refine_bench(b, model, tokenizer, harmful, harmless, direction),
    }
    for name, fn in sections.items():
        if name not in skip:
            b.section(name, fn)
    root = Path(tempfile.mkdtemp(prefix="vauban-bench-"))
    try:
        if "export" not in skip:
            b.section("export", lambda: export_bench(b, model, tokenizer, root))
        if "multi_gpu" not in skip and torch.cuda.device_count() >= 2 and (root / "vauban").is_dir():
            b.section("multi_gpu", lambda: multi_gpu(b, model, tokenizer, root, harmful[:32], harmless[:32]))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
