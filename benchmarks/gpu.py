"""GPU speed of vauban's hot paths against the hardware's limits and plain transformers, one run.

A random-weight model with the exact Llama-3.1-8B config in bfloat16 is built on the GPU (real
weights cannot travel to the benchmark machine). Everything is measured side by side in one
process, on one device, with ablation rows (the previous implementations, kept in
``gpu_baselines.py``, and each optimization switched off in turn); the cut section lives in
``gpu_cut.py``, the two-GPU sections in ``gpu_multi.py``:

- ceilings: device-to-device copy bandwidth (bytes read + written) and a bf16 8192³ matmul;
- capture: last-token residuals of 256 prompts (all layers) in tokens/s and as a fraction of
  the bf16 peak (model FLOPs of the real tokens / time / 790 TFLOP/s), vs one prompt at a time;
- cut: all 64 residual-writing matrices, the fused first application (one kernel per matrix)
  vs the previous two kernels vs PyTorch, vs the bound of reading and writing each matrix once;
- generation: vauban's fast loop (compiled step, CUDA graph, chunked prefill) vs the same with
  each part off, vs the previous static-cache loop and ``model.generate``, vs the bound of
  reading the weights once per step;
- one optimization trial: refusals on 100 prompts x 64 tokens + first-token KL on 100 harmless
  prompts, with the cut applied and undone;
- with two GPUs: replicas (one copy per GPU, prompts split) vs one card for capture and
  generation, and the model saved and reloaded with ``device="auto"`` (layers split over both).

    python benchmarks/gpu.py --out results.json          # on the GPU machine
    python benchmarks/gpu.py --shape small --device cpu  # smoke test of the script
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import vauban.runtime.generating as vgen
from conftest import build_tokenizer
from gpu_baselines import old_last_token_residuals, old_static_greedy
from gpu_cut import cut_bench
from gpu_multi import PEAK_BF16, replicas_bench, split_bench
from vauban import cut
from vauban.evaluation import evaluating
from vauban.judge.answers import completions
from vauban.model import arch
from vauban.runtime import batching, kernels
from vauban.runtime.activations import last_token_residuals
from vauban.runtime.batching import left_pad
from vauban.runtime.scoring import first_token_logprobs, kl_divergence
from vauban.text.prompts import encode_chat, load_prompts, pad_id

SHAPES = {
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        head_dim=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_scaling={
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
    ),
    "small": dict(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=32000,
        max_position_embeddings=2048,
    ),
}


# (rows, new tokens) of the generation section: the two cases, and a smoke test's
GENERATION_SIZES = {"llama-3.1-8b": ((20, 100), (100, 64)), "small": ((4, 12), (12, 8))}


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
        gc.collect()  # what the section made (replicas, a split copy) goes before the next
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.rows[name] = result
        for key, value in result.items():
            print(
                f"  {key:32s} {value:.4g}" if isinstance(value, float) else f"  {key:32s} {value}", flush=True
            )
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


def flops_per_token(model: Any, context: float) -> float:
    """Forward FLOPs of one token through every decoder layer (no logits), attention included."""
    layers = arch.decoder_layers(model)
    params = sum(p.numel() for layer in layers for p in layer.parameters() if p.dim() == 2)
    d = arch.d_model(model)
    return 2 * params + 4 * len(layers) * d * context


def capture_flops(model: Any, tokenizer: Any, prompts: list[str]) -> tuple[int, float]:
    lengths = [len(x) for x in encode_chat(tokenizer, prompts)]
    tokens = sum(lengths)
    context = sum(n * (n + 1) / 2 for n in lengths) / tokens
    return tokens, tokens * flops_per_token(model, context)


def peak(b: Bench) -> float:
    measured = b.rows.get("ceilings", {}).get("matmul_TFLOPs", float("nan")) * 1e12
    return measured if math.isfinite(measured) else PEAK_BF16


def capture(b: Bench, model: Any, tokenizer: Any, prompts: list[str]) -> dict[str, Any]:
    tokens, flops = capture_flops(model, tokenizer, prompts)
    r: dict[str, Any] = {"prompts": len(prompts), "tokens": tokens, "mean_len": tokens / len(prompts)}
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "old_batch64_sync": lambda: old_last_token_residuals(model, tokenizer, prompts, 64),
        "batch64": lambda: last_token_residuals(
            model, tokenizer, prompts, batch_size=64, show_progress=False
        ),
        "default": lambda: last_token_residuals(model, tokenizer, prompts, show_progress=False),
        "compiled": lambda: last_token_residuals(
            model, tokenizer, prompts, show_progress=False, compile=True
        ),
    }
    budgets = (4096, 16384) if b.device.type == "cuda" else ()
    reference = None
    for name, fn in [*variants.items(), *((f"tokens{t}", t) for t in budgets)]:
        if isinstance(fn, int):
            saved = dict(batching.FORWARD_TOKENS)
            batching.FORWARD_TOKENS["cuda"] = fn
            try:
                t, acts = b.time(variants["default"])
            finally:
                batching.FORWARD_TOKENS.clear()
                batching.FORWARD_TOKENS.update(saved)
        else:
            t, acts = b.time(fn)
        r[f"{name}_tok_s"] = tokens / t
        r[f"{name}_peak_frac"] = flops / t / PEAK_BF16
        r[f"{name}_measured_peak_frac"] = flops / t / peak(b)
        if reference is None:
            reference = acts
        else:
            r[f"{name}_max_rel_diff"] = float(
                ((acts - reference).norm(dim=-1) / reference.norm(dim=-1)).max()
            )
    r.update(profile_capture(model, tokenizer, prompts))
    few = [torch.tensor([seq], device=b.device) for seq in encode_chat(tokenizer, prompts[:32])]

    @torch.inference_mode()
    def naive() -> None:  # one prompt at a time, full logits, all hidden states
        for seq in few:
            model(seq, output_hidden_states=True)

    t, _ = b.time(naive, repeat=1)
    r["one_at_a_time_tok_s"] = sum(x.shape[1] for x in few) / t
    r["default_vs_one_at_a_time"] = r["default_tok_s"] / r["one_at_a_time_tok_s"]
    return r


def profile_capture(model: Any, tokenizer: Any, prompts: list[str]) -> dict[str, Any]:
    """Share of GPU time per kernel in one default capture of ``prompts``."""
    if not torch.cuda.is_available():
        return {}
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        last_token_residuals(model, tokenizer, prompts, show_progress=False)
        torch.cuda.synchronize()
    events = [(e.key, e.device_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in events) or 1.0
    top = sorted(events, key=lambda e: -e[1])[:8]
    return {
        "profile_gpu_ms": total / 1e3,
        "profile_top": [f"{100 * t / total:.0f}% {k[:70]}" for k, t in top],
    }


def weight_bytes(model: Any) -> tuple[int, int]:
    """All parameter bytes (the issue's bound) and those a decode step reads (no embedding table)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb = sum(e.weight.numel() * e.weight.element_size() for e in arch.embeddings(model))
    tied = arch.lm_head_is_tied(model)
    return total, total - (0 if tied else emb)


def copy_bw(b: Bench) -> float:
    """The measured device copy bandwidth in B/s (nan where the ceilings did not run)."""
    return b.rows.get("ceilings", {}).get("copy_GBps", float("nan")) * 1e9


def encode_batch(
    tokenizer: Any, pad: int, device: torch.device, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask, _ = left_pad(encode_chat(tokenizer, texts), pad, device)
    return ids, mask


@torch.inference_mode()
def plain_generate(model: Any, pad: int, ids: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """``model.generate``, greedy, exactly ``n`` new tokens."""
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=n,
        min_new_tokens=n,
        pad_token_id=pad,
    )
    return out[:, ids.shape[1] :]


def fast_variants(model: Any, pad: int, cuda: bool) -> dict[str, Callable[..., torch.Tensor]]:
    """vauban's fast loop and its ablations, as ``fn(ids, mask, n)`` (no stops: every row runs n steps)."""
    greedy = vgen.static_greedy
    return {
        "fast": lambda ids, mask, n: greedy(model, ids, mask, n, [], pad),  # the default: exact
        "compiled": lambda ids, mask, n: greedy(model, ids, mask, n, [], pad, compile=True),
        "compiled_no_chunks": lambda ids, mask, n: greedy(
            model, ids, mask, n, [], pad, compile=True, chunk_tokens=10**9
        ),
        "chunks_only": lambda ids, mask, n: greedy(model, ids, mask, n, [], pad, chunk_tokens=4096),
        "no_graph": lambda ids, mask, n: greedy(model, ids, mask, n, [], pad, graph=False),
        "old_static": lambda ids, mask, n: old_static_greedy(model, ids, mask, n, [], pad, graph=cuda),
    }


def generation(
    b: Bench, model: Any, tokenizer: Any, prompts: list[str], sizes: tuple[tuple[int, int], ...]
) -> dict[str, Any]:
    r: dict[str, Any] = {}
    pad = pad_id(tokenizer)
    batch = functools.partial(encode_batch, tokenizer, pad, b.device)
    cuda = b.device.type == "cuda"
    variants = fast_variants(model, pad, cuda)
    for rows, n in sizes:
        ids, mask = batch(prompts[:rows])
        if "compile_first_call_s" not in r:  # the first compiled call pays for the compilation
            b.sync()
            t0 = time.perf_counter()
            variants["compiled"](ids, mask, n)
            b.sync()
            r["compile_first_call_s"] = time.perf_counter() - t0
        r.update(size_rows(b, model, pad, variants, ids, mask, rows, n))
    try:  # a profile that fails is a row, not a lost section
        r.update(profile_step(b, model, prompts[:20], batch, pad))
    except Exception as err:
        r["step_profile_error"] = f"{type(err).__name__}: {err}"[:300]
    r.update(api_rows(b, model, tokenizer, prompts))
    r.update(steered_rows(b, model, *batch(prompts[:20]), pad, cuda))
    return r


def size_rows(
    b: Bench,
    model: Any,
    pad: int,
    variants: dict[str, Callable[..., torch.Tensor]],
    ids: torch.Tensor,
    mask: torch.Tensor,
    rows: int,
    n: int,
) -> dict[str, Any]:
    """``rows`` prompts x ``n`` new tokens: plain ``generate``, each variant against it and the
    bound, and where the time goes."""
    key = f"b{rows}x{n}"
    weights, _ = weight_bytes(model)
    t_plain, out_plain = b.time(lambda: plain_generate(model, pad, ids, mask, n), repeat=2)
    r: dict[str, Any] = {f"{key}_plain_tok_s": rows * n / t_plain}
    r[f"{key}_bound_tok_s"] = rows * copy_bw(b) / weights  # the bound: all weights once per step
    for name, fn in variants.items():
        repeat = 1 if name == "no_graph" else 3
        t, out = b.time(lambda fn=fn: fn(ids, mask, n), repeat=repeat)
        r[f"{key}_{name}_tok_s"] = rows * n / t
        r[f"{key}_{name}_bound_frac"] = rows * n / t / r[f"{key}_bound_tok_s"]
        same = (out_plain == out).all(-1)
        r[f"{key}_{name}_rows_identical_frac"] = float(same.float().mean())
        first = (out_plain != out).float().argmax(-1)
        r[f"{key}_{name}_first_divergence_mean_step"] = float(torch.where(same, n, first).float().mean())
    r[f"{key}_fast_vs_plain"] = r[f"{key}_fast_tok_s"] / r[f"{key}_plain_tok_s"]
    r.update(step_rows(b, model, variants, ids, mask, key, rows, n, r))
    return r


def step_rows(
    b: Bench,
    model: Any,
    variants: dict[str, Callable[..., torch.Tensor]],
    ids: torch.Tensor,
    mask: torch.Tensor,
    key: str,
    rows: int,
    n: int,
    r: dict[str, Any],
) -> dict[str, Any]:
    """Where the time goes: the prefill alone (one token), then the decode steps, against the
    bound of reading the weights (no embedding table) and the KV cache once per step."""
    out: dict[str, Any] = {}
    for name in ("fast", "compiled"):
        t_prefill, _ = b.time(lambda name=name: variants[name](ids, mask, 1), repeat=3)
        step = (rows * n / r[f"{key}_{name}_tok_s"] - t_prefill) / (n - 1)
        out[f"{key}_{name}_prefill_s"] = t_prefill
        out[f"{key}_{name}_step_ms"] = step * 1e3
    _, read = weight_bytes(model)
    shape = batching.Shape.of(model)
    kv_per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * shape.itemsize
    context = ids.shape[1] + n
    out[f"{key}_step_bound_ms"] = (read + rows * context * kv_per_token) / copy_bw(b) * 1e3
    for name in ("fast", "compiled"):
        out[f"{key}_{name}_step_bw_frac"] = out[f"{key}_step_bound_ms"] / out[f"{key}_{name}_step_ms"]
    return out


def api_rows(b: Bench, model: Any, tokenizer: Any, prompts: list[str]) -> dict[str, Any]:
    """The library entry point (tokenize, batch from free memory, decode), 100 prompts x 64 tokens."""
    r: dict[str, Any] = {}
    for name, compiled in (("", False), ("_compiled", True)):
        t_lib, _ = b.time(
            lambda compiled=compiled: vgen.generate(
                model, tokenizer, prompts[:100], max_tokens=64, show_progress=False, compile=compiled
            ),
            repeat=2,
        )
        r[f"generate_api_100x64{name}_s"] = t_lib
    return r


def steered_rows(
    b: Bench, model: Any, ids: torch.Tensor, mask: torch.Tensor, pad: int, cuda: bool
) -> dict[str, Any]:
    """The fast loop under steering hooks (graph-safe), 20 rows x 32 tokens, with and without graph."""
    from vauban.methods.steering import Steering

    r: dict[str, Any] = {}
    with Steering(model, torch.randn(arch.d_model(model)), 1.0):
        for name, graph in (("graph", cuda), ("eager", False)):
            t, _ = b.time(
                lambda graph=graph: vgen.static_greedy(
                    model, ids, mask, 32, [], pad, graph=graph, compile=graph
                ),
                repeat=2,
            )
            r[f"steered_20x32_{name}_tok_s"] = 20 * 32 / t
    return r


def profile_step(b: Bench, model: Any, prompts: list[str], batch: Any, pad: int) -> dict[str, Any]:
    """Where a compiled decode step's GPU time goes (20 rows; prefill + 32 steps, no graph, so the
    profiler sees each kernel): matrix products vs the rest."""
    if b.device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    ids, mask = batch(prompts)
    vgen.static_greedy(model, ids, mask, 33, [], pad, graph=False, compile=True)  # warm
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        vgen.static_greedy(model, ids, mask, 33, [], pad, graph=False, compile=True)
        torch.cuda.synchronize()
    events = [(e.key, e.device_time_total, e.count) for e in prof.key_averages()]
    total = sum(t for _, t, _ in events) or 1.0
    gemm = sum(t for k, t, _ in events if "gemm" in k.lower() or "nvjet" in k.lower() or "gemv" in k.lower())
    top = sorted(events, key=lambda e: -e[1])[:10]
    return {
        "step_profile_gemm_frac": gemm / total,
        "step_profile_kernels": sum(c for _, _, c in events),
        "step_profile_top": [f"{100 * t / total:.0f}% x{c} {k[:60]}" for k, t, c in top],
    }


def trial(
    b: Bench, model: Any, tokenizer: Any, harmful: list[str], harmless: list[str], direction: torch.Tensor
) -> dict[str, Any]:
    """One optimization trial as ``vauban.search.optimizing`` runs it: cut, answers, first-token KL, undo."""
    base = first_token_logprobs(model, tokenizer, harmless)

    def one() -> float:
        with cut(model, direction, alpha=1.0):
            answers = completions(model, tokenizer, harmful, max_tokens=64, batch_size=None)
            kl = kl_divergence(base, first_token_logprobs(model, tokenizer, harmless))
        return sum(c.refused for c in answers) / len(answers) + kl

    r: dict[str, Any] = {"prompts": len(harmful), "harmless": len(harmless), "max_tokens": 64}
    r["fast_s"], _ = b.time(one, repeat=3)
    b.sync()
    t0 = time.perf_counter()
    with cut(model, direction, alpha=1.0) as c:
        b.sync()
        t1 = time.perf_counter()
        completions(model, tokenizer, harmful, max_tokens=64, batch_size=None)
        b.sync()
        t2 = time.perf_counter()
        first_token_logprobs(model, tokenizer, harmless)
        b.sync()
        t3 = time.perf_counter()
        c.undo()
        b.sync()
    r.update(cut_s=t1 - t0, answers_s=t2 - t1, kl_s=t3 - t2, undo_s=time.perf_counter() - t3)
    original_ok, original_supported = vgen.fast_loop_ok, kernels.supported
    vgen.fast_loop_ok = lambda m: False  # model.generate in batches of 64, PyTorch cut
    kernels.supported = lambda p: False
    try:
        r["plain_s"], _ = b.time(one, repeat=1, warmup=0)
    finally:
        vgen.fast_loop_ok, kernels.supported = original_ok, original_supported
    r["speedup"] = r["plain_s"] / r["fast_s"]
    # ablation: the same trial with the compiled, chunked loop (not bit-identical to generate's)
    original = evaluating.generate
    evaluating.generate = functools.partial(original, compile=True)
    try:
        r["compiled_s"], _ = b.time(one, repeat=2)
    finally:
        evaluating.generate = original
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description="vauban GPU benchmarks")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    parser.add_argument("--prompts", type=int, default=128, help="per set (smoke tests: fewer)")
    parser.add_argument("--budget-s", type=float, default=math.inf, help="start no section after this")
    args = parser.parse_args()
    started = time.perf_counter()
    skip = set(args.skip.split(",")) - {""}
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    b = Bench(device, args.out)
    import transformers

    b.rows["env"] = {
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "shape": args.shape,
        "dtype": str(dtype),
        "triton": __import__("triton").__version__ if kernels.available() else None,
        "date": time.strftime("%Y-%m-%d"),
        "apply_tile": kernels.APPLY_TILE,
        "apply_scan": kernels.APPLY_SCAN,
        "forward_tokens": dict(batching.FORWARD_TOKENS),
    }
    print(b.rows["env"], flush=True)
    b.section("ceilings", lambda: ceilings(b))
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **SHAPES[args.shape])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = None
    tokenizer = build_tokenizer()
    harmful = load_prompts("harmful")[: args.prompts]
    harmless = load_prompts("harmless")[: args.prompts]
    direction = torch.nn.functional.normalize(torch.randn(config.hidden_size), dim=0)
    two_gpus = device.type == "cuda" and torch.cuda.device_count() >= 2
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "generation": lambda: generation(b, model, tokenizer, harmful, GENERATION_SIZES[args.shape]),
        "trial": lambda: trial(b, model, tokenizer, harmful[:100], harmless[:100], direction),
        "capture": lambda: capture(b, model, tokenizer, harmful + harmless),
        "cut": lambda: cut_bench(b, model, direction),
    }
    if two_gpus:
        flops = capture_flops
        sections["replicas"] = lambda: replicas_bench(b, model, tokenizer, (harmful + harmless) * 2, flops)
        sections["split"] = lambda: split_bench(b, model, tokenizer, harmful, harmless, flops)
    for name, fn in sections.items():
        if name in skip:
            continue
        if time.perf_counter() - started > args.budget_s:  # what did not fit is a row too
            b.rows[name] = {"skipped": f"over the {args.budget_s:.0f} s budget"}
            continue
        b.section(name, fn)
    summary(b)


def summary(b: Bench) -> None:
    """The issue's table, last in the log."""
    g, c, k, t = (b.rows.get(s, {}) for s in ("generation", "capture", "cut", "trial"))
    rows = [
        ("generation 20x100 tok/s", g.get("b20x100_fast_tok_s"), g.get("b20x100_fast_bound_frac")),
        ("generation 100x64 tok/s", g.get("b100x64_fast_tok_s"), g.get("b100x64_fast_bound_frac")),
        ("capture peak frac", c.get("default_peak_frac"), c.get("default_measured_peak_frac")),
        ("first cut ms / x bound", k.get("api_fused_apply_ms"), k.get("api_fused_apply_x_bound")),
        ("trial s", t.get("fast_s"), t.get("speedup")),
    ]
    for key in ("replicas", "split"):
        for name, value in b.rows.get(key, {}).items():
            if "speedup" in name or "tok_s" in name:
                rows.append((f"{key} {name}", value, None))
    print("=== summary", flush=True)
    for name, value, extra in rows:
        shown = "-" if value is None else f"{value:.4g}"
        print(f"  {name:44s} {shown}  {'' if extra is None else f'{extra:.3g}'}", flush=True)


if __name__ == "__main__":
    main()
