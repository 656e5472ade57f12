"""A PEFT LoRA adapter holding only the cut, for publishing an abliteration without a second
copy of the model.

The cut of a matrix ``W`` (residual axis first, ``Q`` the ``d × k`` orthonormal basis) is

    W' = W − α·Q·Qᵀ·W = W + B·A,   B = −α·Q   (d × k),   A = Qᵀ·W   (k × n),

a rank-``k`` update (``k = 1`` for one direction), which is what a LoRA adapter adds:
``ΔW = (lora_alpha / r)·B·A`` with ``r = lora_alpha = k``. Per-layer weighted cuts change only
``α`` per matrix, and post-norm families use the gain-adjusted basis the cut used
(:meth:`vauban.edit.cutting.Cut.tensor_edits`), so both are exact. A bias the cut edits
(``b' = b − α·Q·Qᵀ·b``) becomes ``lora_B``'s bias (PEFT's ``lora_bias``); an embedding table
``E`` (rows are tokens, the residual axis last) gets ``lora_embedding_A = (E·Q)ᵀ`` and
``lora_embedding_B = −α·Q``, and a tied output head the same update transposed
(``lora_A = Qᵀ``, ``lora_B = −α·E·Q``). The norm-preserving cut rescales every column after
the edit, which no low-rank update expresses: it is refused with a clear error.

``PeftModel.from_pretrained(base, adapter)`` then computes the cut model's logits to float
tolerance (``tests/test_formats.py``), and ``merge_and_unload()`` gives the merged weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ...core.errors import VaubanError
from ...edit.cutting import original_weights
from ...model.arch import hf
from ..verifying import check_weights
from .base import DTYPE_NAMES, ExportJob, need

NAME = "lora"
ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
_PREFIX = "base_model.model."


def write(job: ExportJob, folder: Path) -> dict[str, Any]:
    peft = need("peft", "lora")
    if job.quant is not None:
        raise VaubanError(f"a LoRA adapter is not quantized (got quant={job.quant!r}); drop --quant")
    applied = job.single_cut("LoRA")
    if applied.norm_preserving:
        raise VaubanError(
            "a norm-preserving cut rescales every column after the edit, which is not a "
            "low-rank update: export it with --format safetensors or gguf instead of lora"
        )
    dtype = job.float_dtype()
    edits = applied.tensor_edits()
    model = job.model
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    tensors: dict[str, torch.Tensor] = {}
    targets: list[str] = []
    fan_in_fan_out = False
    with torch.no_grad(), original_weights(model):
        for edit in edits:
            module_name, kind = edit.name.rsplit(".", 1)
            module = modules.get(module_name)
            w = params[edit.name].detach()
            q = edit.basis.to(w.device)  # (k, d), rows orthonormal
            given = None if edit.removed is None else edit.removed.to(w.device).float()  # an edit method's R
            if kind == "bias":
                along = q @ w.float() if given is None else given
                tensors[f"{_PREFIX}{module_name}.lora_B.bias"] = -edit.alpha * (q.T @ along)
                continue
            if w.dim() != 2 or module is None:
                raise VaubanError(
                    f"{edit.name} is not a 2-D weight of a module (fused experts?); "
                    "PEFT adapters cover linear and embedding layers: export "
                    "--format safetensors or gguf"
                )
            removed = w.float().movedim(edit.axis, -1) @ q.T if given is None else given  # (n, k): Aᵀ
            b = -edit.alpha * q.T  # (d, k)
            key = f"{_PREFIX}{module_name}"
            if isinstance(module, nn.Embedding):
                tensors[f"{key}.lora_embedding_A"] = removed.T
                tensors[f"{key}.lora_embedding_B"] = b
                tensors.update(_tied_head(model, module, removed, edit.alpha, q, targets))
            else:
                fan_in_fan_out |= type(module).__name__ == "Conv1D"  # GPT-2 stores (in, out)
                tensors[f"{key}.lora_A.weight"] = removed.T
                tensors[f"{key}.lora_B.weight"] = b
            targets.append(module_name)
    bias = any(k.endswith("lora_B.bias") for k in tensors)
    if bias and any("lora_embedding" in k for k in tensors):
        raise VaubanError(
            "this cut edits biases and embeddings together, which one PEFT adapter cannot "
            "hold (lora_bias does not apply to embeddings): cut without embeddings, or "
            "export --format safetensors"
        )
    if bias:  # PEFT's lora_bias gives every adapted linear layer a B bias: zero where not cut
        for name in targets:
            key = f"{_PREFIX}{name}.lora_B"
            if f"{key}.weight" in tensors and f"{key}.bias" not in tensors:
                tensors[f"{key}.bias"] = torch.zeros(tensors[f"{key}.weight"].shape[0])
    rank = int(applied.direction.shape[1])
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=sorted(set(targets)),
        lora_dropout=0.0,
        bias="none",
        lora_bias=bias,
        fan_in_fan_out=fan_in_fan_out,
        task_type="CAUSAL_LM",
        init_lora_weights=False,
        base_model_name_or_path=_base_name(job),
    )
    config.save_pretrained(str(folder))
    save_file(
        {k: v.to(dtype).contiguous().cpu() for k, v in tensors.items()},
        str(folder / ADAPTER_FILE),
        metadata={"format": "pt"},
    )
    job.tokenizer.save_pretrained(folder)
    return {
        "dtype": DTYPE_NAMES.get(dtype, str(dtype)),
        "quantization": None,
        "lora_rank": rank,
        "adapted_modules": len(set(targets)),
    }


def _tied_head(
    model: nn.Module,
    embedding: nn.Embedding,
    removed: torch.Tensor,
    alpha: float,
    q: torch.Tensor,
    targets: list[str],
) -> dict[str, torch.Tensor]:
    """The output head that shares the embedding's weight changes with it: ``W' = W − α·W·Q·Qᵀ``
    (rows are tokens), ``lora_A = Qᵀ`` and ``lora_B = −α·W·Q``."""
    head = hf(model).get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or head.weight is not embedding.weight:
        return {}
    name = next(n for n, m in model.named_modules() if m is head)
    targets.append(name)
    return {f"{_PREFIX}{name}.lora_A.weight": q.clone(), f"{_PREFIX}{name}.lora_B.weight": -alpha * removed}


def _base_name(job: ExportJob) -> str:
    from .card import source_facts

    facts = source_facts(job.source)
    if "base_model" in facts:
        return facts["base_model"]
    if job.source is not None:
        return job.source.origin or job.source.label
    return str(getattr(job.model.config, "_name_or_path", "") or "")


def check(folder: Path) -> int:
    if not (folder / ADAPTER_FILE).is_file():
        raise VaubanError(f"{folder} has no {ADAPTER_FILE}; re-export it")
    try:
        json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        raise VaubanError(f"{folder / CONFIG_FILE} is missing or not JSON; re-export it") from None
    return check_weights(folder)
