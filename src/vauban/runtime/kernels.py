"""Fused Triton kernels for the cut: one pass over each weight matrix, float32 math.

The cut of a matrix is ``W ← W + s·r⊗v`` (``r = vᵀW``, ``s = -α``), with a record of the few
elements whose undo would not restore the original bits. In PyTorch that is a float32 copy of
``W``, the update, a rounded copy, a replayed undo, a comparison and a ``nonzero``: ~10 passes
over the matrix and two float32-sized temporaries. Here:

- :func:`apply_many` (first application) is one kernel per matrix. A program owns a block of
  ``r``'s entries (``BLOCK_N`` of them, each a dot product along the whole residual axis): it
  reads its block once to accumulate ``r`` in float32, then reads it again, while it is still in
  the L2 cache (132 programs × 16 × 4,096 × 2 bytes = 17 MB of the H200's 50 MB), tile by tile,
  updates each tile in float32, rounds, replays the undo in registers, and stores the new values.
  The misses of a tile (elements whose replayed undo differs from the original bits, ~1.5 % of
  random bf16 weights) go to the tile's own ``SLOTS`` record entries (flat index, original
  bits), placed by a prefix sum inside the tile: no atomics, no host round trip, no compaction.
  Unused entries repeat the tile's first element with its original value, a write that undo may
  repeat harmlessly, so the record needs no count. A tile with more misses than slots is left
  untouched and counted; after all matrices were launched one host read of those counts tells
  whether any tile must be redone by the compacting kernel below (never, for ~60 misses in 128
  slots, unless α or the weights make misses common).
- :func:`removed`: ``r = vᵀW`` alone (read once, float32 accumulation, split along the residual
  axis into partial sums added in a fixed order: deterministic, unlike atomics);
- :func:`shift_`: each tile is read, updated in float32, rounded, and (when tracking) its undo is
  replayed in registers; tiles append their misses (flat index, original value) to a buffer
  through one atomic counter, then store the new values. A tile whose misses would not fit
  leaves its weights untouched; the call is repeated for those tiles with a buffer of exactly
  the size the counter asked for, so no miss is ever lost. Without tracking it is undo and
  re-application of a recorded cut: one read and one write.

Every update is one explicit fused multiply-add, ``fma(r·s, v, w)`` rounded once, in every
kernel, so the replay in registers is bit-for-bit the undo that will run later. Works on CUDA
tensors (and on CPU under ``TRITON_INTERPRET=1``, for tests).
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
# the first application's kernel: (entries of r per program, residual-axis elements per tile,
# warps), and one record slot per SLOT_SHARE elements of a tile (3 %: random bf16 weights miss
# 1.5 %, so a tile overflows its slots about never)
APPLY_TILE = (16, 256, 4)
SLOT_SHARE = 32
# how a tile ranks its misses: "flat" (a prefix sum over the flattened tile), or "contiguous" (a
# prefix sum along the tile's contiguous axis, within each thread's registers, then over the
# totals of the other axis: no reshape of the tile)
APPLY_SCAN = "contiguous"


def available() -> bool:
    """Whether Triton can be imported (these kernels and ``torch.compile``'s CUDA code need it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def supported(param: torch.Tensor) -> bool:
    """Whether the fused path handles this weight: a contiguous 16-bit CUDA matrix."""
    return (
        param.is_cuda and param.dim() == 2 and param.dtype in _HALF and param.is_contiguous() and available()
    )


@functools.cache
def _kernels() -> Any:
    """Compile-on-first-use, so importing vauban never needs Triton: ``(removed, shift, apply)``."""
    import triton
    import triton.language as tl

    return _removed_kernel(triton, tl), _shift_kernel(triton, tl), _apply_kernel(triton, tl)


def _removed_kernel(triton: Any, tl: Any) -> Any:
    """``r = vᵀW`` in partial sums along the residual axis (see :func:`removed`)."""

    @triton.jit
    def removed_kernel(
        w_ptr,
        v_ptr,
        part_ptr,
        n,
        d,
        s_n,
        s_d,
        PER_SPLIT: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
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

    return removed_kernel


def _shift_kernel(triton: Any, tl: Any) -> Any:
    """``W += s·r⊗v`` tile by tile, optionally recording the misses of its replayed undo
    (see :func:`shift_` and :func:`_track`)."""

    @triton.jit
    def shift_kernel(
        w_ptr,
        r_ptr,
        v_ptr,
        n,
        d,
        s_n,
        s_d,
        scale,
        back,
        idx_ptr,
        val_ptr,
        count_ptr,
        done_ptr,
        capacity,
        TRACK: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
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
                vv = tl.broadcast_to(v[None, :], (BLOCK_N, BLOCK_D))
                new = tl.fma(
                    tl.broadcast_to((r * scale)[:, None], (BLOCK_N, BLOCK_D)), vv, w.to(tl.float32)
                ).to(w.dtype)
                replay = tl.fma(
                    tl.broadcast_to((r * back)[:, None], (BLOCK_N, BLOCK_D)), vv, new.to(tl.float32)
                ).to(w.dtype)
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
            vv = tl.broadcast_to(v[None, :], (BLOCK_N, BLOCK_D))
            new = tl.fma(tl.broadcast_to((r * scale)[:, None], (BLOCK_N, BLOCK_D)), vv, w.to(tl.float32)).to(
                w.dtype
            )
            tl.store(w_ptr + offs, new, mask=inside)

    return shift_kernel


def _apply_kernel(triton: Any, tl: Any) -> Any:
    """The first application: ``r`` and the update of one block of rows, its misses in per-tile
    record slots (see :func:`apply_many`)."""

    @triton.jit
    def apply_kernel(
        w_ptr,
        v_ptr,
        r_ptr,
        n,
        s_n,
        s_d,
        scale,
        back,
        idx_ptr,
        bits_ptr,
        done_ptr,
        overflow_ptr,
        d: tl.constexpr,
        SLOTS: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
        SCAN: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = (pid * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        acc = tl.zeros((BLOCK_N,), tl.float32)
        for k in range(0, d, BLOCK_D):  # pass 1: this block of r, from HBM
            cols = (k + tl.arange(0, BLOCK_D)).to(tl.int64)
            inside = (rows[:, None] < n) & (cols[None, :] < d)
            w = tl.load(w_ptr + rows[:, None] * s_n + cols[None, :] * s_d, mask=inside, other=0.0)
            v = tl.load(v_ptr + cols, mask=cols < d, other=0.0)
            acc += tl.sum(w.to(tl.float32) * v[None, :], axis=1)
        tl.store(r_ptr + rows, acc, mask=rows < n)
        slot = tl.arange(0, SLOTS)
        for t in range(0, (d + BLOCK_D - 1) // BLOCK_D):  # pass 2: the same block again, from L2
            tile = pid * ((d + BLOCK_D - 1) // BLOCK_D) + t
            cols = (t * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
            inside = (rows[:, None] < n) & (cols[None, :] < d)
            offs = rows[:, None] * s_n + cols[None, :] * s_d
            w = tl.load(w_ptr + offs, mask=inside, other=0.0)
            v = tl.load(v_ptr + cols, mask=cols < d, other=0.0)
            vv = tl.broadcast_to(v[None, :], (BLOCK_N, BLOCK_D))
            new = tl.fma(
                tl.broadcast_to((acc * scale)[:, None], (BLOCK_N, BLOCK_D)), vv, w.to(tl.float32)
            ).to(w.dtype)
            replay = tl.fma(
                tl.broadcast_to((acc * back)[:, None], (BLOCK_N, BLOCK_D)), vv, new.to(tl.float32)
            ).to(w.dtype)
            bits = w.to(tl.int16, bitcast=True)
            miss = (replay.to(tl.int16, bitcast=True) != bits) & inside
            ones = miss.to(tl.int32)
            if SCAN == 0:  # ranks over the flattened tile
                flat = tl.reshape(ones, (BLOCK_N * BLOCK_D,))
                count = tl.sum(flat, axis=0)
            elif SCAN == 1:  # ranks down each column, after the columns before it
                per_col = tl.sum(ones, axis=0)
                count = tl.sum(per_col, axis=0)
            else:  # ranks along each row, after the rows before it
                per_row = tl.sum(ones, axis=1)
                count = tl.sum(per_row, axis=0)
            corner = (rows[:, None] == pid * BLOCK_N) & (cols[None, :] == t * BLOCK_D)
            first = tl.sum(tl.where(corner, offs, 0)).to(tl.int32)
            first_bits = tl.sum(tl.where(corner, bits.to(tl.int32), 0)).to(tl.int16)
            base = tile.to(tl.int64) * SLOTS
            fits = count <= SLOTS
            # every slot is unused when the tile overflows (a tensor comparison: Triton 3.9's
            # interpreter rejects a mask or-ed with a scalar)
            unused = slot >= tl.where(count > SLOTS, 0, count)
            tl.store(idx_ptr + base + slot, tl.zeros((SLOTS,), tl.int32) + first, mask=unused)
            tl.store(bits_ptr + base + slot, tl.zeros((SLOTS,), tl.int16) + first_bits, mask=unused)
            if fits:
                if SCAN == 0:
                    pos = tl.cumsum(flat, axis=0) - 1
                    hit = flat != 0
                    flat_offs = tl.reshape(offs, (BLOCK_N * BLOCK_D,)).to(tl.int32)
                    tl.store(idx_ptr + base + pos, flat_offs, mask=hit)
                    tl.store(bits_ptr + base + pos, tl.reshape(bits, (BLOCK_N * BLOCK_D,)), mask=hit)
                else:
                    if SCAN == 1:
                        rank = (tl.cumsum(per_col, axis=0) - per_col)[None, :] + tl.cumsum(ones, axis=0) - 1
                    else:
                        rank = (tl.cumsum(per_row, axis=0) - per_row)[:, None] + tl.cumsum(ones, axis=1) - 1
                    tl.store(idx_ptr + base + rank, offs.to(tl.int32), mask=miss)
                    tl.store(bits_ptr + base + rank, bits, mask=miss)
                tl.store(w_ptr + offs, new, mask=inside)
                tl.store(done_ptr + tile, 1)
            else:
                tl.atomic_add(overflow_ptr, 1)

    return apply_kernel


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
    removed_kernel, _, _ = _kernels()
    n, d = view.shape
    block_n, block_d = _blocks(view, REMOVED_TILE)
    row_blocks = -(-n // block_n)
    splits = max(1, min(-(-d // block_d), -(-512 // row_blocks)))  # enough programs for the chip
    per_split = -(-d // (splits * block_d)) * block_d
    splits = -(-d // per_split)
    parts = torch.empty(splits, n, dtype=torch.float32, device=view.device)
    removed_kernel[(row_blocks, splits)](
        view,
        vec.float().contiguous(),
        parts,
        n,
        d,
        view.stride(0),
        view.stride(1),
        PER_SPLIT=per_split,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=REMOVED_TILE[2],
    )
    return parts.sum(0)


@_on_view_device
def shift_(view: torch.Tensor, vec: torch.Tensor, r: torch.Tensor, scale: float) -> None:
    """``view += scale·r⊗vec`` in place (float32 math, rounded once)."""
    _, shift_kernel, _ = _kernels()
    n, d = view.shape
    block_n, block_d = _blocks(view, SHIFT_TILE)
    grid = (-(-n // block_n), -(-d // block_d))
    dummy = torch.empty(1, dtype=torch.int64, device=view.device)
    shift_kernel[grid](
        view,
        r.contiguous(),
        vec.float().contiguous(),
        n,
        d,
        view.stride(0),
        view.stride(1),
        float(scale),
        0.0,
        dummy,
        dummy,
        dummy,
        dummy,
        0,
        TRACK=False,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=SHIFT_TILE[2],
    )


def apply_(
    view: torch.Tensor, vec: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut ``view`` in place: returns ``(r, miss_index, miss_values)`` (see :func:`apply_many`)."""
    return apply_many([(view, vec, alpha)])[0]


def apply_many(
    cuts: list[tuple[torch.Tensor, torch.Tensor, float]],
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Cut each ``(view, vec, alpha)`` in place: ``(r, record_index, record_values)`` for each.

    Writing ``param.reshape(-1)[record_index] = record_values`` after the undo's shift restores
    the original bits. ``record_index`` are flat offsets into the underlying storage
    (``offset = i·stride0 + j·stride1``), which for a contiguous parameter and
    ``view = param.movedim(axis, -1)`` are indices into ``param.reshape(-1)``; ``record_values``
    the original values there (the misses, plus harmless repeats; see the module docstring).
    All kernels are launched before the one host read that checks for overflowing tiles.
    """
    launched = [_launch_apply(view, vec, alpha) for view, vec, alpha in cuts]
    over: dict[int, bool] = {}
    for device in dict.fromkeys(item[-1].device for item in launched):  # one host read per device
        mine = [i for i, item in enumerate(launched) if item[-1].device == device]
        counts = torch.cat([launched[i][-1] for i in mine]).tolist()
        over.update(zip(mine, (c > 0 for c in counts), strict=True))
    results = []
    for i, ((view, vec, alpha), (r, index, bits, done, _)) in enumerate(zip(cuts, launched, strict=True)):
        values = bits.view(view.dtype)
        if over[i]:  # tiles with more misses than slots were left untouched: the compacting kernel
            extra_index, extra_values = _track(view, vec, r, alpha, done, APPLY_TILE[:2])
            index = torch.cat([index.long(), extra_index])
            values = torch.cat([values, extra_values])
        results.append((r, index, values))
    return results


@_on_view_device
def _launch_apply(view: torch.Tensor, vec: torch.Tensor, alpha: float) -> tuple[torch.Tensor, ...]:
    """Launch the first application's kernel on one matrix (no host synchronization)."""
    _, _, apply_kernel = _kernels()
    n, d = view.shape
    block_n, block_d, warps = APPLY_TILE
    slots = max(1, block_n * block_d // SLOT_SHARE)
    programs = -(-n // block_n)
    tiles = programs * -(-d // block_d)
    if view.untyped_storage().nbytes() // view.element_size() >= 2**31:
        raise ValueError("matrices of 2**31 elements or more need int64 record indices")
    r = torch.empty(n, dtype=torch.float32, device=view.device)
    index = torch.empty(tiles * slots, dtype=torch.int32, device=view.device)
    bits = torch.empty(tiles * slots, dtype=torch.int16, device=view.device)
    done = torch.zeros(tiles, dtype=torch.int8, device=view.device)
    count = torch.zeros(1, dtype=torch.int32, device=view.device)
    apply_kernel[(programs,)](
        view,
        vec.float().contiguous(),
        r,
        n,
        view.stride(0),
        view.stride(1),
        -float(alpha),
        float(alpha),
        index,
        bits,
        done,
        count,
        d=d,
        SLOTS=slots,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        SCAN=0 if APPLY_SCAN == "flat" else 1 if view.stride(0) == 1 else 2,
        num_warps=warps,
    )
    return r, index, bits, done, count


@_on_view_device
def _track(
    view: torch.Tensor,
    vec: torch.Tensor,
    r: torch.Tensor,
    alpha: float,
    done: torch.Tensor,
    blocks: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the cut to the tiles not yet ``done`` (tiles of ``blocks``), appending their misses
    to a compacted buffer through one atomic counter: ``(index, values)``."""
    _, shift_kernel, _ = _kernels()
    vec32 = vec.float().contiguous()
    n, d = view.shape
    block_n, block_d = blocks
    grid = (-(-n // block_n), -(-d // block_d))
    capacity = max(4096, n * d // 16)
    indices, values = [], []
    while True:
        index = torch.full((capacity,), -1, dtype=torch.int64, device=view.device)
        value = torch.empty(capacity, dtype=view.dtype, device=view.device)
        count = torch.zeros(1, dtype=torch.int32, device=view.device)
        shift_kernel[grid](
            view,
            r,
            vec32,
            n,
            d,
            view.stride(0),
            view.stride(1),
            -float(alpha),
            float(alpha),
            index,
            value,
            count,
            done,
            capacity,
            TRACK=True,
            BLOCK_N=block_n,
            BLOCK_D=block_d,
            num_warps=TRACK_TILE[2],
        )
        asked = int(count)
        if asked <= capacity:  # every tile fitted: entries [0, asked) are exactly the misses
            indices.append(index[:asked].clone())
            values.append(value[:asked].clone())
            break
        kept = index >= 0  # tiles that did not fit left holes and will run again
        indices.append(index[kept])
        values.append(value[kept])
        capacity = asked  # an upper bound on what the remaining tiles need
    if len(indices) == 1:
        return indices[0], values[0]
    return torch.cat(indices), torch.cat(values)


def apply_two_pass(
    view: torch.Tensor, vec: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The previous first application (for the benchmark's ablation): :func:`removed`, then the
    compacting kernel over every tile."""
    r = removed(view, vec)
    n, d = view.shape
    blocks = _blocks(view, TRACK_TILE)
    done = torch.zeros(-(-n // blocks[0]) * -(-d // blocks[1]), dtype=torch.int8, device=view.device)
    index, values = _track(view, vec, r, alpha, done, blocks)
    return r, index, values
