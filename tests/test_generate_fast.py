"""The static-cache greedy loop (the CUDA path of ``generate``) gives ``generate``'s tokens.

Run on CPU in float32 without the CUDA graph: the graph replays exactly the step tested here.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from conftest import HARMFUL, HARMLESS
from vauban.batching import Shape, left_pad
from vauban.generate import _has_hooks, fast_loop_ok, static_greedy, stop_token_ids
from vauban.prompts import encode_chat, pad_id
from vauban.steering import Steering

TOKENS = 10


def reference(model, inputs, mask, stops, pad):
    config = GenerationConfig(do_sample=False, max_new_tokens=TOKENS, eos_token_id=stops, pad_token_id=pad)
    out = model.generate(input_ids=inputs, attention_mask=mask, generation_config=config)
    return out[:, inputs.shape[1] :]


def batch(tokenizer):
    ids = encode_chat(tokenizer, HARMFUL[:3] + HARMLESS[:3])
    return left_pad(ids, pad_id(tokenizer), torch.device("cpu"))[:2]


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gpt2", "qwen3_moe"])
def test_static_greedy_matches_generate(tiny, tokenizer, model_type):
    model = tiny(model_type)
    assert fast_loop_ok(model)
    inputs, mask = batch(tokenizer)
    pad = pad_id(tokenizer)
    free = reference(model, inputs, mask, [258], pad)
    # stop on the most common free-running token, so rows end early and at different steps
    common = int(free[:, 1:].flatten().mode().values)
    stops = [258, common]
    expected = reference(model, inputs, mask, stops, pad)
    got = static_greedy(model, inputs, mask, TOKENS, stops, pad, graph=False)
    assert got.shape == (inputs.shape[0], TOKENS)
    assert torch.equal(got[:, : expected.shape[1]], expected)
    assert (got[:, expected.shape[1] :] == pad).all()  # all rows stopped: the rest is padding


def test_static_greedy_runs_steering_hooks(tiny, tokenizer):
    model = tiny("llama")
    inputs, mask = batch(tokenizer)
    pad = pad_id(tokenizer)
    direction = torch.randn(64)
    stops = stop_token_ids(model, tokenizer)
    with Steering(model, direction, 1.0):
        expected = reference(model, inputs, mask, stops, pad)
        got = static_greedy(model, inputs, mask, TOKENS, stops, pad)  # hooks: no graph
    plain = static_greedy(model, inputs, mask, TOKENS, stops, pad, graph=False)
    assert torch.equal(got[:, : expected.shape[1]], expected)
    assert not torch.equal(got, plain)  # the hooks really changed the answers


def test_fast_loop_scope(tiny):
    assert not fast_loop_ok(tiny("gemma2"))  # sliding-window caches: generate's path
    llama = tiny("llama")
    # 4 layers x (keys + values) x 2 kv heads x head_dim 16 x 4 bytes
    shape = Shape.of(llama)
    assert shape.sequence_bytes(1, cache=True) - shape.sequence_bytes(1) == 4 * 2 * 2 * 16 * 4


def test_only_foreign_hooks_turn_the_graph_off(tiny):
    model = tiny("llama")
    model(torch.tensor([[1, 2, 3]]), output_hidden_states=True)  # transformers installs its recorders
    assert not _has_hooks(model)
    with Steering(model, torch.randn(64), 1.0):
        assert _has_hooks(model)
