"""One tensor's reversible edit: the arithmetic of a cut and the bookkeeping that undoes it exactly.

:mod:`vauban.edit.cutting` decides *which* tensors a cut edits, with which basis ``Q`` and strength
``a`` (see its docstring for the formulas); this module edits one tensor: ``W - a·Q Qᵀ W`` along
its residual axis, optionally norm-preserving, keeping what undo needs (an :class:`Edit`).

Float rounding makes ``(W - x) + x`` differ from ``W`` in the last bit for a few elements, so an
edit also keeps those few original values (found by replaying the undo at apply time): undo
restores the original bits exactly while storing far less than a copy of the weights. The
rank-k arithmetic lives in :meth:`Work.shifted` and the rescale in :meth:`Work.rescaled`, so
either can be swapped for a fused kernel (:mod:`vauban.runtime.kernels`) without touching the
bookkeeping. Fused MoE expert tensors ``(experts, ·, ·)`` are edited, undone and re-applied
expert by expert (:func:`pieces`), so the float32 working copies are one expert's size, not the
layer's (``benchmarks/moe_memory.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import VaubanError
from ..runtime import kernels

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # the dtypes a cut edits
_INT_VIEW = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


@dataclass
class Edit:
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
    fingerprint: torch.Tensor | None = None  # checksum of the original weights, checked on re-apply
    fused: bool = False  # applied by vauban.runtime.kernels (rank 1, CUDA, 16-bit): re-applied, undone by it


def compute_dtype(param: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 weights (float32 on MPS, which lacks float64).

    Any precision gives an exact undo (the fix-ups cover every miss). For float32 weights,
    float64 arithmetic would keep the fix-ups fewer (about 2.6 % of the elements instead of
    4.5 % for a 896 × 4864 matrix) but costs 2.6× the time on a CPU, where an optimization
    applies and undoes hundreds of cuts.
    """
    if param.dtype == torch.float64 and param.device.type != "mps":
        return torch.float64
    return torch.float32


def touched(params: torch.Tensor | Sequence[torch.Tensor]) -> None:
    """Mark ``params`` as modified in place: the edits write through ``.data``, which torch's
    version counter does not see, and a vLLM engine attached to the model
    (:mod:`vauban.runtime.engines`) reads that counter to know which tensors to send."""
    torch.autograd.graph.increment_version(params)


@torch.no_grad()
def checksum(param: torch.Tensor) -> torch.Tensor:
    """Every byte of ``param`` read as 32-bit integers (its last 1-3 bytes, when its size in
    bytes is not a multiple of 4, added one by one) and summed modulo 2**32: a 0-d int32 tensor
    on the tensor's device, so computing it waits for nothing.

    Any change to one element changes the sum, exactly, on every device (integer addition wraps,
    so the order of the sum does not matter); only changes crafted to cancel out would pass
    unnoticed. 32-bit accumulation runs at memory speed (a 64-bit one took 20 times as long on a
    CPU: seconds for a 0.5B model). Used where vauban must know that weights are still the ones
    it computed from: a cut re-applied after :meth:`Cut.undo` reuses its cached edit only then
    (an optimizer step, a ``load_state_dict`` or another library's edit in between are noticed),
    and a measurement is remembered only for a model in the same state
    (:func:`vauban.direction.measuring.model_state`).
    """
    flat = param.detach().reshape(-1).view(torch.uint8)
    whole = flat.numel() // 4 * 4
    return flat[:whole].view(torch.int32).sum(dtype=torch.int32) + flat[whole:].sum(dtype=torch.int32)


def unchanged(edits: Sequence[Edit]) -> bool:
    """Whether every edited tensor still holds the weights its edit was made from (the same
    :func:`checksum`; one host read per device)."""
    if any(e.param.dtype not in _INT_VIEW or e.param.dtype != e.patch_values.dtype for e in edits):
        return False
    devices: dict[torch.device, list[Edit]] = {}
    for edit in edits:
        devices.setdefault(edit.param.device, []).append(edit)
    return all(
        torch.equal(
            torch.stack([checksum(e.param) for e in group]),
            torch.stack([e.fingerprint for e in group]),  # type: ignore[misc]
        )
        for group in devices.values()
    )


class Work:
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

    def shifted(
        self, w: torch.Tensor, basis: torch.Tensor, removed: torch.Tensor, scale: float, dst: torch.Tensor
    ) -> torch.Tensor:
        """``w + scale·R Q`` rounded into ``dst`` (for ``k = 1``, one product per element)."""
        wide = self._wide(w)
        k, d = basis.shape
        if self.c.dim() == 2 and not self.c.is_contiguous():  # an nn.Linear weight: (in, out) seen
            torch.mm(basis.T, removed.T, out=self.c.T)  # through its (out, in) memory
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

    def forward(
        self,
        view: torch.Tensor,
        basis: torch.Tensor,
        removed: torch.Tensor,
        factors: torch.Tensor | None,
        alpha: float,
    ) -> torch.Tensor:
        """The cut of one piece, in ``new``."""
        new = self.shifted(view, basis, removed, -alpha, self.new)
        return new if factors is None else self.rescaled(new, factors, self.new)

    def inverse(
        self,
        view: torch.Tensor,
        basis: torch.Tensor,
        removed: torch.Tensor,
        factors: torch.Tensor | None,
        alpha: float,
    ) -> torch.Tensor:
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
    from one expert to the next (:class:`Work`), the extra memory is a few times *one*
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
    w: torch.Tensor,
    axis: int,
    basis: torch.Tensor,
    alpha: float,
    norm_preserving: bool = False,
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """``w`` with ``alpha`` × the span of ``basis`` (orthonormal rows) removed along ``axis``:
    the arithmetic of :func:`cut` (compute dtype, rounding) without the bookkeeping for undo,
    for edits that need no undo, such as :func:`vauban.exports.streaming.stream_export`'s. Fused expert
    tensors go expert by expert (:func:`pieces`); ``inplace=True`` writes into ``w`` itself."""
    out = w if inplace else w.clone(memory_format=torch.contiguous_format)
    q = basis.to(device=w.device, dtype=compute_dtype(w))
    work = None
    for _, piece in pieces(out):
        view = piece.movedim(axis, -1)
        work = work or Work(view, q.dtype)
        removed = work.removed(view, q)
        factors = work.norm_factors(view, removed, alpha) if norm_preserving else None
        view.copy_(work.forward(view, q, removed, factors, alpha))
    return out


def _parts(edit: Edit) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Each piece of the edited tensor (residual axis last) with its removed vectors and factors."""
    out = []
    for i, (_, piece) in enumerate(pieces(edit.param.data)):
        stacked = edit.param.dim() >= 3
        removed = edit.removed[i] if stacked else edit.removed
        factors = None if edit.factors is None else edit.factors[i] if stacked else edit.factors
        out.append((piece.movedim(edit.axis, -1), removed, factors))
    return out


def fusable(param: nn.Parameter, basis: torch.Tensor, norm_preserving: bool) -> bool:
    """Whether :mod:`vauban.runtime.kernels` applies this edit (one direction, 16-bit CUDA weights)."""
    return not norm_preserving and basis.shape[0] == 1 and kernels.supported(param.data)


def check_float(name: str, param: nn.Parameter) -> None:
    if param.dtype not in FLOAT_DTYPES:
        raise VaubanError(
            f"{name} has {param.dtype} weights: a cut needs float weights; load the model with "
            "vauban.load (it dequantizes) instead of cutting quantized modules"
        )


def apply_fused(targets: Sequence[tuple[str, nn.Parameter, int, torch.Tensor, float]]) -> list[Edit]:
    """Apply rank-1 edits through the fused kernels: every matrix launched, then one host read
    (:func:`vauban.runtime.kernels.apply_many`)."""
    with torch.no_grad():
        fingerprints = [checksum(param) for _, param, _, _, _ in targets]
        done = kernels.apply_many(
            [(param.data.movedim(axis, -1), q[0], alpha) for _, param, axis, q, alpha in targets]
        )
        touched([param for _, param, _, _, _ in targets])
    return [
        Edit(name, param, axis, alpha, q, removed[:, None], None, index, values, fingerprint, fused=True)
        for (name, param, axis, q, alpha), (removed, index, values), fingerprint in zip(
            targets, done, fingerprints, strict=True
        )
    ]


def apply_edit(
    name: str, param: nn.Parameter, axis: int, basis: torch.Tensor, alpha: float, norm_preserving: bool
) -> Edit:
    check_float(name, param)
    with torch.no_grad():
        fingerprint = checksum(param)
        view = param.data.movedim(axis, -1)
        cd = compute_dtype(param)
        q = basis.to(device=param.device, dtype=cd)
        removed_parts, factor_parts, index_parts, value_parts = [], [], [], []
        work = None
        for offset, piece in pieces(param.data):  # expert by expert for fused MoE tensors
            view = piece.movedim(axis, -1)
            work = work or Work(view, cd)
            removed = work.removed(view, q)
            factors = work.norm_factors(view, removed, alpha) if norm_preserving else None
            new = work.forward(view, q, removed, factors, alpha)
            index = work.misses(work.inverse(new, q, removed, factors, alpha), view, axis)
            value_parts.append(piece.reshape(-1)[index])
            index_parts.append(index.add_(offset))
            view.copy_(new)
            removed_parts.append(removed)
            factor_parts.append(factors)
        touched(param)
        stacked = param.dim() >= 3
        removed = torch.stack(removed_parts) if stacked else removed_parts[0]
        factors = (
            None
            if not norm_preserving
            else torch.stack(factor_parts)  # type: ignore[arg-type]
            if stacked
            else factor_parts[0]
        )
        one = len(index_parts) == 1  # a matrix: no copy through cat
        return Edit(
            name,
            param,
            axis,
            alpha,
            q,
            removed,
            factors,
            index_parts[0] if one else torch.cat(index_parts),
            value_parts[0] if one else torch.cat(value_parts),
            fingerprint,
        )


def _replay(edit: Edit, *, undo: bool) -> None:
    """Run a recorded edit forward (re-application) or backward (undo, before the fix-ups)."""
    if edit.fused:
        view = edit.param.data.movedim(edit.axis, -1)
        kernels.shift_(view, edit.basis[0], edit.removed[:, 0], edit.alpha if undo else -edit.alpha)
        return
    work = None
    for view, removed, factors in _parts(edit):
        work = work or Work(view, edit.basis.dtype)
        step = work.inverse if undo else work.forward
        view.copy_(step(view, edit.basis, removed, factors, edit.alpha))


def reapply_edit(edit: Edit) -> None:
    """Re-apply a cached edit to the original weights (same bits as the first application)."""
    with torch.no_grad():
        _replay(edit, undo=False)
    touched(edit.param)


def undo_edit(edit: Edit) -> None:
    """Restore the original weights bit for bit: the edit backward, then the recorded misses."""
    with torch.no_grad():
        _replay(edit, undo=True)
        edit.param.data.view(-1)[edit.patch_index] = edit.patch_values
    touched(edit.param)
