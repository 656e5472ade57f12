"""Cut the direction out of the weights, reversibly and bit-exactly.

Every matrix ``W`` that writes into the residual stream becomes ``W - a·Q Qᵀ W``, where the
rows of ``Q`` (``k × d``) are an orthonormal basis of what is removed: one unit vector ``v`` for
the usual refusal direction (``W - a·v(vᵀW)``), ``k`` vectors for a refusal subspace
(:func:`vauban.measuring.measure_subspace`). Its outputs lose ``a`` times their component in that
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
  harmless mean projected out (see :mod:`vauban.measuring`: ``direction_at``,
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
factors) so it can be undone. Float rounding makes ``(W - x) + x`` differ from ``W`` in the last
bit for a few elements, so the cut also keeps those few original values (found by replaying
the undo at apply time): undo restores the original bits exactly while storing far less than a
copy of the weights. Evaluation and optimization therefore need one model in memory. The rank-k
arithmetic lives in :meth:`_Work.shifted` and the rescale in :meth:`_Work.rescaled`, so either
can be swapped for a fused kernel without touching the bookkeeping. Fused MoE expert tensors
``(experts, ·, ·)`` are edited, undone and re-applied expert by expert (:func:`pieces`), so the
float32 working copies are one expert's size, not the layer's (``benchmarks/moe_memory.py``);
routers are not edited (see :mod:`vauban.arch`).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import arch, kernels
from .errors import VaubanError
from .results import DirectionResult, SubspaceResult, check_alpha, check_layer, unit_vector

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # the dtypes a cut edits
_INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16,
             torch.float32: torch.int32, torch.float64: torch.int64}

Direction = DirectionResult | SubspaceResult | torch.Tensor


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


@dataclass
class _Edit:
    """One edited tensor: its residual axis, what was removed along it, and the fix-ups."""

    name: str
    param: nn.Parameter
    axis: int
    alpha: float
    basis: torch.Tensor  # Q, (k, d) orthonormal rows in residual space (compute dtype, param device)
    removed: torch.Tensor  # R = W Qᵀ with the residual axis last, (..., k) (compute dtype)
    factors: torch.Tensor | None  # norm-preserving rescale per written vector, (..., 1), or None
    patch_index: torch.Tensor  # flat indices where the replayed undo misses the original bits
    patch_values: torch.Tensor  # the original values there
    fingerprint: torch.Tensor | None = None  # _checksum of the original weights, checked on re-apply
    fused: bool = False  # applied by vauban.kernels (rank 1, CUDA, 16-bit), so re-applied and undone by it


def _compute_dtype(param: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 weights (float32 on MPS, which lacks float64).

    Any precision gives an exact undo (the fix-ups cover every miss). For float32 weights,
    float64 arithmetic would keep the fix-ups fewer (about 2.6 % of the elements instead of
    4.5 % for a 896 × 4864 matrix) but costs 2.6× the time on a CPU, where an optimization
    applies and undoes hundreds of cuts.
    """
    if param.dtype == torch.float64 and param.device.type != "mps":
        return torch.float64
    return torch.float32


def _checksum(param: torch.Tensor) -> torch.Tensor:
    """Every bit of ``param`` summed as integers (int64, wrapping): a 0-d tensor on the weights'
    device, so computing it waits for nothing.

    A cut re-applied after :meth:`Cut.undo` reuses its cached edit only when the weights are
    still the ones it was computed from; this notices weights changed behind its back (an
    optimizer step, a ``load_state_dict``, another library's edit): any change to one element
    changes the sum, exactly, on every device. Reading the tensor once costs less than the
    re-application it guards (one read and one write). Only changes crafted to cancel out (two
    elements moved by opposite bit deltas) would pass unnoticed.
    """
    return param.detach().reshape(-1).view(_INT_VIEW[param.dtype]).sum(dtype=torch.int64)


def _unchanged(edits: Sequence[_Edit]) -> bool:
    """Whether every edited tensor still holds the weights its edit was made from (the same
    :func:`_checksum`; one host read per device)."""
    if any(e.param.dtype not in _INT_VIEW or e.param.dtype != e.patch_values.dtype for e in edits):
        return False
    devices: dict[torch.device, list[_Edit]] = {}
    for edit in edits:
        devices.setdefault(edit.param.device, []).append(edit)
    return all(
        torch.equal(torch.stack([_checksum(e.param) for e in group]),
                    torch.stack([e.fingerprint for e in group]))  # type: ignore[misc]
        for group in devices.values()
    )


class _Work:
    """The cut's arithmetic on one piece at a time (:func:`pieces`), in buffers allocated once.

    ``a`` and ``c`` are compute-dtype buffers the size of a piece, ``new`` and ``out`` buffers in
    the weights' dtype. Reusing them keeps the memory of an edit at a few pieces' size: a fresh
    allocation per expert would leave the process holding freed blocks split by the small
    records each expert keeps (on a 128-expert Qwen3-30B-A3B layer, ~3× the tensor's size).
    The operations are those of the plain expressions, in the same order, so the bits are too:
    ``shifted`` is ``(w.float() + scale·(R @ Q)).to(dtype)`` and ``rescaled`` is
    ``(w.float() * factors).to(dtype)``.
    """

    def __init__(self, piece: torch.Tensor, compute: torch.dtype) -> None:
        # every buffer keeps the weight's own memory layout (``piece`` is a view with the residual
        # axis moved last): element-wise passes run over contiguous memory, and ``R = W Qᵀ`` reads
        # the layout ``piece.to(compute)`` always had, so it sums in the same order
        self.a = torch.empty_like(piece, dtype=compute)
        self.c = torch.empty_like(self.a)
        self.new = torch.empty_like(piece)
        self.out = torch.empty_like(piece)
        self._miss: torch.Tensor | None = None

    def misses(self, replay: torch.Tensor, view: torch.Tensor, axis: int) -> torch.Tensor:
        """Flat indices (in the piece's own layout, ``axis`` its residual axis) where ``replay``
        differs from ``view`` in any bit."""
        ints = _INT_VIEW[view.dtype]
        if self._miss is None:  # a mask laid out like the piece, so its flat index is the weight's
            self._miss = torch.empty(view.movedim(-1, axis).shape, dtype=torch.bool, device=view.device)
        torch.ne(replay.view(ints), view.view(ints), out=self._miss.movedim(axis, -1))
        return self._miss.reshape(-1).nonzero().squeeze(-1)

    def _wide(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` in the compute dtype: itself when it already is (float32 weights), else ``a``."""
        return w if w.dtype == self.a.dtype else self.a.copy_(w)

    def removed(self, view: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """``R = W Qᵀ`` (residual axis last), ``(..., k)``."""
        return self._wide(view) @ basis.T

    def shifted(self, w: torch.Tensor, basis: torch.Tensor, removed: torch.Tensor, scale: float,
                dst: torch.Tensor) -> torch.Tensor:
        """``w + scale·R Q`` rounded into ``dst`` (for ``k = 1``, one product per element)."""
        wide = self._wide(w)
        k, d = basis.shape
        if self.c.dim() == 2 and not self.c.is_contiguous():  # an nn.Linear weight: (in, out) seen
            torch.mm(basis.T, removed.T, out=self.c.T)     # through its (out, in) memory
        else:
            torch.mm(removed.reshape(-1, k), basis, out=self.c.view(-1, d))
        self.c.mul_(scale)
        if dst.dtype == wide.dtype:
            return torch.add(wide, self.c, out=dst)
        return dst.copy_(wide.add_(self.c))

    def rescaled(self, w: torch.Tensor, factors: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """``w`` with each written vector times its factor, rounded into ``dst``."""
        wide = self._wide(w)
        if dst.dtype == wide.dtype:
            return torch.mul(wide, factors, out=dst)
        return dst.copy_(wide.mul_(factors))

    def forward(self, view: torch.Tensor, basis: torch.Tensor, removed: torch.Tensor,
                factors: torch.Tensor | None, alpha: float) -> torch.Tensor:
        """The cut of one piece, in ``new``."""
        new = self.shifted(view, basis, removed, -alpha, self.new)
        return new if factors is None else self.rescaled(new, factors, self.new)

    def inverse(self, view: torch.Tensor, basis: torch.Tensor, removed: torch.Tensor,
                factors: torch.Tensor | None, alpha: float) -> torch.Tensor:
        """Its undo, in ``out`` (before the fix-ups of the few elements rounding misses)."""
        if factors is not None:
            view = self.rescaled(view, 1 / factors, self.out)
        return self.shifted(view, basis, removed, alpha, self.out)

    def norm_factors(self, view: torch.Tensor, removed: torch.Tensor, alpha: float) -> torch.Tensor:
        """``‖x‖ / ‖x - a·Q Qᵀx‖`` per written vector, from ``‖x‖²`` and ``‖Qᵀx‖²`` alone."""
        wide = self._wide(view)
        before = (wide.square() if wide is view else wide.square_()).sum(-1, keepdim=True)
        after = before + (alpha * alpha - 2 * alpha) * removed.square().sum(-1, keepdim=True)
        ratio = before / after.clamp_min(torch.finfo(removed.dtype).tiny)
        return torch.where(before > 0, ratio.sqrt(), torch.ones_like(ratio))


def pieces(w: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """``(flat offset, view)`` of the parts an edit goes through one at a time: each expert of a
    fused ``(experts, ·, ·)`` tensor (MoE layers), else the whole matrix.

    The arithmetic works on float32 copies (the tensor, the update, the rounded result, the
    replayed undo and its comparison: several times the tensor's size). Done on a fused expert
    tensor at once, that is several float32 copies of every expert of the layer (2.8 GB more
    memory for one Qwen3-30B-A3B ``down_proj`` of 0.4 GB); expert by expert, in buffers reused
    from one expert to the next (:class:`_Work`), the extra memory is a few times *one*
    expert's weight. Every expert is edited with the same formula; against the whole-tensor
    computation the results agree to float rounding (a batched matmul may sum ``R = W Qᵀ`` in
    another order), and the in-memory and streamed cuts (:func:`edited`) share this loop.
    """
    if w.dim() < 3:
        return [(0, w)]
    flat = w.reshape(-1, *w.shape[-2:])  # a view for the contiguous tensors vauban edits
    size = flat[0].numel()
    return [(i * size, flat[i]) for i in range(flat.shape[0])]


def edited(
    w: torch.Tensor, axis: int, basis: torch.Tensor, alpha: float, norm_preserving: bool = False,
    *, inplace: bool = False,
) -> torch.Tensor:
    """``w`` with ``alpha`` × the span of ``basis`` (orthonormal rows) removed along ``axis``:
    the arithmetic of :func:`cut` (compute dtype, rounding) without the bookkeeping for undo,
    for edits that need no undo, such as :func:`vauban.stream.cut_checkpoint`'s. Fused expert
    tensors go expert by expert (:func:`pieces`); ``inplace=True`` writes into ``w`` itself."""
    out = w if inplace else w.clone(memory_format=torch.contiguous_format)
    q = basis.to(device=w.device, dtype=_compute_dtype(w))
    work = None
    for _, piece in pieces(out):
        view = piece.movedim(axis, -1)
        work = work or _Work(view, q.dtype)
        removed = work.removed(view, q)
        factors = work.norm_factors(view, removed, alpha) if norm_preserving else None
        view.copy_(work.forward(view, q, removed, factors, alpha))
    return out


def _parts(edit: _Edit) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Each piece of the edited tensor (residual axis last) with its removed vectors and factors."""
    out = []
    for i, (_, piece) in enumerate(pieces(edit.param.data)):
        stacked = edit.param.dim() >= 3
        removed = edit.removed[i] if stacked else edit.removed
        factors = None if edit.factors is None else edit.factors[i] if stacked else edit.factors
        out.append((piece.movedim(edit.axis, -1), removed, factors))
    return out


def _fusable(param: nn.Parameter, basis: torch.Tensor, norm_preserving: bool) -> bool:
    """Whether :mod:`vauban.kernels` applies this edit (one direction, 16-bit CUDA weights)."""
    return not norm_preserving and basis.shape[0] == 1 and kernels.supported(param.data)


def _check_float(name: str, param: nn.Parameter) -> None:
    if param.dtype not in FLOAT_DTYPES:
        raise VaubanError(
            f"{name} has {param.dtype} weights: a cut needs float weights; load the model with "
            "vauban.load (it dequantizes) instead of cutting quantized modules"
        )


def _apply_fused(targets: Sequence[tuple[str, nn.Parameter, int, torch.Tensor, float]]) -> list[_Edit]:
    """Apply rank-1 edits through the fused kernels: every matrix launched, then one host read
    (:func:`vauban.kernels.apply_many`)."""
    with torch.no_grad():
        fingerprints = [_checksum(param) for _, param, _, _, _ in targets]
        done = kernels.apply_many([(param.data.movedim(axis, -1), q[0], alpha)
                                   for _, param, axis, q, alpha in targets])
    return [
        _Edit(name, param, axis, alpha, q, removed[:, None], None, index, values, fingerprint, fused=True)
        for (name, param, axis, q, alpha), (removed, index, values), fingerprint
        in zip(targets, done, fingerprints, strict=True)
    ]


def _apply_edit(
    name: str, param: nn.Parameter, axis: int, basis: torch.Tensor, alpha: float, norm_preserving: bool
) -> _Edit:
    _check_float(name, param)
    with torch.no_grad():
        fingerprint = _checksum(param)
        view = param.data.movedim(axis, -1)
        cd = _compute_dtype(param)
        q = basis.to(device=param.device, dtype=cd)
        removed_parts, factor_parts, index_parts, value_parts = [], [], [], []
        work = None
        for offset, piece in pieces(param.data):  # expert by expert for fused MoE tensors
            view = piece.movedim(axis, -1)
            work = work or _Work(view, cd)
            removed = work.removed(view, q)
            factors = work.norm_factors(view, removed, alpha) if norm_preserving else None
            new = work.forward(view, q, removed, factors, alpha)
            index = work.misses(work.inverse(new, q, removed, factors, alpha), view, axis)
            value_parts.append(piece.reshape(-1)[index])
            index_parts.append(index.add_(offset))
            view.copy_(new)
            removed_parts.append(removed)
            factor_parts.append(factors)
        stacked = param.dim() >= 3
        removed = torch.stack(removed_parts) if stacked else removed_parts[0]
        factors = (None if not norm_preserving else torch.stack(factor_parts) if stacked  # type: ignore[arg-type]
                   else factor_parts[0])
        one = len(index_parts) == 1  # a matrix: no copy through cat
        return _Edit(name, param, axis, alpha, q, removed, factors,
                     index_parts[0] if one else torch.cat(index_parts),
                     value_parts[0] if one else torch.cat(value_parts), fingerprint)


def _reapply_edit(edit: _Edit) -> None:
    """Re-apply a cached edit to the original weights (same bits as the first application)."""
    with torch.no_grad():
        if edit.fused:
            view = edit.param.data.movedim(edit.axis, -1)
            kernels.shift_(view, edit.basis[0], edit.removed[:, 0], -edit.alpha)
            return
        work = None
        for view, removed, factors in _parts(edit):
            work = work or _Work(view, edit.basis.dtype)
            view.copy_(work.forward(view, edit.basis, removed, factors, edit.alpha))


def _undo_edit(edit: _Edit) -> None:
    with torch.no_grad():
        if edit.fused:
            view = edit.param.data.movedim(edit.axis, -1)
            kernels.shift_(view, edit.basis[0], edit.removed[:, 0], edit.alpha)
        else:
            work = None
            for view, removed, factors in _parts(edit):
                work = work or _Work(view, edit.basis.dtype)
                view.copy_(work.inverse(view, edit.basis, removed, factors, edit.alpha))
        edit.param.data.view(-1)[edit.patch_index] = edit.patch_values


def orthonormal(rows: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (rows) of the span of ``rows`` (``k × d``), computed in float64."""
    rows = rows.double()
    if rows.shape[0] == 1:
        return (rows / rows.norm()).float()
    q, r = torch.linalg.qr(rows.T)
    if (r.diagonal().abs() < 1e-9 * r.diagonal().abs().max()).any():
        raise VaubanError("the subspace's vectors are linearly dependent; use fewer of them")
    return q.T.contiguous().float()


def layer_bases(direction: Direction, d_model: int, num_layers: int) -> torch.Tensor:
    """The direction as ``(num_layers, k, d_model)`` float32 orthonormal bases, one per layer.

    Accepts a :class:`DirectionResult` or a ``(d,)`` tensor (one direction everywhere), a
    :class:`SubspaceResult` or a ``(k, d)`` tensor (one subspace everywhere), or a
    ``(num_layers, k, d)`` tensor (layer ``l`` uses row ``l``; ``k = 1`` for per-layer
    directions).
    """
    if isinstance(direction, DirectionResult):
        direction = direction.direction
    elif isinstance(direction, SubspaceResult):
        direction = direction.basis
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

    @property
    def undo_bytes(self) -> int:
        """Memory the cut keeps to undo itself bit for bit: removed vectors, rescale factors and
        the original values of the few elements rounding would not restore."""
        tensors = [t for e in self._edits for t in (e.removed, e.factors, e.patch_index, e.patch_values)
                   if t is not None]
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

    def _targets(self) -> Iterator[tuple[str, nn.Parameter, int, torch.Tensor, float]]:
        model = self.model
        device = next(model.parameters()).device
        for w in arch.residual_writers(model, self.layers):
            weights = self.attention_weights if w.kind == "attention" else self.mlp_weights
            alpha = self.alpha * weights[w.layer]
            if alpha == 0.0:
                continue
            basis = self.direction[w.layer]
            if w.post_norm is not None:
                gain = arch.norm_gain(w.post_norm, basis.shape[-1], device).cpu()
                basis = orthonormal(gain * basis)
            yield f"{w.name}.weight", w.weight, w.axis, basis, alpha
            if w.bias is not None:
                yield f"{w.name}.bias", w.bias, -1, basis, alpha
        if self.embeddings and self.alpha != 0.0:
            for i, emb in enumerate(arch.embeddings(model)):
                yield f"embeddings.{i}", emb.weight, -1, self.direction[0], self.alpha

    def apply(self) -> Cut:
        """Apply (or re-apply after :meth:`undo`) the edit."""
        if self.applied:
            raise VaubanError("this cut is already applied")
        if self._edits and _unchanged(self._edits):
            for edit in self._edits:  # re-applying after undo: the weights are the originals
                _reapply_edit(edit)
        else:
            seen: set[int] = set()
            edits: list[_Edit] = []
            fused = []
            # one copy per basis and device (keyed by address; the CPU tensor is kept alive with
            # its copy, so no other basis can take its address during the loop)
            on_device: dict[tuple[int, tuple[int, ...], torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
            for name, param, axis, basis, alpha in self._targets():
                if id(param) in seen:  # a parameter shared by two paths is edited once
                    continue
                seen.add(id(param))
                if _fusable(param, basis, self.norm_preserving):
                    key = (basis.data_ptr(), tuple(basis.shape), param.device)
                    if key not in on_device:
                        on_device[key] = (basis, basis.to(device=param.device, dtype=torch.float32))
                    fused.append((name, param, axis, on_device[key][1], alpha))
                else:
                    edits.append(_apply_edit(name, param, axis, basis, alpha, self.norm_preserving))
            self._edits = edits + (_apply_fused(fused) if fused else [])
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
            _undo_edit(edit)
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
        model, direction, check_alpha(alpha), chosen, embeddings,
        attention_weights=layer_weights(attention, n, "attention"), mlp_weights=layer_weights(mlp, n, "MLP"),
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
