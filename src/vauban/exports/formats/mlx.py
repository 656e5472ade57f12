"""An mlx-lm directory, quantized by mlx-lm's own conversion (``mlx_lm.convert``).

The cut model is written as a transformers directory in a scratch folder, then converted by
``mlx_lm.convert`` (affine quantization, ``quant`` bits per weight in groups of 64, as
mlx-community's checkpoints are), so the result is exactly what mlx-lm itself would make of the
abliterated model: ``mlx_lm.load`` + ``mlx_lm.generate`` answer from it. ``quant=None`` keeps
float weights; from an MLX-quantized source the source's own bits and group size are the
default. Runs wherever mlx runs (Apple Silicon, or ``mlx[cpu]`` on Linux).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

from ...core.errors import VaubanError
from ..verifying import check_weights
from .base import DTYPE_NAMES, ExportJob, need, save_transformers

NAME = "mlx"
BITS = (2, 3, 4, 5, 6, 8)
GROUP_SIZE = 64


def parse_bits(quant: str | int | None) -> int | None:
    """``"4"``, ``4``, ``"q4"``, ``"4bit"`` → 4; ``None`` → no quantization."""
    if quant is None:
        return None
    text = str(quant).lower().removeprefix("q").removesuffix("bit").removesuffix("-")
    if not text.isdigit() or int(text) not in BITS:
        raise VaubanError(f"MLX quantization {quant!r} is not one of {BITS} bits; e.g. --quant 4")
    return int(text)


check_quant = parse_bits


def _source_quantization(job: ExportJob) -> dict[str, int] | None:
    source = job.source
    if source is None or source.kind.removeprefix("hub/") != "mlx" or source.origin is None:
        return None
    try:
        quant = json.loads((Path(source.origin) / "config.json").read_text()).get("quantization")
    except (OSError, ValueError):
        return None
    if isinstance(quant, dict) and "bits" in quant and "group_size" in quant:
        return {"bits": int(quant["bits"]), "group_size": int(quant["group_size"])}
    return None


def write(job: ExportJob, folder: Path) -> dict[str, Any]:
    need("mlx.core", "mlx")
    convert = need("mlx_lm.convert", "mlx").convert
    bits, group = parse_bits(job.quant), GROUP_SIZE
    inherited = _source_quantization(job) if job.quant is None else None
    if inherited is not None:
        bits, group = inherited["bits"], inherited["group_size"]
    dtype = job.float_dtype()
    scratch, converted = folder / ".hf-scratch", folder / ".mlx-scratch"
    try:
        save_transformers(job.model, job.tokenizer, scratch, dtype)
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet):  # mlx_lm prints progress with print()
            convert(
                hf_path=str(scratch),
                mlx_path=str(converted),
                quantize=bits is not None,
                q_bits=bits,
                q_group_size=group if bits is not None else None,
                dtype=DTYPE_NAMES[dtype],
            )
        for item in converted.iterdir():
            if item.name != "README.md":  # vauban writes its own model card
                shutil.move(str(item), folder / item.name)
    except VaubanError:
        raise
    except Exception as err:  # mlx_lm raises ValueError, KeyError, ... for unsupported models
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise VaubanError(
            f"mlx_lm could not convert this model ({first}); export --format safetensors instead"
        ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(converted, ignore_errors=True)
    return {
        "dtype": DTYPE_NAMES[dtype],
        "quantization": None if bits is None else f"{bits}-bit affine, group size {group}",
    }


def check(folder: Path) -> int:
    return check_weights(folder)
