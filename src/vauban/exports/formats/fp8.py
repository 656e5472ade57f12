"""``--format safetensors --quant fp8``: a model loaded from a block-FP8 checkpoint (DeepSeek V3,
Qwen3-FP8), cut in memory, written back as block FP8 with the source's ``quantization_config``.

vauban loads such a checkpoint as float (transformers dequantizes it exactly on a CPU) and cuts
the float weights. Here the source's files are copied byte for byte and only the tensors the cut
edited are written again: each edited weight the source stored in FP8 is quantized from its cut
float value with fresh per-block scales (:mod:`vauban.model.block_fp8`), any other edited tensor
is cast to its stored dtype. The checkpoint tensors behind each edited parameter are found by
transformers' own loading renames (:func:`vauban.model.checkpoint.sources`: experts stored one
tensor each are written expert by expert). The same tensors as ``vauban stream`` on that source
with the same cut.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ...core.errors import VaubanError
from ...edit.cutting import active_cuts
from ...model import block_fp8
from ...model.checkpoint import sources
from ..exporting import DIRECTION_FILE
from ..streaming import CheckpointCopy, tensor_table, weight_files
from ..verifying import RECORD_FILE
from .base import ExportJob

DTYPES = {"F8_E4M3": block_fp8.FP8, "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def _fp8_source(job: ExportJob) -> tuple[Path, tuple[int, int], bool]:
    """The block-FP8 checkpoint directory the model was loaded from, its block and ``ue8m0``."""
    source = job.source
    origin = Path(source.origin) if source is not None and source.origin else None
    if source is None or source.kind != "hf" or origin is None or not (origin / "config.json").is_file():
        raise VaubanError(
            "--quant fp8 writes the cut back into a copy of the block-FP8 checkpoint the model was "
            "loaded from; this model was not loaded from a local checkpoint directory: drop --quant"
        )
    quantization = json.loads((origin / "config.json").read_text()).get("quantization_config")
    block = block_fp8.block_size(quantization)
    if block is None:
        method = (quantization or {}).get("quant_method", "float")
        raise VaubanError(
            f"--quant fp8 keeps a block-FP8 source's format; {origin} is {method}: drop --quant"
        )
    return origin, block, (quantization or {}).get("scale_fmt") == "ue8m0"


def _natural(name: str) -> list[Any]:
    """Sort key putting ``experts.2`` before ``experts.10``, as transformers stacks them."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split(".")]


def _piece(value: torch.Tensor, ops: tuple[Any, ...], index: int, name: str) -> torch.Tensor:
    """The part of a parameter's value that checkpoint tensor ``name`` holds."""
    if not ops:
        return value
    if len(ops) == 1 and type(ops[0]).__name__ == "MergeModulelist" and ops[0].dim == 0:
        return value[index]
    kinds = ", ".join(type(op).__name__ for op in ops)
    raise VaubanError(f"{name} is loaded through {kinds}, which --quant fp8 cannot write back: drop --quant")


def write_block_fp8(job: ExportJob, folder: Path) -> dict[str, Any]:
    """Fill ``folder`` with the source checkpoint, the cut's tensors written again in its format."""
    origin, block, ue8m0 = _fp8_source(job)
    cuts = active_cuts(job.model)
    if len(cuts) > 1:
        raise VaubanError(f"--quant fp8 writes one cut's tensors (found {len(cuts)} cuts applied)")
    tables = {shard: tensor_table(shard) for shard in weight_files(origin)}
    copy = CheckpointCopy(folder, tables, {n: shard for shard, (_, t) in tables.items() for n in t})
    for item in sorted(origin.iterdir()):
        if item.is_file() and item.name not in (RECORD_FILE, DIRECTION_FILE):
            shutil.copyfile(item, folder / item.name)
    found = sources(job.model, list(copy.where))
    params = dict(job.model.named_parameters())
    errors: list[float] = []
    for edit in cuts[0].tensor_edits() if cuts else []:
        value = params[edit.name].detach().float().cpu()
        stored = sorted(found.get(edit.name, []), key=lambda hit: _natural(hit[0]))
        if not stored:
            raise VaubanError(f"{origin} holds no tensor for {edit.name}; drop --quant to export float")
        for index, (name, ops) in enumerate(stored):
            part = _piece(value, ops, index, name)
            dtype = DTYPES[copy.tables[copy.where[name]][1][name]["dtype"]]
            scales = block_fp8.scale_name(name)
            if dtype == block_fp8.FP8 and scales in copy.where:
                q, scale = block_fp8.quantize(part, block, copy.read(scales).dtype, ue8m0=ue8m0)
                copy.write(name, q)
                copy.write(scales, scale)
                back = block_fp8.dequantize(q, scale, block)
                errors.append(float((back - part).norm() / part.norm().clamp_min(1e-30)))
            else:
                copy.write(name, part.to(dtype).contiguous())
    job.tokenizer.save_pretrained(folder)
    size = f"{block[0]}x{block[1]}"
    return {
        "dtype": "float8_e4m3fn",
        "quantization": f"block FP8 source ({size}), {len(errors)} edited weights re-quantized",
        "fp8_requantized_tensors": len(errors),
        "fp8_requantization_error_max": max(errors, default=0.0),
    }
