"""Fused expert tensors are cut expert by expert: each expert gets the formula's bits (the
whole-tensor computation agrees to float rounding: its batched matmul sums in another order), the
undo is exact, and the streamed cut of a checkpoint computes the same (peak memory:
benchmarks/moe_memory.py)."""

from __future__ import annotations

import pytest
import torch

from conftest import build_model
from vauban import cut
from vauban.edit.editing import edited, pieces
from vauban.model import arch


def formula(w: torch.Tensor, axis: int, d: torch.Tensor, alpha: float) -> torch.Tensor:
    """The cut's formula, (W + (-a)·(R Q)) in float32 rounded back, on a matrix or a stack."""
    view = w.movedim(axis, -1)
    q = d[None].float()
    removed = view.float() @ q.T
    return (view.float() + (-alpha) * (removed @ q)).to(w.dtype).movedim(-1, axis)


@pytest.mark.parametrize("model_type", ["qwen3_moe", "gpt_oss"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_expert_by_expert_equals_the_whole_tensor_formula_and_undoes(model_type, dtype):
    model = build_model(model_type, dtype=dtype)
    experts = [w for w in arch.residual_writers(model) if w.weight.dim() == 3]
    assert experts and all(len(pieces(w.weight)) == w.weight.shape[0] for w in experts)
    d = torch.randn(arch.d_model(model), generator=torch.Generator().manual_seed(3))
    d = d / d.norm()
    original = {id(w.weight): w.weight.detach().clone() for w in experts}
    applied = cut(model, d, alpha=1.3)
    d = applied.direction[0, 0]  # the unit vector the cut used (normalized in float32)
    expected = {
        id(w.weight): torch.stack([formula(e, w.axis, d, 1.3) for e in original[id(w.weight)]])
        for w in experts
    }
    for w in experts:
        assert torch.equal(w.weight, expected[id(w.weight)]), w.name
        assert torch.equal(edited(original[id(w.weight)], w.axis, d[None], 1.3), expected[id(w.weight)])
        whole = formula(original[id(w.weight)], w.axis, d, 1.3)
        assert torch.allclose(
            w.weight.float(),
            whole.float(),
            rtol=1e-2 if dtype == torch.bfloat16 else 1e-6,
            atol=1e-2 if dtype == torch.bfloat16 else 1e-7,
        )
    assert 0 < applied.undo_bytes < sum(w.weight.numel() * w.weight.element_size() for w in experts)
    applied.undo()
    for w in experts:
        assert torch.equal(w.weight.view(torch.uint8), original[id(w.weight)].view(torch.uint8)), w.name
