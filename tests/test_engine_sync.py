"""An attached engine is sent exactly the tensors a cut changed, when it changed them (no vLLM
needed: a recording engine stands in for it; tests/test_vllm_engine.py runs the real one)."""

from __future__ import annotations

import torch

from conftest import HARMFUL, HARMLESS
from vauban import cut, measure
from vauban.runtime.engines import VllmEngine, attach, engine_for


class Recording(VllmEngine):
    """A VllmEngine without vLLM: ``load`` records the names it would send."""

    def __init__(self) -> None:  # no vllm.LLM
        self.seen, self.sent, self.loads = {}, 0, []

    def load(self, model, names):
        self.loads.append(sorted(names))
        self.sent += len(names)


def test_a_cut_and_its_undo_are_each_sent_once(tiny, tokenizer):
    model = tiny("qwen2")
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, select="geometry")
    engine = Recording()
    attach(model, engine)
    assert engine_for(model) is engine and engine.loads == []  # attached in step: nothing to send
    with cut(model, direction) as applied:
        engine_for(model)
        engine_for(model)  # nothing changed since: nothing sent
        assert engine.loads == [sorted(applied.edited)]
    engine_for(model)
    assert engine.loads == [sorted(applied.edited)] * 2  # the undo sends the same tensors back
    again = cut(model, direction)  # re-applied from its cache: still seen
    engine_for(model)
    again.undo()
    engine_for(model)
    assert len(engine.loads) == 4
    with torch.no_grad():  # a change outside vauban's edits (here through torch) is seen too
        model.model.layers[0].mlp.down_proj.weight.mul_(1.0)
    engine_for(model)
    assert engine.loads[-1] == ["model.layers.0.mlp.down_proj.weight"]
    attach(model, None)
    assert engine_for(model) is None
