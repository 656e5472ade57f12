"""The fused cut kernels (vauban.runtime.kernels), run on CPU through Triton's interpreter.

Skipped where Triton is not installed, except in CI, which installs it with the ``dev`` extra
(CUDA builds of PyTorch bring their own; the GPU benchmark checks the compiled kernels on the
device). The interpreter rounds bfloat16 differently from a
GPU, so values are compared against PyTorch in float16; exactness of undo holds in both.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

# CI (.ci/run) sets TRITON_INTERPRET=1 for the whole run, so Triton may already be imported, in
# interpreter mode, by the time this module is; and VAUBAN_REQUIRE_TRITON=1, so that a missing
# Triton fails the run instead of skipping these tests.
interpreted_already = os.environ.get("TRITON_INTERPRET") == "1"
if torch.cuda.is_available() or ("triton" in sys.modules and not interpreted_already):
    pytest.skip(
        "interpreter tests: CPU-only processes (benchmarks/gpu.py checks the GPU)", allow_module_level=True
    )
os.environ["TRITON_INTERPRET"] = "1"  # read when Triton is imported
if os.environ.get("VAUBAN_REQUIRE_TRITON") == "1":
    import triton  # noqa: F401  (CI: these tests must run)
else:
    pytest.importorskip("triton")

from vauban import cut  # noqa: E402  (after the Triton set-up above)
from vauban.runtime import kernels  # noqa: E402


@pytest.fixture
def interpreted(monkeypatch):
    monkeypatch.setattr(kernels, "supported", lambda p: p.dim() == 2 and p.dtype in kernels._HALF)
    kernels._kernels.cache_clear()
    yield
    kernels._kernels.cache_clear()


@pytest.mark.parametrize(("shape", "axis"), [((96, 40), 0), ((40, 96), 1), ((300, 70), 0)])
def test_apply_then_undo_is_bit_exact(interpreted, shape, axis):
    torch.manual_seed(0)
    w = (torch.randn(*shape) * 0.5).half()
    w.view(-1)[3] = -0.0  # a sign bit a float comparison would miss
    original = w.clone()
    view = w.movedim(axis, -1)
    v = torch.randn(view.shape[1])
    v /= v.norm()
    r_ref = view.double() @ v.double()
    new_ref = (view.float() - r_ref.float().unsqueeze(-1) * v).half()
    r, index, values = kernels.apply_(view, v, 1.0)
    assert torch.allclose(r.double(), r_ref, rtol=1e-5, atol=1e-5)
    assert (view != new_ref).float().mean() < 0.01  # float32 math, one rounding (r's last bits aside)
    # every record entry holds the original bits at its index (misses, and harmless repeats)
    assert torch.equal(original.view(-1)[index.long()].view(torch.int16), values.view(torch.int16))
    kernels.shift_(view, v, r, 1.0)
    w.view(-1)[index] = values
    assert torch.equal(w.view(torch.int16), original.view(torch.int16))


def test_overflowing_miss_buffer_loses_nothing(interpreted, monkeypatch):
    """Tiles whose misses do not fit are retried with a buffer of the size asked for."""
    torch.manual_seed(1)
    w = torch.randn(64, 512).bfloat16()
    original = w.clone()
    v = torch.randn(512)
    v /= v.norm()
    monkeypatch.setattr(kernels, "SLOT_SHARE", 512)  # 8 slots a tile overflow: the compacting kernel
    monkeypatch.setattr(kernels, "max", lambda *a: 8, raising=False)  # whose capacity 8 overflows too
    r, index, values = kernels.apply_(w, v, 1.5)
    assert index.numel() > 8
    kernels.shift_(w, v, r, 1.5)
    w.view(-1)[index] = values
    assert torch.equal(w.view(torch.int16), original.view(torch.int16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cut_through_kernels_reverses_exactly(interpreted, tiny, dtype):
    model = tiny("llama", dtype=dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    direction = torch.randn(64)
    c = cut(model, direction)
    assert all(e.fused for e in c._edits)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    c.undo()
    after = model.state_dict()
    assert all(torch.equal(after[k].view(torch.int16), v.view(torch.int16)) for k, v in before.items())
    c.apply()  # re-applying a cached edit gives the first application's bits
    assert all(torch.equal(model.state_dict()[k], v) for k, v in first.items())
    c.undo()
