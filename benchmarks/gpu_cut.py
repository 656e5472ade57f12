"""The cut section of ``benchmarks/gpu.py``: the first application of the cut to every
residual-writing matrix, PyTorch vs the fused kernel (one per matrix) vs the previous two kernels,
against the bound of reading and writing each matrix once; then ``vauban.cut`` itself, apply + undo.

``b`` is gpu.py's ``Bench`` (``device``, ``rows``, ``sync()``, ``time()``).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from vauban import cut
from vauban.model import arch
from vauban.runtime import kernels

NOMINAL_BW = 3.0e12  # B/s, the reference
TILES = ((16, 256, 4), (16, 256, 8), (32, 128, 4), (32, 256, 8), (8, 512, 4), (64, 64, 4))

Mats = list[tuple[str, torch.Tensor, int]]
Restore = Callable[[], None]  # puts back the saved weights
Exact = Callable[[], bool]  # are the weights bit-identical to the saved ones


def writers(model: Any) -> Mats:
    layers = list(range(arch.num_layers(model)))
    return [(w.name, w.weight, w.axis) for w in arch.residual_writers(model, layers)]


def apply_undo_ms(b: Any, apply: Callable[[], Any], undo: Callable[[Any], None]) -> tuple[float, float, Any]:
    """Median milliseconds of ``apply`` and of ``undo`` over three synchronized rounds, after one
    untimed round (the first compiles the kernels); and the last round's edits."""
    undo(apply())
    times_apply, times_undo = [], []
    for _ in range(3):
        b.sync()
        t0 = time.perf_counter()
        edits = apply()
        b.sync()
        t1 = time.perf_counter()
        undo(edits)
        b.sync()
        times_apply.append(t1 - t0)
        times_undo.append(time.perf_counter() - t1)
    return sorted(times_apply)[1] * 1e3, sorted(times_undo)[1] * 1e3, edits


def bounds(b: Any, mats: Mats) -> dict[str, Any]:
    """Bytes of all matrices, and the time to read and write each once (nominal, measured)."""
    nbytes = sum(w.numel() * w.element_size() for _, w, _ in mats)
    r: dict[str, Any] = {
        "matrices": len(mats),
        "GB": nbytes / 1e9,
        "bound_ms_3TBps": 2 * nbytes / NOMINAL_BW * 1e3,
    }
    copy_bw = b.rows.get("ceilings", {}).get("copy_GBps")
    if copy_bw and math.isfinite(copy_bw):
        r["bound_ms_measured_bw"] = 2 * nbytes / (copy_bw * 1e9) * 1e3
    return r


def cut_bench(b: Any, model: Any, direction: torch.Tensor) -> dict[str, Any]:
    mats = writers(model)
    r = bounds(b, mats)
    bound = r.get("bound_ms_measured_bw", r["bound_ms_3TBps"])
    v = direction.to(b.device, torch.float32)
    saved = [w.detach().clone() for _, w, _ in mats]

    def restore() -> None:
        for (_, w, _), s in zip(mats, saved, strict=True):
            w.data.copy_(s)

    def exact() -> bool:
        return all(
            torch.equal(w.view(torch.int16), s.view(torch.int16))
            for (_, w, _), s in zip(mats, saved, strict=True)
        )

    with torch.no_grad():
        r.update(torch_level(b, mats, v, bound, restore))
    if b.device.type == "cuda" and kernels.available():
        r.update(kernel_level(b, mats, v, bound, restore, exact))
    r.update(api_level(b, model, direction, bound, restore, exact))
    return r


def torch_bf16(mats: Mats, v: torch.Tensor) -> None:
    """The issue's baseline: W -= outer(d, d @ W), in the weights' dtype."""
    d16 = v.to(mats[0][1].dtype)
    for _, w, axis in mats:
        view = w.data.movedim(axis, 0)
        view -= torch.outer(d16, d16 @ view)


def torch_fp32(mats: Mats, v: torch.Tensor) -> None:
    for _, w, axis in mats:
        view = w.data.movedim(axis, 0)
        view.copy_((view.float() - torch.outer(v, v @ view.float())).to(view.dtype))


def torch_level(b: Any, mats: Mats, v: torch.Tensor, bound: float, restore: Restore) -> dict[str, Any]:
    r: dict[str, Any] = {}
    for name, fn in (("torch_bf16", torch_bf16), ("torch_fp32", torch_fp32)):
        t, _ = b.time(lambda fn=fn: fn(mats, v), repeat=3)
        r[f"{name}_ms"] = t * 1e3
        r[f"{name}_x_bound"] = t * 1e3 / bound
        restore()
    return r


def api_level(
    b: Any, model: Any, direction: torch.Tensor, bound: float, restore: Restore, exact: Exact
) -> dict[str, Any]:
    """``vauban.cut`` (fused) and ``vauban.cut`` with the PyTorch path, apply + undo."""
    r: dict[str, Any] = {}
    for label, fused in (("api_fused", True), ("api_torch", False)):
        original = kernels.supported
        if not fused:
            kernels.supported = lambda p: False
        try:
            apply_ms, undo_ms, _ = apply_undo_ms(b, lambda: cut(model, direction), lambda c: c.undo())
            r[f"{label}_apply_ms"] = apply_ms
            r[f"{label}_undo_ms"] = undo_ms
            r[f"{label}_undo_bit_exact"] = exact()
            r[f"{label}_apply_x_bound"] = r[f"{label}_apply_ms"] / bound
            r[f"{label}_undo_x_bound"] = r[f"{label}_undo_ms"] / bound
        finally:
            kernels.supported = original
        restore()
    return r


def undo_edits(mats: Mats, views: list[torch.Tensor], v: torch.Tensor, edits: list[Any]) -> None:
    """Undo a kernel application: shift back by the recorded r, then put back the missed bits."""
    for view, (rr, _, _) in zip(views, edits, strict=True):
        kernels.shift_(view, v, rr, 1.0)
    for (_, w, _), (_, index, values) in zip(mats, edits, strict=True):
        w.data.view(-1)[index] = values


def kernel_level(
    b: Any,
    mats: Mats,
    v: torch.Tensor,
    bound: float,
    restore: Restore,
    exact: Exact,
) -> dict[str, Any]:
    """The fused first application vs the previous two kernels, its tile sweep, and accuracy."""
    r: dict[str, Any] = {}
    views = [w.data.movedim(axis, -1) for _, w, axis in mats]
    undo = functools.partial(undo_edits, mats, views, v)
    designs = {
        "fused": lambda: kernels.apply_many([(view, v, 1.0) for view in views]),
        "fused_flat_scan": lambda: kernels.apply_many([(view, v, 1.0) for view in views]),
        "two_pass": lambda: [kernels.apply_two_pass(view, v, 1.0) for view in views],
    }
    for name, apply in designs.items():
        kernels.APPLY_SCAN = "flat" if name == "fused_flat_scan" else "contiguous"
        apply_ms, undo_ms, edits = apply_undo_ms(b, apply, undo)
        r[f"{name}_apply_ms"] = apply_ms
        r[f"{name}_apply_x_bound"] = apply_ms / bound
        r[f"{name}_undo_ms"] = undo_ms
        r[f"{name}_undo_bit_exact"] = exact()
        r[f"{name}_record_MB"] = (
            sum(i.numel() * i.element_size() + x.numel() * x.element_size() for _, i, x in edits) / 1e6
        )
        restore()
    r.update(tile_sweep(b, designs["fused"], undo, restore, exact))
    r.update(shift_only(b, mats, views, v, bound, restore))
    r.update(accuracy(mats, v, restore))
    return r


def tile_sweep(
    b: Any, apply: Callable[[], Any], undo: Callable[[Any], None], restore: Restore, exact: Exact
) -> dict[str, Any]:
    """The fused application's time and exactness at each tile of ``TILES``."""
    r: dict[str, Any] = {}
    default = kernels.APPLY_TILE
    for tile in TILES:
        key = f"sweep_{'x'.join(map(str, tile))}"
        kernels.APPLY_TILE = tile
        try:
            r[f"{key}_ms"], _, _ = apply_undo_ms(b, apply, undo)
            r[f"{key}_exact"] = exact()
        except Exception as err:  # a tile that does not compile is a row, not a failure
            r[f"{key}_error"] = f"{type(err).__name__}: {err}"[:200]
        finally:
            kernels.APPLY_TILE = default
            restore()
    return r


def shift_only(
    b: Any, mats: Mats, views: list[torch.Tensor], v: torch.Tensor, bound: float, restore: Restore
) -> dict[str, Any]:
    """How often the kernel misses (elements to record), and the time of the shift alone."""
    misses = [kernels.apply_two_pass(view, v, 1.0) for view in views]
    r: dict[str, Any] = {
        "misses_per_element": sum(i.numel() for _, i, _ in misses) / sum(w.numel() for _, w, _ in mats)
    }
    restore()
    t, _ = b.time(
        lambda: [kernels.shift_(view, v, rr, -1.0) for view, (rr, _, _) in zip(views, misses, strict=True)],
        repeat=3,
    )
    r["shift_only_ms"] = t * 1e3
    r["shift_only_x_bound"] = t * 1e3 / bound
    restore()
    return r


def accuracy(mats: Mats, v: torch.Tensor, restore: Restore) -> dict[str, Any]:
    """The fused cut against float32 PyTorch math on one matrix."""
    _, w, axis = mats[1]
    view = w.data.movedim(axis, -1)
    rr = view.float() @ v
    ref = (view.float() - rr.unsqueeze(-1) * v).to(w.dtype)
    got_r, _, _ = kernels.apply_(view, v, 1.0)
    r = {
        "fused_r_rel_err": float((got_r - rr).norm() / rr.norm()),
        "fused_equal_to_fp32_torch_frac": float((view == ref).float().mean()),
    }
    restore()
    return r
