"""Direction vectors as the edit reads them: unit vectors and unit rows, checked."""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import VaubanError


def unit_vector(direction: Any, d_model: int) -> torch.Tensor:
    """The direction as a float32 unit vector of size ``d_model``, or a clear error."""
    vec = direction.cut_vectors() if hasattr(direction, "cut_vectors") else direction
    if not isinstance(vec, torch.Tensor):
        raise VaubanError(f"direction must be a DirectionResult or a tensor, got {type(vec).__name__}")
    if not vec.dtype.is_floating_point:
        raise VaubanError(f"direction must be a floating-point tensor, got {vec.dtype}; measure it again")
    vec = vec.detach().float().cpu().reshape(-1)
    if vec.numel() != d_model:
        raise VaubanError(
            f"direction has size {vec.numel()} but the model's hidden size is {d_model}; "
            "it was measured on a different model: measure it on this one"
        )
    if not torch.isfinite(vec).all():
        raise VaubanError("direction contains NaN or infinite values; measure it again")
    norm = vec.norm()
    if norm < 1e-12:
        raise VaubanError("direction is the zero vector; measure it again")
    return vec / norm


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm (computed in float64, returned as float32)."""
    x = x.double()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).float()
