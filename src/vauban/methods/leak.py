"""The norm-preserving leak: how much of the direction the rescale of written vectors puts back,
and an edit that keeps every norm without putting any back.

vauban's norm-preserving cut maps each written vector ``x`` (a column of a writer along the
residual axis) to ``f·(x - a·Q Qᵀx)`` with ``f = ‖x‖ / ‖x - a·Q Qᵀx‖``. At full strength
(``a = 1``) the result is orthogonal to ``Q`` and the rescale cannot bring the direction back;
at partial strength (per-layer weights below 1, as ``optimize``'s kernels set) the component left,
``(1 - a)·Qᵀx``, is multiplied by ``f ≥ 1``: the cut removes less than its strength says. The
**leak** of an applied cut is the share of the direction left in its edited writers beyond what
the plain edit of the same strength leaves, ``(‖Q W'‖ - ‖(1 - a) Q W‖) / ‖Q W‖`` summed over
tensors (:func:`leak`).

The leak-free edit (:class:`LeakFree`) keeps the component along ``Q`` at exactly
``(1 - a)·Qᵀx`` and rescales only the rest: ``x' = (1 - a)·Q Qᵀx + g·(x - Q Qᵀx)`` with ``g``
chosen so that ``‖x'‖ = ‖x‖``. It is the same two-step arithmetic as every cut (a shift along
``Q`` by a given ``R``, then a rescale by ``g``), so it undoes bit for bit; at ``a = 1`` it is the
norm-preserving cut itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.errors import check_alpha
from ..edit.cutting import Cut, layer_weights, original_weights
from ..model import arch
from .protocol import GivenCut, Inputs, TensorPlan


def _along(edits: list[Any]) -> list[float]:
    """‖W Qᵀ‖ of each edited matrix as its weights are now."""
    return [float((e.param.detach().movedim(e.axis, -1).float() @ e.basis.float().T).norm()) for e in edits]


def leak(applied: Cut) -> dict[str, float]:
    """``{"left": share of ‖Q W‖ left after the edit, "plain": what a plain edit of the same
    strengths leaves, "leak": their difference}`` over the cut's weight matrices (the cut applied;
    the originals are read by undoing every cut for a moment, :func:`original_weights`)."""
    edits = [e for e in applied._edits if e.param.dim() >= 2]
    after = _along(edits)
    with original_weights(applied.model):
        before = _along(edits)
    total = max(sum(before), 1e-30)
    left = sum(after)
    plain = sum(abs(1 - e.alpha) * b for e, b in zip(edits, before, strict=True))
    return {"left": left / total, "plain": plain / total, "leak": (left - plain) / total}


def leak_free_plan(
    name: str, param: nn.Parameter, axis: int, basis: torch.Tensor, alpha: float
) -> TensorPlan:
    """The :class:`TensorPlan` of the leak-free norm-preserving edit of one tensor (module docstring):
    ``W - a·R' Q`` then ``× g`` with ``R' = R·(g - 1 + a)/(a·g)``, ``R = W Qᵀ``."""
    q = basis.float().cpu()
    view = param.detach().movedim(axis, -1).double().cpu()
    r = view @ q.double().T  # (..., k)
    along = r.square().sum(-1, keepdim=True)
    norm2 = view.square().sum(-1, keepdim=True)
    rest2 = (norm2 - along).clamp_min(0)
    target = (norm2 - (1 - alpha) ** 2 * along).clamp_min(0)
    g = torch.where(
        rest2 > 1e-30 * norm2.clamp_min(1e-300),
        (target / rest2.clamp_min(1e-300)).sqrt(),
        torch.ones_like(rest2),
    )
    removed = r * (g - 1 + alpha) / (alpha * g)
    return TensorPlan(name, param, axis, q, removed.float(), alpha, g.float())


class LeakFree:
    """Edit method ``norm_preserving_leak_free``: any plain cut's tensors (same direction, layers,
    strengths), each made norm-preserving without the leak."""

    name = "norm_preserving_leak_free"
    low_rank = False

    def make(self, model: nn.Module, tokenizer: Any, direction: Any, inputs: Inputs, **params: Any) -> Cut:
        """``params``: :func:`vauban.edit.cutting.cut`'s ``alpha``, ``layers``, ``attention``, ``mlp``."""
        n = arch.num_layers(model)
        layers = list(range(n)) if params.get("layers") is None else [int(i) for i in params["layers"]]
        template = Cut(
            model,
            direction,
            check_alpha(params.get("alpha", 1.0)),
            layers,
            False,
            attention_weights=layer_weights(params.get("attention"), n, "attention"),
            mlp_weights=layer_weights(params.get("mlp"), n, "MLP"),
        )
        seen: set[int] = set()
        found = []
        for name, param, axis, basis, alpha in template._targets():  # enumerated, not applied
            if id(param) in seen or alpha == 0.0:
                continue
            seen.add(id(param))
            found.append(leak_free_plan(name, param, axis, basis, alpha))
        settings = {"alpha": template.alpha}
        return GivenCut(model, found, self.name, settings, layers).apply()
