"""Block FP8 weights as DeepSeek V3 and Qwen3-FP8 store them: ``float8_e4m3fn`` values and, per
``weight_block_size`` block (128x128) of the last two axes, one ``weight_scale_inv`` such that the
weight is ``fp8 × scale_inv`` (the blocks at the right and bottom edges may be partial).

:func:`dequantize` is transformers' CPU dequantization (exact, in float32); :func:`quantize` is
its quantizer (``Fp8Quantize``: ``scale_inv = amax / 448`` per block, the values rounded to
e4m3; ``scale_fmt = "ue8m0"`` rounds ``scale_inv`` up to a power of two first), extended to
partial blocks, so an edited weight is written back in the checkpoint's own format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.errors import VaubanError

FP8 = torch.float8_e4m3fn
_MAX = torch.finfo(FP8).max  # 448


def scale_name(name: str) -> str:
    """The checkpoint name of a weight's block scales (``x.weight`` → ``x.weight_scale_inv``)."""
    return f"{name}_scale_inv"


def block_size(quantization: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """The ``(rows, cols)`` block of a block-FP8 ``quantization_config``; ``None`` if it is not one."""
    if not quantization or quantization.get("quant_method") != "fp8":
        return None
    block = quantization.get("weight_block_size")
    if not block or len(block) != 2:
        raise VaubanError(
            f"fp8 quantization_config without a 2-D weight_block_size ({block!r}): only block FP8 "
            "(DeepSeek V3 / Qwen3-FP8 style) is read; load the model with vauban and cut it in memory"
        )
    return int(block[0]), int(block[1])


def _blocks(w: torch.Tensor, block: Sequence[int]) -> torch.Tensor:
    """``w`` zero-padded to whole blocks, as ``(..., row blocks, rows, col blocks, cols)``."""
    rows, cols = w.shape[-2:]
    pad_r, pad_c = -rows % block[0], -cols % block[1]
    padded = torch.nn.functional.pad(w, (0, pad_c, 0, pad_r))
    r, c = padded.shape[-2] // block[0], padded.shape[-1] // block[1]
    return padded.reshape(*w.shape[:-2], r, block[0], c, block[1])


def dequantize(q: torch.Tensor, scale_inv: torch.Tensor, block: Sequence[int]) -> torch.Tensor:
    """The float32 weight ``q × scale_inv`` (each scale over its block)."""
    rows, cols = q.shape[-2:]
    scale = scale_inv.float().repeat_interleave(block[0], -2).repeat_interleave(block[1], -1)
    return q.float() * scale[..., :rows, :cols]


def quantize(
    w: torch.Tensor, block: Sequence[int], scale_dtype: torch.dtype = torch.float32, ue8m0: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(float8_e4m3fn weight, scale_inv per block)`` of the float weight ``w``."""
    tiles = _blocks(w.float(), block)
    amax = tiles.abs().amax(dim=(-3, -1))
    scales = torch.where(
        amax > 0, _MAX / amax.clamp_min(torch.finfo(torch.float32).tiny), torch.ones_like(amax)
    )
    inv = 1.0 / scales
    if ue8m0:
        inv = torch.pow(2.0, torch.ceil(torch.log2(inv.clamp_min(torch.finfo(torch.float32).tiny))))
        scales = 1.0 / inv
    q = (tiles * scales[..., :, None, :, None]).clamp(-_MAX, _MAX).to(FP8)
    padded = q.reshape(*w.shape[:-2], tiles.shape[-4] * block[0], tiles.shape[-2] * block[1])
    return padded[..., : w.shape[-2], : w.shape[-1]].contiguous(), inv.to(scale_dtype)
