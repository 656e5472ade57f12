"""The transformers directory: safetensors weights in the source's dtype, config, tokenizer.

It loads with ``AutoModelForCausalLM.from_pretrained`` and with ``mlx_lm.load`` (the config
carries the legacy RoPE keys mlx_lm reads). Large models are sharded the way transformers'
``save_pretrained`` shards them, with the usual ``model.safetensors.index.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.errors import VaubanError
from ..verifying import check_weights
from .base import DTYPE_NAMES, ExportJob, save_transformers

NAME = "safetensors"


def write(job: ExportJob, folder: Path) -> dict[str, Any]:
    if job.quant is not None:
        raise VaubanError(
            f"the safetensors format is not quantized (got quant={job.quant!r}); "
            "use --format gguf or --format mlx for a quantized export"
        )
    dtype = job.float_dtype()
    save_transformers(job.model, job.tokenizer, folder, dtype)
    if not list(folder.glob("model*.safetensors")):
        raise VaubanError(f"export to {folder} produced no weight files")
    return {"dtype": DTYPE_NAMES.get(dtype, str(dtype)), "quantization": None}


def check(folder: Path) -> int:
    return check_weights(folder)
