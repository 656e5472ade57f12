"""Cut the direction out of the weights, reversibly and bit-exactly.

Every matrix ``W`` that writes into the residual stream becomes ``W - a·Q Qᵀ W``, where the
rows of ``Q`` (``k × d``) are an orthonormal basis of what is removed: one unit vector ``v`` for
the usual refusal direction (``W - a·v(vᵀW)``), ``k`` vectors for a refusal subspace
(:func:`vauban.direction.measuring.measure_subspace`). Its outputs lose ``a`` times their component in that
subspace. Usually ``Q`` is the direction itself; when a norm with per-channel gain ``g`` sits
between the writer and the residual add (Gemma 2/3, OLMo 2 post-norms), ``Q`` spans
``g ⊙ q`` for each basis vector ``q``, because ``qᵀ(g ⊙ y) = (g ⊙ q)ᵀy``: making ``y``
orthogonal to ``g ⊙ q`` makes the *normalized* output orthogonal to ``q`` (exactly for
``a = 1``; for other ``a`` the normalization's rescaling makes the removal approximate).

Variants, all composable and all undone bit-exactly:

- **Strength per writer.** ``a = alpha × w_kind(l)`` for a writer of kind ``attention`` or
  ``mlp`` in layer ``l``. ``w_kind`` is a list of per-layer weights or a :class:`LayerKernel`
  (peak position ``p``, peak weight ``w_max``, minimum weight ``w_min``, width ``s``)::

      w(l) = w_max + (|l - p| / s)·(w_min - w_max)   if |l - p| <= s,   else 0

  (heretic's ablation-weight kernel). Writers whose ``a`` is 0 are left untouched.
- **Which direction.** One vector for every layer, one per layer (a ``(layers, k, d)`` tensor:
  layer ``l``'s writers remove row ``l``), or one taken at a fractional layer index or with the
  harmless mean projected out (see ``DirectionResult.direction_at`` and
  ``directions_per_layer``).
- **Norm-preserving** (``norm_preserving=True``). Each vector a matrix writes into the residual
  stream (a column ``x`` of an ``nn.Linear`` weight, a row of GPT-2's ``Conv1D``, a token's
  embedding, a bias) is rescaled after the edit to its original norm::

      x' = (x - a·Q Qᵀx) · ‖x‖ / ‖x - a·Q Qᵀx‖,   ‖x - a·Q Qᵀx‖² = ‖x‖² + (a² - 2a)‖Qᵀx‖²

  Rescaling a vector keeps it orthogonal to ``Q``, so the direction is removed as fully as
  without it, while the magnitudes that later norms and nonlinearities see are kept.
- **Embeddings** (``embeddings=True``): the token (and position) embeddings are edited with
  layer 0's basis and the plain ``alpha``.

A :class:`Cut` keeps what it removed (``R = Qᵀ W``, ``k`` vectors per matrix, and the rescale
factors) and the few original values float rounding would not restore, so it can be undone bit
for bit while storing far less than a copy of the weights (:mod:`vauban.edit.editing`, which edits
one tensor at a time, fused MoE expert tensors expert by expert). Evaluation and optimization
therefore need one model in memory. Routers are not edited (see :mod:`vauban.model.arch`).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import torch
from torch import nn

from ..core.errors import VaubanError, check_alpha, check_layer
from ..model import arch
from .editing import Edit, apply_edit, apply_fused, fusable, reapply_edit, unchanged, undo_edit
from .editing import edited as edited_tensor
from .vectors import unit_vector


@runtime_checkable
class Vectors(Protocol):
    """What a cut reads from a measurement: ``cut_vectors()`` gives a ``(d,)`` direction or a
    ``(k, d)`` subspace (a :class:`vauban.DirectionResult` or :class:`vauban.SubspaceResult`).
    The edit takes vectors, so it sits below the layer that measures them."""

    def cut_vectors(self) -> torch.Tensor: ...


Direction = Vectors | torch.Tensor


@dataclass(frozen=True)
class LayerKernel:
    """Per-layer cut weights shaped as a tent (see the module docstring for the formula).

    ``peak`` and ``width`` are in layers and may be fractional; ``width=math.inf`` gives
    ``max_weight`` everywhere.
    """

    peak: float
    max_weight: float = 1.0
    min_weight: float = 0.0
    width: float = math.inf

    def __post_init__(self) -> None:
        for name in ("peak", "max_weight", "min_weight"):
            check_alpha(getattr(self, name))
        if not self.width > 0:
            raise VaubanError(f"LayerKernel width must be positive, got {self.width}")

    def weights(self, num_layers: int) -> tuple[float, ...]:
        """``w(l)`` for ``l = 0 .. num_layers - 1``."""
        out = []
        for layer in range(num_layers):
            distance = abs(layer - self.peak)
            if distance > self.width:
                out.append(0.0)
            else:
                ratio = 0.0 if math.isinf(self.width) else distance / self.width
                out.append(self.max_weight + ratio * (self.min_weight - self.max_weight))
        return tuple(out)


LayerWeights = LayerKernel | Sequence[float]


@dataclass(frozen=True)
class TensorEdit:
    """One tensor a cut edits, described so that another program can redo the edit:
    ``W' = W - alpha·Q Qᵀ W`` along ``axis`` (the residual axis), ``Q`` the orthonormal rows of
    ``basis`` (``k × d``, float32, already gain-adjusted for post-norm writers), followed by
    the norm-preserving rescale when ``norm_preserving`` (see
    :func:`vauban.edit.editing.edited`). ``name`` is the parameter's name in
    ``model.named_parameters()``. An edit method whose change is not that formula
    (:mod:`vauban.methods`) gives ``removed``: the edit is ``W' = (W - alpha·R Q)·f`` with this
    ``R`` (residual axis last, ``(..., k)``) and ``f`` the per-vector ``factors`` (or 1), see
    :func:`redo`."""

    name: str
    axis: int
    alpha: float
    basis: torch.Tensor
    norm_preserving: bool
    removed: torch.Tensor | None = None
    factors: torch.Tensor | None = None


def redo(w: torch.Tensor, edit: TensorEdit) -> torch.Tensor:
    """``edit`` applied to a copy of ``w`` (float32): the formula of :class:`TensorEdit`, computed in
    float64, for exporters that redo a cut on other copies of the weights (a GGUF file's)."""
    if edit.removed is None:
        return edited_tensor(w.float(), edit.axis, edit.basis, edit.alpha, edit.norm_preserving)
    view = w.double().movedim(edit.axis, -1)
    new = view - edit.alpha * edit.removed.double().to(w.device) @ edit.basis.double().to(w.device)
    if edit.factors is not None:
        new = new * edit.factors.double().to(w.device)
    return new.movedim(-1, edit.axis).float().contiguous()


def orthonormal(rows: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (rows) of the span of ``rows`` (``k × d``), computed in float64."""
    rows = rows.double()
    if rows.shape[0] == 1:
        return (rows / rows.norm()).float()
    q, r = torch.linalg.qr(rows.T)
    if (r.diagonal().abs() < 1e-9 * r.diagonal().abs().max()).any():
        raise VaubanError("the subspace's vectors are linearly dependent; use fewer of them")
    return q.T.contiguous().float()


def writer_basis(basis: torch.Tensor, post_norm: nn.Module | None, device: torch.device) -> torch.Tensor:
    """The orthonormal basis a writer removes, from its layer's ``basis`` (``k × d``): the basis
    itself, or for a writer behind a post-norm with gain ``g`` an orthonormal basis of the
    ``g ⊙ q`` (float32, on the CPU), since ``qᵀ(g ⊙ y) = (g ⊙ q)ᵀy`` (see the module docstring).
    ``device``: where the norm module runs to give its gain (:func:`vauban.model.arch.norm_gain`)."""
    if post_norm is None:
        return basis
    gain = arch.norm_gain(post_norm, basis.shape[-1], device).cpu()
    return orthonormal(gain * basis.cpu())


def layer_bases(direction: Direction, d_model: int, num_layers: int) -> torch.Tensor:
    """The direction as ``(num_layers, k, d_model)`` float32 orthonormal bases, one per layer.

    Accepts a :class:`DirectionResult` or a ``(d,)`` tensor (one direction everywhere), a
    :class:`SubspaceResult` or a ``(k, d)`` tensor (one subspace everywhere), or a
    ``(num_layers, k, d)`` tensor (layer ``l`` uses row ``l``; ``k = 1`` for per-layer
    directions).
    """
    if isinstance(direction, Vectors):
        direction = direction.cut_vectors()
    if not isinstance(direction, torch.Tensor):
        raise VaubanError(
            f"direction must be a DirectionResult, SubspaceResult or tensor, got {type(direction).__name__}"
        )
    if not direction.is_floating_point():  # complex would silently lose its imaginary part
        raise VaubanError(f"direction must be a floating-point tensor, got {direction.dtype}")
    x = direction.detach().float().cpu()
    if x.dim() == 1:
        return unit_vector(x, d_model).reshape(1, 1, -1).expand(num_layers, 1, d_model).clone()
    if x.dim() == 3 and x.shape[0] != num_layers:
        raise VaubanError(
            f"per-layer directions have {x.shape[0]} layers but the model has {num_layers}; "
            "measure them on this model"
        )
    if x.dim() not in (2, 3) or x.shape[-1] != d_model:
        raise VaubanError(
            f"direction has shape {tuple(x.shape)}; expected ({d_model},), (k, {d_model}) or "
            f"({num_layers}, k, {d_model}) for this model"
        )
    if not torch.isfinite(x).all():
        raise VaubanError("direction contains NaN or infinite values; measure it again")
    if (x.norm(dim=-1) < 1e-12).any():
        raise VaubanError("direction contains a zero vector; measure it again")
    if x.dim() == 2:
        return orthonormal(x).unsqueeze(0).expand(num_layers, -1, -1).clone()
    return torch.stack([orthonormal(rows) for rows in x])


def layer_weights(spec: LayerWeights | None, num_layers: int, what: str) -> tuple[float, ...]:
    if spec is None:
        return (1.0,) * num_layers
    weights = spec.weights(num_layers) if isinstance(spec, LayerKernel) else tuple(spec)
    if len(weights) != num_layers:
        raise VaubanError(f"{what} weights: expected {num_layers} (one per layer), got {len(weights)}")
    return tuple(check_alpha(w) for w in weights)


# The cuts applied to each model, oldest first: the one piece of module-level state the cut keeps,
# and on purpose. ``evaluate(model, model)``, ``original_weights`` and ``optimize`` must find the
# cuts a caller applied elsewhere (a ``with cut(...)`` block holds the Cut, not they), and undo
# must refuse to run out of order; an argument would not reach them. Weak keys: a model that is
# garbage-collected takes its entry along, and vauban sets no attribute on the user's model.
_ACTIVE: weakref.WeakKeyDictionary[nn.Module, list[Cut]] = weakref.WeakKeyDictionary()


class Cut:
    """A reversible edit of one model's weights; also a context manager that undoes on exit.

    Cuts on one model stack: undo them in reverse order (``with`` blocks do this naturally).
    ``direction`` holds the per-layer bases ``(num_layers, k, d)``; ``attention_weights`` and
    ``mlp_weights`` the per-layer multipliers of ``alpha``.
    """

    def __init__(
        self,
        model: nn.Module,
        direction: Direction,
        alpha: float,
        layers: list[int],
        embeddings: bool,
        *,
        attention_weights: tuple[float, ...] | None = None,
        mlp_weights: tuple[float, ...] | None = None,
        norm_preserving: bool = False,
    ) -> None:
        self._model = weakref.ref(model)
        n = arch.num_layers(model)
        self.direction = layer_bases(direction, arch.d_model(model), n)
        self.alpha = alpha
        self.layers = layers
        self.embeddings = embeddings
        self.attention_weights = attention_weights or (1.0,) * n
        self.mlp_weights = mlp_weights or (1.0,) * n
        self.norm_preserving = norm_preserving
        self._edits: list[Edit] = []
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

    @property
    def undo_bytes(self) -> int:
        """Memory the cut keeps to undo itself bit for bit: removed vectors, rescale factors and
        the original values of the few elements rounding would not restore."""
        tensors = [
            t
            for e in self._edits
            for t in (e.removed, e.factors, e.patch_index, e.patch_values)
            if t is not None
        ]
        return sum(t.numel() * t.element_size() for t in tensors)

    def record(self) -> dict[str, object]:
        """JSON-serializable description of the cut's settings."""
        return {
            "alpha": self.alpha,
            "layers": self.layers,
            "embeddings": self.embeddings,
            "subspace_rank": int(self.direction.shape[1]),
            "attention_weights": list(self.attention_weights),
            "mlp_weights": list(self.mlp_weights),
            "norm_preserving": self.norm_preserving,
            "edited_tensors": len(self._edits),
        }

    def tensor_edits(self) -> list[TensorEdit]:
        """Every tensor this cut edits (or would edit), with its parameter name, axis, basis and
        strength: what exporters need to redo the edit elsewhere (a GGUF file, a LoRA adapter)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        out, seen = [], set()
        for _label, param, axis, basis, alpha in self._targets():
            if id(param) in seen:
                continue
            seen.add(id(param))
            out.append(TensorEdit(names[id(param)], axis, alpha, basis.float().cpu(), self.norm_preserving))
        return out

    def _targets(self) -> Iterator[tuple[str, nn.Parameter, int, torch.Tensor, float]]:
        model = self.model
        device = next(model.parameters()).device
        for w in arch.residual_writers(model, self.layers):
            weights = self.attention_weights if w.kind == "attention" else self.mlp_weights
            alpha = self.alpha * weights[w.layer]
            if alpha == 0.0:
                continue
            basis = writer_basis(self.direction[w.layer], w.post_norm, device)
            yield f"{w.name}.weight", w.weight, w.axis, basis, alpha
            if w.bias is not None:
                yield f"{w.name}.bias", w.bias, -1, basis, alpha
        if self.embeddings and self.alpha != 0.0:
            for i, emb in enumerate(arch.embeddings(model)):
                yield f"embeddings.{i}", cast(nn.Parameter, emb.weight), -1, self.direction[0], self.alpha

    def apply(self) -> Cut:
        """Apply (or re-apply after :meth:`undo`) the edit."""
        if self.applied:
            raise VaubanError("this cut is already applied")
        if self._edits and unchanged(self._edits):
            for edit in self._edits:  # re-applying after undo: the weights are the originals
                reapply_edit(edit)
        else:
            seen: set[int] = set()
            edits: list[Edit] = []
            fused = []
            # one copy per basis and device (keyed by address; the CPU tensor is kept alive with
            # its copy, so no other basis can take its address during the loop)
            on_device: dict[tuple[int, tuple[int, ...], torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
            for name, param, axis, basis, alpha in self._targets():
                if id(param) in seen:  # a parameter shared by two paths is edited once
                    continue
                seen.add(id(param))
                if fusable(param, basis, self.norm_preserving):
                    key = (basis.data_ptr(), tuple(basis.shape), param.device)
                    if key not in on_device:
                        on_device[key] = (basis, basis.to(device=param.device, dtype=torch.float32))
                    fused.append((name, param, axis, on_device[key][1], alpha))
                else:
                    edits.append(apply_edit(name, param, axis, basis, alpha, self.norm_preserving))
            self._edits = edits + (apply_fused(fused) if fused else [])
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
            undo_edit(edit)
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
    direction: Direction,
    *,
    alpha: float = 1.0,
    layers: Sequence[int] | None = None,
    embeddings: bool = False,
    attention: LayerWeights | None = None,
    mlp: LayerWeights | None = None,
    norm_preserving: bool = False,
) -> Cut:
    """Remove ``alpha`` × the direction from every residual writer of ``layers`` (default: all).

    ``direction``: see :func:`layer_bases`. ``attention`` / ``mlp``: per-layer weights
    multiplying ``alpha`` for the attention and MLP writers (a :class:`LayerKernel` or one
    number per layer; default 1). ``norm_preserving=True`` restores the norm of every written
    vector after the edit. ``embeddings=True`` also orthogonalizes the token (and position)
    embeddings; with tied embeddings that edits the LM head too. The edit happens in place and
    is returned as an applied :class:`Cut`; call ``.undo()`` or use it as a context manager to
    restore. See the module docstring for the formulas.
    """
    n = arch.num_layers(model)
    chosen = list(range(n)) if layers is None else [check_layer(i, n) for i in layers]
    return Cut(
        model,
        direction,
        check_alpha(alpha),
        chosen,
        embeddings,
        attention_weights=layer_weights(attention, n, "attention"),
        mlp_weights=layer_weights(mlp, n, "MLP"),
        norm_preserving=bool(norm_preserving),
    ).apply()


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
