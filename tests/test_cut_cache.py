"""A cut re-applied after undo reuses its cached edit only on the weights it was computed from."""

from __future__ import annotations

import pytest
import torch

from vauban import cut


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    bits = torch.int32  # the tiny models are float32
    return a.keys() == b.keys() and all(torch.equal(a[k].view(bits), b[k].view(bits)) for k in a)


@pytest.mark.parametrize("where", [1, -1])  # elements a strided sample of the tensor skips
def test_reapply_after_weights_changed_elsewhere_recomputes(tiny, where):
    model = tiny("llama")
    direction = torch.randn(64, generator=torch.Generator().manual_seed(3))
    c = cut(model, direction)
    c.undo()
    param = c._edits[len(c._edits) // 2].param
    with torch.no_grad():
        param.view(-1)[where] += 0.25  # changed behind the cut's back
    changed = _state(model)

    reference = tiny("llama")
    reference.load_state_dict(changed)
    expected = cut(reference, direction)  # a fresh cut of the changed weights

    c.apply()
    assert _same_bits(_state(model), _state(reference))
    c.undo()
    expected.undo()
    assert _same_bits(_state(model), changed)  # the undo restores the changed weights, bit for bit


def test_reapply_unchanged_uses_the_cached_edit(tiny, monkeypatch):
    model = tiny("llama")
    c = cut(model, torch.randn(64, generator=torch.Generator().manual_seed(4)))
    first = _state(model)
    c.undo()
    from vauban.edit import cutting

    monkeypatch.setattr(cutting, "apply_edit", lambda *a, **k: pytest.fail("recomputed an unchanged edit"))
    c.apply()
    assert _same_bits(_state(model), first)
