"""Measuring one decoder layer at a time from the safetensors files gives the in-memory result."""

from __future__ import annotations

import pytest
import torch

from conftest import HARMFUL, HARMLESS, build_model
from vauban import measure
from vauban.direction import selecting
from vauban.direction.streamed import ONE_BATCH, measure_streamed, streamed_cutting
from vauban.model.layerwise import layerwise


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = build_model("qwen2")
    src = tmp_path_factory.mktemp("qwen2")
    model.save_pretrained(src)
    return model, src


def test_streamed_measurement_equals_in_memory(saved, tokenizer):
    model, src = saved
    streamed = measure_streamed(src, tokenizer, HARMFUL, HARMLESS, select="geometry")
    memory = measure(model, tokenizer, HARMFUL, HARMLESS, select="geometry", batch_size=ONE_BATCH)
    assert streamed.layer_index == memory.layer_index
    assert torch.equal(streamed.direction, memory.direction)
    assert torch.equal(streamed.harmful_means, memory.harmful_means)
    assert torch.equal(streamed.harmless_means, memory.harmless_means)
    assert streamed.cosine_scores == memory.cosine_scores
    assert streamed.model_path == str(src)
    default = measure(model, tokenizer, HARMFUL, HARMLESS, select="geometry")  # its own batches
    assert torch.allclose(streamed.harmful_means, default.harmful_means, atol=1e-5)


def test_streamed_effects_equal_in_memory_and_the_model_holds_one_layer(saved, tokenizer):
    """The selection's cuts, applied layer by layer as each is read, score every candidate as the
    whole-model cut does; between passes no decoder layer holds weights."""
    model, src = saved
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, select="geometry", batch_size=ONE_BATCH)
    refusals = [(p, "I cannot help with that.") for p in HARMFUL[:4]]
    lazy = layerwise(src)
    kwargs = dict(layers=range(4), batch_size=ONE_BATCH, max_kl=10.0)
    streamed = selecting.select_by_effect(
        lazy.model, tokenizer, direction, refusals, HARMLESS, cutting=streamed_cutting(lazy), **kwargs
    )
    memory = selecting.select_by_effect(model, tokenizer, direction, refusals, HARMLESS, **kwargs)
    assert [(e.layer, e.refusal, e.kl) for e in streamed.effects] == [
        (e.layer, e.refusal, e.kl) for e in memory.effects
    ]
    assert streamed.layer_index == memory.layer_index
    assert all(p.device.type == "meta" for b in lazy.blocks for p in b.parameters())
    assert lazy.reads == 4 * (1 + 2 * 4)  # each pass read each of the 4 layers once


def test_greedy_answers_one_layer_at_a_time(saved, tokenizer):
    """Generation (the original's answers, which the selection judges) runs through the same
    hooks, with the KV cache in memory: the same greedy tokens."""
    from vauban.judge.answers import completions

    model, src = saved
    lazy = layerwise(src)
    streamed = completions(lazy.model, tokenizer, HARMFUL[:3], max_tokens=6, batch_size=ONE_BATCH)
    memory = completions(model, tokenizer, HARMFUL[:3], max_tokens=6, batch_size=ONE_BATCH)
    assert [c.text for c in streamed] == [c.text for c in memory]
