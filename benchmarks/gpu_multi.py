"""The two-GPU sections of ``benchmarks/gpu.py``: replicas (one copy of the model per GPU,
prompts split) against one card, and the model reloaded with ``device="auto"`` (layers split)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import vauban.runtime.generating as vgen
from vauban import cut, load_model, measure
from vauban.evaluation.evaluating import evaluate
from vauban.runtime.activations import last_token_residuals
from vauban.runtime.replicas import Replicas

PEAK_BF16 = 790e12  # FLOP/s, the reference peak (8192³ bf16 matmul on an H100); gpu.py uses it too
Flops = Callable[[Any, Any, list[str]], tuple[int, float]]


def replicas_bench(
    b: Any, model: Any, tokenizer: Any, prompts: list[str], capture_flops: Flops
) -> dict[str, Any]:
    """Two copies (one per GPU, prompts split) vs one card, for capture and generation."""
    replicas = Replicas.of(model, [f"cuda:{i}" for i in range(torch.cuda.device_count())])
    r: dict[str, Any] = {"copies": len(replicas.models), "prompts": len(prompts)}
    tokens, flops = capture_flops(model, tokenizer, prompts)
    t1, one = b.time(lambda: last_token_residuals(model, tokenizer, prompts, show_progress=False), repeat=2)
    t2, two = b.time(lambda: replicas.last_token_residuals(tokenizer, prompts), repeat=2)
    r.update(
        capture_one_tok_s=tokens / t1,
        capture_two_tok_s=tokens / t2,
        capture_speedup=t1 / t2,
        capture_two_peak_frac_per_card=flops / t2 / PEAK_BF16 / len(replicas.models),
        capture_max_rel_diff=float(((two - one).norm(dim=-1) / one.norm(dim=-1)).max()),
    )
    for count, n in ((len(prompts), 64), (100, 64)):
        part = prompts[:count]
        t1, a1 = b.time(
            lambda part=part, n=n: vgen.generate(model, tokenizer, part, max_tokens=n, show_progress=False),
            repeat=2,
        )
        t2, a2 = b.time(lambda part=part, n=n: replicas.generate(tokenizer, part, max_tokens=n), repeat=2)
        key = f"generate_{count}x{n}"
        r.update(
            {
                f"{key}_one_s": t1,
                f"{key}_two_s": t2,
                f"{key}_speedup": t1 / t2,
                f"{key}_same_answers_frac": sum(x == y for x, y in zip(a1, a2, strict=True)) / count,
            }
        )
    return r


def split_bench(
    b: Any, model: Any, tokenizer: Any, harmful: list[str], harmless: list[str], capture_flops: Flops
) -> dict[str, Any]:
    """The model saved and reloaded with ``device="auto"`` (layers split over the GPUs)."""
    shm = Path("/dev/shm")
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    in_memory = shm.is_dir() and shutil.disk_usage(shm).free > 1.2 * nbytes
    root = Path(tempfile.mkdtemp(prefix="vauban-bench-", dir=shm if in_memory else None))
    try:
        t0 = time.perf_counter()
        model.save_pretrained(root)
        tokenizer.save_pretrained(root)
        r: dict[str, Any] = {"save_s": time.perf_counter() - t0, "saved_to": str(root.parent)}
        t0 = time.perf_counter()
        split, split_tok = load_model(root, device="auto", dtype="bfloat16")
        r["load_auto_s"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    r["devices"] = sorted({str(p.device) for p in split.parameters()})
    prompts = harmful + harmless
    tokens, flops = capture_flops(model, tokenizer, prompts)
    t_one, _ = b.time(lambda: last_token_residuals(model, tokenizer, prompts, show_progress=False), repeat=2)
    t_split, _ = b.time(
        lambda: last_token_residuals(split, split_tok, prompts, show_progress=False), repeat=2
    )
    r.update(
        capture_one_tok_s=tokens / t_one,
        capture_split_tok_s=tokens / t_split,
        capture_split_peak_frac=flops / t_split / PEAK_BF16,
    )
    for name, m in (("one", model), ("split", split)):
        t, _ = b.time(
            lambda m=m: vgen.generate(m, tokenizer, harmful[:20], max_tokens=32, show_progress=False),
            repeat=1,
        )
        r[f"generate_20x32_{name}_tok_s"] = 20 * 32 / t
    one = measure(model, tokenizer, harmful[:32], harmless[:32], show_progress=False)
    two = measure(split, split_tok, harmful[:32], harmless[:32], show_progress=False)
    r["same_layer"] = one.layer_index == two.layer_index
    r["direction_cosine"] = float(
        torch.nn.functional.cosine_similarity(one.direction.double(), two.direction.double(), dim=0)
    )
    answers_one = vgen.generate(model, tokenizer, harmful[:8], max_tokens=16, show_progress=False)
    answers_two = vgen.generate(split, split_tok, harmful[:8], max_tokens=16, show_progress=False)
    r["generate_same_answers_frac"] = sum(a == c for a, c in zip(answers_one, answers_two, strict=True)) / 8
    second = next((p for p in split.parameters() if p.device.index == 1 and p.dim() == 2), None)
    probe = second.detach().clone() if second is not None else None
    c = cut(split, two)
    result = evaluate(split, split, split_tok, prompts=harmful[:8], max_tokens=16, show_progress=False)
    c.undo()
    r["cut_edited_tensors"] = len(c.edited)
    r["evaluate_kl"] = result.kl
    r["undo_bit_exact_on_gpu1"] = bool(second is not None and torch.equal(second, probe))
    return r
