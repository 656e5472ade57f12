"""Fused Triton kernels for the cut: one pass over each weight matrix, float32 math.

The cut of a matrix is ``W ← W + s·r⊗v`` (``r = vᵀW``, ``s = -α``), with a record of the few
elements whose undo would not restore the original bits. In PyTorch that is a float32 copy of
``W``, the update, a rounded copy, a replayed undo, a comparison and a ``nonzero``: ~10 passes
over the matrix and two float32-sized temporaries. Here it is two kernels:

- :func:`removed`: ``r = vᵀW`` read once, float32 accumulation, split along the residual axis
  into partial sums added in a fixed order (deterministic, unlike atomics);
- :func:`shift_`: each tile is read, updated in float32, rounded, and (when tracking) its undo is
  replayed in registers; tiles append their misses (flat index, original value) to a buffer
  through one atomic counter, then store the new values. A tile whose misses would not fit
  leaves its weights untouched; the call is repeated for those tiles with a buffer of exactly
  the size the counter asked for, so no miss is ever lost.

Undo runs the same kernel without tracking, so the replay in registers is bit-for-bit the undo
that will run later. Works on CUDA tensors (and on CPU under ``TRITON_INTERPRET=1``, for tests).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch

_HALF = (torch.bfloat16, torch.float16)

# (elements along the contiguous axis, along the other, warps per program) of each kernel's tile:
# the fastest of benchmarks/gpu.py's kernel sweep on an H100 (benchmarks/results/gpu_NOTES.md)
REMOVED_TILE = (64, 64, 4)
SHIFT_TILE = (256, 16, 4)
TRACK_TILE = (128, 32, 4)


def available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def supported(param: torch.Tensor) -> bool:
    """Whether the fused path handles this weight: a contiguous 16-bit CUDA matrix."""
    return (param.is_cuda and param.dim() == 2 and param.dtype in _HALF and param.is_contiguous()
            and available())


@functools.cache
def _kernels() -> Any:
    """Compile-on-first-use, so importing vauban never needs Triton."""
    import triton
    import triton.language as tl

    @triton.jit
    def removed_kernel(w_ptr, v_ptr, part_ptr, n, d, s_n, s_d, PER_SPLIT: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        split = tl.program_id(1)
        start = split * PER_SPLIT
        end = tl.minimum(start + PER_SPLIT, d)
        acc = tl.zeros((BLOCK_N,), tl.float32)
        for k in range(0, PER_SPLIT, BLOCK_D):
            cols = (start + k + tl.arange(0, BLOCK_D)).to(tl.int64)
            inside = (rows[:, None] < n) & (cols[None, :] < end)
            w = tl.load(w_ptr + rows[:, None] * s_n + cols[None, :] * s_d, mask=inside, other=0.0)
            v = tl.load(v_ptr + cols, mask=cols < end, other=0.0)
            acc += tl.sum(w.to(tl.float32) * v[None, :], axis=1)
        tl.store(part_ptr + split * n + rows, acc, mask=rows < n)

    @triton.jit
    def shift_kernel(w_ptr, r_ptr, v_ptr, n, d, s_n, s_d, scale, back,
                     idx_ptr, val_ptr, count_ptr, done_ptr, capacity,
                     TRACK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        tile = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
        rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        cols = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
        inside = (rows[:, None] < n) & (cols[None, :] < d)
        offs = rows[:, None] * s_n + cols[None, :] * s_d
        r = tl.load(r_ptr + rows, mask=rows < n, other=0.0)
        v = tl.load(v_ptr + cols, mask=cols < d, other=0.0)
        if TRACK:
            if tl.load(done_ptr + tile) == 0:
                w = tl.load(w_ptr + offs, mask=inside, other=0.0)
                # the same expression as the undo branch below: the replay is the undo, bit for bit
                new = (w.to(tl.float32) + (r * scale)[:, None] * v[None, :]).to(w.dtype)
                replay = (new.to(tl.float32) + (r * back)[:, None] * v[None, :]).to(w.dtype)
                miss = (replay.to(tl.int16, bitcast=True) != w.to(tl.int16, bitcast=True)) & inside
                flat = tl.reshape(miss, (BLOCK_N * BLOCK_D,)).to(tl.int32)
                count = tl.sum(flat, axis=0)
                base = tl.atomic_add(count_ptr, count)
                if base + count <= capacity:
                    pos = base + tl.cumsum(flat, 0) - 1
                    hit = flat != 0
                    tl.store(idx_ptr + pos, tl.reshape(offs, (BLOCK_N * BLOCK_D,)), mask=hit)
                    tl.store(val_ptr + pos, tl.reshape(w, (BLOCK_N * BLOCK_D,)), mask=hit)
                    tl.store(w_ptr + offs, new, mask=inside)
                    tl.store(done_ptr + tile, 1)
        else:
            w = tl.load(w_ptr + offs, mask=inside, other=0.0)
            new = (w.to(tl.float32) + (r * scale)[:, None] * v[None, :]).to(w.dtype)
            tl.store(w_ptr + offs, new, mask=inside)

    return removed_kernel, shift_kernel


def _on_view_device(fn: Any) -> Any:
    """Triton launches on the current CUDA device: make it the view's (models split over GPUs)."""

    @functools.wraps(fn)
    def wrapper(view: torch.Tensor, *args: Any) -> Any:
        with torch.cuda.device(view.device) if view.is_cuda else contextlib.nullcontext():
            return fn(view, *args)

    return wrapper


def _blocks(view: torch.Tensor, tile: tuple[int, int, int]) -> tuple[int, int]:
    """Wide tiles along whichever axis is contiguous, so loads are coalesced."""
    wide, narrow, _ = tile
    return (wide, narrow) if view.stride(0) == 1 else (narrow, wide)


@_on_view_device
def removed(view: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """``r = view @ vec`` (float32) for a 16-bit ``(n, d)`` view, ``d`` the residual axis."""
    removed_kernel, _ = _kernels()
    n, d = view.shape
    block_n, block_d = _blocks(view, REMOVED_TILE)
    row_blocks = -(-n // block_n)
    splits = max(1, min(-(-d // block_d), -(-512 // row_blocks)))  # enough programs for the chip
    per_split = -(-d // (splits * block_d)) * block_d
    splits = -(-d // per_split)
    parts = torch.empty(splits, n, dtype=torch.float32, device=view.device)
    removed_kernel[(row_blocks, splits)](
        view, vec.float().contiguous(), parts, n, d, view.stride(0), view.stride(1), PER_SPLIT=per_split,
        BLOCK_N=block_n, BLOCK_D=block_d, num_warps=REMOVED_TILE[2],
    )
    return parts.sum(0)


@_on_view_device
def shift_(view: torch.Tensor, vec: torch.Tensor, r: torch.Tensor, scale: float) -> None:
    """``view += scale·r⊗vec`` in place (float32 math, rounded once)."""
    _, shift_kernel = _kernels()
    n, d = view.shape
    block_n, block_d = _blocks(view, SHIFT_TILE)
    grid = (-(-n // block_n), -(-d // block_d))
    dummy = torch.empty(1, dtype=torch.int64, device=view.device)
    shift_kernel[grid](
        view, r.contiguous(), vec.float().contiguous(), n, d, view.stride(0), view.stride(1),
        float(scale), 0.0, dummy, dummy, dummy, dummy, 0,
        TRACK=False, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=SHIFT_TILE[2],
    )


@_on_view_device
def apply_(
    view: torch.Tensor, vec: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut ``view`` in place: returns ``(r, miss_index, miss_values)``.

    ``miss_index`` are flat offsets into the underlying storage (``offset = i·stride0 +
    j·stride1``), which for a contiguous parameter and ``view = param.movedim(axis, -1)`` are
    indices into ``param.reshape(-1)``; ``miss_values`` the original values there.
    """
    _, shift_kernel = _kernels()
    r = removed(view, vec)
    vec32 = vec.float().contiguous()
    n, d = view.shape
    block_n, block_d = _blocks(view, TRACK_TILE)
    grid = (-(-n // block_n), -(-d // block_d))
    done = torch.zeros(grid[0] * grid[1], dtype=torch.int8, device=view.device)
    capacity = max(4096, n * d // 16)
    indices, values = [], []
    while True:
        index = torch.full((capacity,), -1, dtype=torch.int64, device=view.device)
        value = torch.empty(capacity, dtype=view.dtype, device=view.device)
        count = torch.zeros(1, dtype=torch.int32, device=view.device)
        shift_kernel[grid](
            view, r, vec32, n, d, view.stride(0), view.stride(1), -float(alpha), float(alpha),
            index, value, count, done, capacity,
            TRACK=True, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=TRACK_TILE[2],
        )
        asked = int(count)
        if asked <= capacity:  # every tile fitted: entries [0, asked) are exactly the misses
            indices.append(index[:asked])
            values.append(value[:asked])
            break
        kept = index >= 0  # tiles that did not fit left holes and will run again
        indices.append(index[kept])
        values.append(value[kept])
        capacity = asked  # an upper bound on what the remaining tiles need
    if len(indices) == 1:
        return r, indices[0], values[0]
    return r, torch.cat(indices), torch.cat(values)
