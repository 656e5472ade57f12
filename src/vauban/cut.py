"""Cut the direction out of the weights, reversibly and bit-exactly.

Every matrix ``W`` that writes into the residual stream becomes ``W - α·v·(vᵀW)``: its outputs
lose ``α`` times their component along the unit vector ``v``. Usually ``v`` is the direction
``d`` itself; when a norm with per-channel gain ``g`` sits between the writer and the residual
add (Gemma 2/3, OLMo 2 post-norms), ``v = normalize(g ⊙ d)``, because ``dᵀ(g ⊙ y) = (g ⊙ d)ᵀy``:
making ``y`` orthogonal to ``g ⊙ d`` makes the *normalized* output orthogonal to ``d`` (exactly
for ``α = 1``; for other ``α`` the normalization's rescaling makes the removal approximate).

A :class:`Cut` keeps what it removed (``r = vᵀW``, one vector per matrix) so it can be undone.
Float rounding makes ``(W - x) + x`` differ from ``W`` in the last bit for a few elements, so
the cut also keeps those few original values (found by replaying the undo at apply time):
undo restores the original bits exactly while storing far less than a copy of the weights.
Evaluation and optimization therefore need one model in memory.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import arch
from .errors import VaubanError
from .results import DirectionResult, check_alpha, unit_vector

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16,
             torch.float32: torch.int32, torch.float64: torch.int64}


@dataclass
class _Edit:
    """One edited tensor: its residual axis, the vector removed along it, and the fix-ups."""

    name: str
    param: nn.Parameter
    axis: int
    vec: torch.Tensor  # unit vector v in residual space (compute dtype, param device)
    removed: torch.Tensor  # r = vᵀW (compute dtype)
    patch_index: torch.Tensor  # flat indices where the replayed undo misses the original bits
    patch_values: torch.Tensor  # the original values there
    fingerprint: float = 0.0  # of the original weights, checked when re-applying a cached edit


def _compute_dtype(param: torch.Tensor) -> torch.dtype:
    """float32 for 16-bit weights; float64 for float32 weights (float32 on MPS, which lacks it).

    Any precision gives an exact undo (the fix-ups cover every miss); a wider one keeps the
    fix-ups few.
    """
    if param.dtype in (torch.float16, torch.bfloat16) or param.device.type == "mps":
        return torch.float32
    return torch.float64


def _fingerprint(param: torch.Tensor) -> float:
    """A cheap checksum of a strided sample, to notice weights changed behind a cut's back."""
    return float(param.detach().reshape(-1)[::4099].double().sum())


def _shifted(w: torch.Tensor, vec: torch.Tensor, removed: torch.Tensor, scale: float) -> torch.Tensor:
    """``w + scale·v⊗r`` with the residual axis last, rounded back to ``w``'s dtype."""
    return (w.to(vec.dtype) + scale * removed.unsqueeze(-1) * vec).to(w.dtype)


def _apply_edit(
    name: str, param: nn.Parameter, axis: int, vec: torch.Tensor, alpha: float
) -> _Edit:
    if param.dtype not in _FLOAT_DTYPES:
        raise VaubanError(
            f"{name} has {param.dtype} weights: a cut needs float weights; load the model with "
            "vauban.load (it dequantizes) instead of cutting quantized modules"
        )
    with torch.no_grad():
        fingerprint = _fingerprint(param)
        view = param.data.movedim(axis, -1)
        cd = _compute_dtype(param)
        v = vec.to(device=param.device, dtype=cd)
        removed = view.to(cd) @ v
        new = _shifted(view, v, removed, -alpha)
        replay = _shifted(new, v, removed, alpha)
        ints = _INT_VIEW[param.dtype]
        miss = (replay.view(ints) != view.view(ints)).movedim(-1, axis).reshape(-1)
        miss = miss.nonzero().squeeze(-1)
        values = param.data.reshape(-1)[miss].clone()
        param.data.copy_(new.movedim(-1, axis))
    return _Edit(name, param, axis, v, removed, miss, values, fingerprint)


def _shift_in_place(edit: _Edit, scale: float) -> None:
    """``W += scale·v⊗r`` for a cached edit: ``-alpha`` re-applies it, ``+alpha`` undoes it."""
    with torch.no_grad():
        view = edit.param.data.movedim(edit.axis, -1)
        edit.param.data.copy_(_shifted(view, edit.vec, edit.removed, scale).movedim(-1, edit.axis))


def _undo_edit(edit: _Edit, alpha: float) -> None:
    _shift_in_place(edit, alpha)
    with torch.no_grad():
        edit.param.data.view(-1)[edit.patch_index] = edit.patch_values


_ACTIVE: weakref.WeakKeyDictionary[nn.Module, list[Cut]] = weakref.WeakKeyDictionary()


class Cut:
    """A reversible edit of one model's weights; also a context manager that undoes on exit.

    Cuts on one model stack: undo them in reverse order (``with`` blocks do this naturally).
    """

    def __init__(
        self,
        model: nn.Module,
        direction: torch.Tensor,
        alpha: float,
        layers: list[int],
        embeddings: bool,
    ) -> None:
        self._model = weakref.ref(model)
        self.direction = direction
        self.alpha = alpha
        self.layers = layers
        self.embeddings = embeddings
        self._edits: list[_Edit] = []
        self.applied = False

    @property
    def model(self) -> nn.Module:
        model = self._model()
        if model is None:
            raise VaubanError("the model this cut was applied to no longer exists")
        return model

    @property
    def edited(self) -> list[str]:
        """Names of the edited tensors."""
        return [e.name for e in self._edits]

    def _targets(self) -> Iterator[tuple[str, nn.Parameter, int, torch.Tensor]]:
        model = self.model
        d = self.direction
        device = next(model.parameters()).device
        for w in arch.residual_writers(model, self.layers):
            vec = d
            if w.post_norm is not None:
                gain = arch.norm_gain(w.post_norm, d.numel(), device).cpu()
                vec = gain * d
                vec = vec / vec.norm()
            yield f"{w.name}.weight", w.weight, w.axis, vec
            if w.bias is not None:
                yield f"{w.name}.bias", w.bias, -1, vec
        if self.embeddings:
            for i, emb in enumerate(arch.embeddings(model)):
                yield f"embeddings.{i}", emb.weight, -1, d

    def apply(self) -> Cut:
        """Apply (or re-apply after :meth:`undo`) the edit."""
        if self.applied:
            raise VaubanError("this cut is already applied")
        if self._edits and all(_fingerprint(e.param) == e.fingerprint for e in self._edits):
            for edit in self._edits:  # re-applying after undo: the weights are the originals
                _shift_in_place(edit, -self.alpha)
        else:
            seen: set[int] = set()
            edits = []
            for name, param, axis, vec in self._targets():
                if id(param) in seen:  # a parameter shared by two paths is edited once
                    continue
                seen.add(id(param))
                edits.append(_apply_edit(name, param, axis, vec, self.alpha))
            self._edits = edits
        self.applied = True
        _ACTIVE.setdefault(self.model, []).append(self)
        return self

    def undo(self) -> None:
        """Restore the weights exactly as they were before :meth:`apply`."""
        if not self.applied:
            raise VaubanError("this cut is not applied; nothing to undo")
        stack = _ACTIVE.get(self.model, [])
        if stack and stack[-1] is not self:
            raise VaubanError("a later cut on this model is still applied; undo that one first")
        for edit in reversed(self._edits):
            _undo_edit(edit, self.alpha)
        self.applied = False
        stack.pop()

    def __enter__(self) -> Cut:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.applied:
            self.undo()

    def __repr__(self) -> str:
        state = "applied" if self.applied else "undone"
        tensors = len(self._edits)
        return f"Cut(alpha={self.alpha}, layers={len(self.layers)}, tensors={tensors}, {state})"


def cut(
    model: nn.Module,
    direction: DirectionResult | torch.Tensor,
    *,
    alpha: float = 1.0,
    layers: Sequence[int] | None = None,
    embeddings: bool = False,
) -> Cut:
    """Remove ``alpha`` × the direction from every residual writer of ``layers`` (default: all).

    ``embeddings=True`` also orthogonalizes the token (and position) embeddings; with tied
    embeddings that edits the LM head too. The edit happens in place and is returned as an
    applied :class:`Cut`; call ``.undo()`` or use it as a context manager to restore.
    """
    vec = unit_vector(direction, arch.d_model(model))
    chosen = list(range(arch.num_layers(model))) if layers is None else [int(i) for i in layers]
    return Cut(model, vec, check_alpha(alpha), chosen, embeddings).apply()


def active_cuts(model: nn.Module) -> list[Cut]:
    """Cuts currently applied to ``model``, oldest first."""
    return list(_ACTIVE.get(model, []))


@contextlib.contextmanager
def original_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily undo every active cut (newest first), re-applying them on exit."""
    stack = active_cuts(model)
    for c in reversed(stack):
        c.undo()
    try:
        yield model
    finally:
        for c in stack:
            c.apply()
