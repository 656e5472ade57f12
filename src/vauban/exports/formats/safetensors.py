"""The transformers directory: safetensors weights in the source's dtype, config, tokenizer
(``quant="fp8"``: a block-FP8 source's checkpoint with the cut's tensors re-quantized,
:mod:`vauban.exports.formats.fp8`).

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


def check_quant(quant: str) -> None:
    """``fp8`` is the one quantization: a block-FP8 source written back as block FP8."""
    if quant.lower() != "fp8":
        raise VaubanError(
            f"the safetensors format is not quantized (got quant={quant!r}) but for --quant fp8 "
            "(a block-FP8 source kept block FP8); use --format gguf or --format mlx for a quantized export"
        )


def write(job: ExportJob, folder: Path) -> dict[str, Any]:
    if job.quant is not None:
        check_quant(job.quant)
        from .fp8 import write_block_fp8

        return write_block_fp8(job, folder)
    dtype = job.float_dtype()
    save_transformers(job.model, job.tokenizer, folder, dtype)
    if not list(folder.glob("model*.safetensors")):
        raise VaubanError(f"export to {folder} produced no weight files")
    return {"dtype": DTYPE_NAMES.get(dtype, str(dtype)), "quantization": None}


def check(folder: Path) -> int:
    return check_weights(folder)
