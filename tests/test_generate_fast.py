"""The static-cache greedy loop (the CUDA path of ``generate``) gives ``generate``'s tokens.

Run on CPU in float32 without the CUDA graph: the graph replays exactly the step tested here.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from conftest import HARMFUL, HARMLESS
from vauban.methods.steering import Steering
from vauban.runtime import fast_decode, shrinking
from vauban.runtime.batching import Shape, left_pad
from vauban.runtime.generating import _has_hooks, fast_loop_ok, static_greedy, stop_token_ids
from vauban.text.prompts import encode_chat, pad_id

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


def test_only_host_side_hooks_turn_the_graph_off(tiny):
    model = tiny("llama")
    model(torch.tensor([[1, 2, 3]]), output_hidden_states=True)  # transformers installs its recorders
    assert not _has_hooks(model)
    with Steering(model, torch.randn(64), 1.0):
        assert not _has_hooks(model)  # pure tensor work: replayed from the graph
    with Steering(model, torch.randn(64), 1.0, record=True):
        assert _has_hooks(model)  # reads projections on the host at every step
    handle = model.model.layers[0].register_forward_hook(lambda *a: None)
    assert _has_hooks(model)  # a user's hook may have side effects the graph would skip
    handle.remove()


def test_chunked_prefill_matches_generate(tiny, tokenizer):
    """Rows prefilled in several length-sorted chunks (each padded to its own longest prompt)
    give the same tokens as one padded batch."""
    model = tiny("llama")
    inputs, mask = batch(tokenizer)
    pad = pad_id(tokenizer)
    expected = reference(model, inputs, mask, [258], pad)
    for tokens in (1, 150, 10_000):  # one row per chunk, a few rows, everything at once
        got = static_greedy(model, inputs, mask, TOKENS, [258], pad, graph=False, chunk_tokens=tokens)
        assert torch.equal(got[:, : expected.shape[1]], expected)


def test_compiled_decode_step_is_one_graph_for_all_layers(tiny, tokenizer):
    """The decode step traced by torch.compile (backend 'eager': the tracing without code
    generation, which CUDA runs with Inductor) gives the same tokens, compiles one graph shared
    by every layer, and recompiles once, with dynamic sizes, for a batch of another shape."""
    torch._dynamo.reset()
    graphs = []

    def counting(gm, inputs):
        graphs.append(gm)
        return gm.forward

    model = tiny("llama")
    inputs, mask = batch(tokenizer)
    pad = pad_id(tokenizer)
    expected = reference(model, inputs, mask, [258], pad)
    got = static_greedy(model, inputs, mask, TOKENS, [258], pad, graph=False, compile=counting)
    assert torch.equal(got[:, : expected.shape[1]], expected)
    assert len(graphs) == 1  # 4 layers, one graph
    static_greedy(model, inputs[:4], mask[:4], TOKENS + 3, [258], pad, graph=False, compile=counting)
    assert len(graphs) == 2
    # nothing of the call is left on the model
    assert not any("_vauban" in name for name, _ in model.named_buffers())
    assert model.config._attn_implementation != fast_decode.ATTENTION
    assert not any("forward" in vars(layer) for layer in model.model.layers)


def test_unsupported_attention_falls_back_to_generate(tiny, tokenizer, monkeypatch):
    """A model whose attention bypasses transformers' interface is generated by ``generate``."""
    model = tiny("llama")
    inputs, mask = batch(tokenizer)
    pad = pad_id(tokenizer)
    expected = reference(model, inputs, mask, [258], pad)
    monkeypatch.setattr(fast_decode, "ATTENTION", "sdpa")  # the loop's buffers are never filled
    got = static_greedy(model, inputs, mask, TOKENS, [258], pad, graph=False)
    assert torch.equal(got[:, : expected.shape[1]], expected)


def test_logits_processors_send_both_loops_to_generate(tiny, tokenizer):
    """A generation config that adds a logits processor (Qwen2.5-Instruct ships
    ``repetition_penalty`` 1.05) is not the plain argmax: neither hand-written loop takes the
    model, and :func:`static_greedy` gives ``generate``'s tokens, penalty included."""
    model = tiny("qwen2")
    inputs, mask = batch(tokenizer)
    pad = pad_id(tokenizer)
    plain = static_greedy(model, inputs, mask, TOKENS, [258], pad, graph=False)
    model.generation_config.repetition_penalty = 1.05
    assert not shrinking.plain_argmax(model)
    assert not fast_loop_ok(model) and not shrinking.supported(model)
    model.generation_config.repetition_penalty = 3.0  # strong enough to change a random model's answers
    expected = reference(model, inputs, mask, [258], pad)
    got = static_greedy(model, inputs, mask, TOKENS, [258], pad, graph=False)
    assert torch.equal(got[:, : expected.shape[1]], expected)
    assert not torch.equal(got, plain)  # the penalty really changed the answers
    model.generation_config.repetition_penalty = 1.0  # spelled out, but neutral
    assert shrinking.plain_argmax(model) and fast_loop_ok(model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and Inductor need a GPU")
@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_cuda_graph_and_compiled_step_match_generate(tiny, tokenizer, model_type):
    """On CUDA, the replayed graph of the compiled step gives ``generate``'s tokens, with and
    without steering hooks (which stay in the graph)."""
    model = tiny(model_type).cuda()
    inputs, mask = (t.cuda() for t in batch(tokenizer))
    pad = pad_id(tokenizer)
    stops = stop_token_ids(model, tokenizer)
    expected = reference(model, inputs, mask, stops, pad)
    for compile in (False, True):
        got = static_greedy(model, inputs, mask, TOKENS, stops, pad, graph=True, compile=compile)
        assert torch.equal(got[:, : expected.shape[1]], expected)
    with Steering(model, torch.randn(64), 1.0):
        assert not _has_hooks(model)
        steered = reference(model, inputs, mask, stops, pad)
        got = static_greedy(model, inputs, mask, TOKENS, stops, pad, graph=True, compile=True)
    assert torch.equal(got[:, : steered.shape[1]], steered)
