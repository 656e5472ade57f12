"""One protocol for edit methods: (model, prompt sets, measured direction) → an exact, reversible edit.

An edit method is any object with a ``name``, a ``low_rank`` flag and ``make(model, tokenizer,
direction, inputs, **params)`` returning an applied :class:`vauban.edit.cutting.Cut`: the value that
``abliterate``, ``optimize``, ``evaluate``, exports and :func:`vauban.edit.cutting.original_weights`
already handle, undone bit for bit by ``.undo()``. Today's variants (plain, projected,
norm-preserving, per-layer, subspace, kernels) return a plain :class:`~vauban.edit.cutting.Cut`; the
methods whose edit is not ``W - a·Q Qᵀ W`` return a :class:`GivenCut`, whose every tensor edit is
``W - a·R Q`` along the residual axis with ``R`` computed by the method (then an optional rescale
of each written vector), applied and undone by the same arithmetic and fix-ups as every cut
(:mod:`vauban.edit.editing`). Without the rescale the change of each tensor is ``-a·Qᵀ Rᵀ``: rank ``k``
(the rows of ``Q``), exported as a LoRA pair by :func:`low_rank_factors`.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..core.errors import VaubanError
from ..edit.cutting import _ACTIVE, Cut, TensorEdit
from ..edit.editing import (
    Edit,
    Work,
    check_float,
    checksum,
    compute_dtype,
    pieces,
    reapply_edit,
    touched,
    unchanged,
)
from ..model import arch
from ..text.formatting import Formatting


@dataclass(frozen=True)
class Inputs:
    """The prompt sets a method may fit its edit on (never the prompts it is reported on)."""

    harmful: Sequence[str]
    harmless: Sequence[str]
    formatting: Formatting | None = None
    batch_size: int | None = None


class EditMethod(Protocol):
    """Turns a model, prompt sets and a measured direction into an applied, reversible cut."""

    @property
    def name(self) -> str: ...

    @property
    def low_rank(self) -> bool:  # whether every tensor's change is a rank-k product (LoRA-exportable)
        ...

    def make(
        self, model: nn.Module, tokenizer: Any, direction: Any, inputs: Inputs, **params: Any
    ) -> Cut: ...


@dataclass
class TensorPlan:
    """One tensor's edit: ``W - alpha·R Q`` along ``axis`` (residual axis last in the view), then
    each written vector times ``factors`` (``(..., 1)``) when given."""

    name: str
    param: nn.Parameter
    axis: int
    basis: torch.Tensor  # Q, (k, d) orthonormal rows
    removed: torch.Tensor  # R, (..., k), residual axis last
    alpha: float = 1.0
    factors: torch.Tensor | None = field(default=None, repr=False)


def apply_plan(plan: TensorPlan) -> Edit:
    """Apply one :class:`TensorPlan`, keeping what undo needs to restore every bit."""
    param = plan.param
    check_float(plan.name, param)
    with torch.no_grad():
        fingerprint = checksum(param)
        cd = compute_dtype(param)
        q = plan.basis.to(device=param.device, dtype=cd)
        removed = plan.removed.to(device=param.device, dtype=cd)
        factors = None if plan.factors is None else plan.factors.to(device=param.device, dtype=cd)
        stacked = param.dim() >= 3
        index_parts, value_parts, work = [], [], None
        for i, (offset, piece) in enumerate(pieces(param.data)):
            view = piece.movedim(plan.axis, -1)
            work = work or Work(view, cd)
            r = removed[i] if stacked else removed
            f = None if factors is None else factors[i] if stacked else factors
            new = work.forward(view, q, r, f, plan.alpha)
            index = work.misses(work.inverse(new, q, r, f, plan.alpha), view, plan.axis)
            value_parts.append(piece.reshape(-1)[index])
            index_parts.append(index.add_(offset))
            view.copy_(new)
        touched(param)
        return Edit(
            plan.name,
            param,
            plan.axis,
            plan.alpha,
            q,
            removed,
            factors,
            torch.cat(index_parts),
            torch.cat(value_parts),
            fingerprint,
        )


class GivenCut(Cut):
    """A :class:`~vauban.edit.cutting.Cut` whose tensor edits a method computed (:class:`TensorPlan`):
    stacks, undoes and re-applies like every cut."""

    def __init__(
        self,
        model: nn.Module,
        plans: Sequence[TensorPlan],
        method: str,
        settings: dict[str, Any],
        layers: Sequence[int],
    ) -> None:
        self._model = weakref.ref(model)
        self._plans = list(plans)
        self.method, self.settings = method, dict(settings)
        n = arch.num_layers(model)
        self.direction = torch.stack([p.basis for p in plans[:1]]) if plans else torch.zeros(0)
        self.alpha, self.layers, self.embeddings = 1.0, list(layers), False
        self.attention_weights = self.mlp_weights = (1.0,) * n
        self.norm_preserving = any(p.factors is not None for p in plans)
        self._edits: list[Edit] = []
        self.applied = False

    def record(self) -> dict[str, Any]:
        return {
            "method": self.method,
            **self.settings,
            "layers": self.layers,
            "edited_tensors": len(self._plans),
            "rank": rank(self),
        }

    def tensor_edits(self) -> list[TensorEdit]:
        """Every tensor's edit with its ``R`` (and rescale factors): what exporters redo elsewhere."""
        return [
            TensorEdit(
                p.name,
                p.axis,
                p.alpha,
                p.basis.float().cpu(),
                p.factors is not None,
                p.removed.float().cpu(),
                None if p.factors is None else p.factors.float().cpu(),
            )
            for p in self._plans
        ]

    def apply(self) -> GivenCut:
        if self.applied:
            raise VaubanError("this cut is already applied")
        if self._edits and unchanged(self._edits):
            for edit in self._edits:
                reapply_edit(edit)
        else:
            self._edits = [apply_plan(p) for p in self._plans]
        self.applied = True
        _ACTIVE.setdefault(self.model, []).append(self)
        return self

    def __repr__(self) -> str:
        state = "applied" if self.applied else "undone"
        return f"GivenCut({self.method}, tensors={len(self._plans)}, {state})"


def rank(applied: Cut) -> int | None:
    """The rank of every tensor's change (``k``), or ``None`` when a rescale makes it full rank."""
    edits = applied._edits
    if not edits or any(e.factors is not None for e in edits):
        return None
    return max(int(e.basis.shape[0]) for e in edits)


def low_rank_factors(applied: Cut) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Parameter name → ``(B, A)`` with ``W' = W + B A`` exactly in real arithmetic (float32): the
    LoRA pair of each edited matrix (``B`` is ``(out, k)``, ``A`` is ``(k, in)``); an error for
    rescaled (norm-preserving) edits, which are not low-rank."""
    if rank(applied) is None:
        raise VaubanError("this edit rescales written vectors, so it is not low-rank; export safetensors")
    out = {}
    for e in applied._edits:
        if e.param.dim() != 2:
            continue  # biases and fused experts: exported as full tensors
        q, r = e.basis.float().cpu(), e.removed.float().cpu()  # (k, d), (in, k) when axis 0
        if e.axis % 2 == 0:  # (d, in): ΔW = -a Qᵀ Rᵀ
            out[e.name] = (-e.alpha * q.T, r.T.contiguous())
        else:  # (rows, d): ΔW = -a R Q
            out[e.name] = (-e.alpha * r, q.contiguous())
    return out
