"""The CPU loop that drops finished rows (:mod:`vauban.runtime.shrinking`) gives ``generate``'s tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from conftest import HARMFUL, HARMLESS
from vauban.methods.steering import Steering
from vauban.runtime import shrinking
from vauban.runtime.batching import common_prefix, left_pad
from vauban.runtime.generating import generate_tokens, shrinking_ok, stop_token_ids
from vauban.text.formatting import Formatting
from vauban.text.prompts import encode_chat, pad_id

TOKENS = 12


def reference(model, inputs, mask, stops, pad, tokens=TOKENS):
    config = GenerationConfig(do_sample=False, max_new_tokens=tokens, eos_token_id=stops, pad_token_id=pad)
    out = model.generate(input_ids=inputs, attention_mask=mask, generation_config=config)
    new = out[:, inputs.shape[1] :]
    return torch.nn.functional.pad(new, (0, tokens - new.shape[1]), value=pad)


def batch(tokenizer):
    ids = encode_chat(tokenizer, HARMFUL + HARMLESS)
    return left_pad(ids, pad_id(tokenizer), torch.device("cpu"))[:2]


def early_stops(model, inputs, mask, pad):
    """Stop tokens that end some rows (at least 3) before the last step and not all of them."""
    free = reference(model, inputs, mask, [258], pad)[:, :-1]
    stops = [258]
    for token in free.unique().tolist():
        if torch.isin(free, torch.tensor(stops)).any(-1).sum() >= 3:
            break
        if not torch.isin(free, torch.tensor([*stops, token])).any(-1).all():
            stops.append(token)
    return stops


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma2"])
def test_shrinking_greedy_matches_generate(tiny, tokenizer, model_type):
    model = tiny(model_type)
    assert shrinking.supported(model)
    inputs, mask = batch(tokenizer)
    pad = pad_id(tokenizer)
    stops = early_stops(model, inputs, mask, pad)
    expected = reference(model, inputs, mask, stops, pad)
    got = shrinking.greedy(model, inputs, mask, TOKENS, stops, pad)
    ended = (expected[:, :-1] == pad).any(-1)  # rows that stopped before the last step
    assert ended.sum() >= 3 and not ended.all()  # rows really left the batch, at different steps
    assert torch.equal(got, expected)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gpt2"])
def test_shared_opening_is_prefilled_once_with_generates_tokens(tiny, tokenizer, model_type):
    """Prompts with a system prompt share a long opening: it is prefilled once, as one row, and
    the answers are still ``generate``'s (rows stopping at different steps included)."""
    model = tiny(model_type)
    ids = encode_chat(tokenizer, HARMFUL + HARMLESS, Formatting(system_prompt="Answer briefly and kindly."))
    inputs, mask = left_pad(ids, pad_id(tokenizer), torch.device("cpu"))[:2]
    pad = pad_id(tokenizer)
    stops = early_stops(model, inputs, mask, pad)
    expected = reference(model, inputs, mask, stops, pad)
    shapes = []
    embed = model.get_input_embeddings()
    handle = embed.register_forward_hook(lambda _m, args, _out: shapes.append(tuple(args[0].shape)))
    got = shrinking.greedy(model, inputs, mask, TOKENS, stops, pad)
    handle.remove()
    shared = common_prefix(ids)
    assert shared >= 30  # the system block and the user header
    assert shapes[:2] == [(1, shared), (len(ids), max(map(len, ids)) - shared)]
    assert ((expected[:, :-1] == pad).any(-1)).sum() >= 3
    assert torch.equal(got, expected)


def test_shrinking_greedy_all_rows_stop(tiny, tokenizer):
    model = tiny("llama")
    inputs, mask = batch(tokenizer)
    pad = pad_id(tokenizer)
    first = reference(model, inputs, mask, [258], pad, tokens=1)[:, 0].tolist()
    got = shrinking.greedy(model, inputs, mask, TOKENS, first, pad)  # every row stops at once
    assert torch.equal(got[:, 0], torch.tensor(first)) and (got[:, 1:] == pad).all()


def test_generate_tokens_takes_the_shrinking_loop_with_generates_tokens(tiny, tokenizer, monkeypatch):
    model = tiny("qwen2")
    prompts = HARMFUL + HARMLESS
    calls = []
    real = shrinking.greedy
    monkeypatch.setattr(shrinking, "greedy", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = generate_tokens(model, tokenizer, prompts, max_tokens=TOKENS, batch_size=5)
    assert len(calls) == 3  # 12 prompts in batches of 5
    inputs, mask = left_pad(encode_chat(tokenizer, prompts), pad_id(tokenizer), torch.device("cpu"))[:2]
    stops = stop_token_ids(model, tokenizer)
    expected = [row for row in reference(model, inputs, mask, stops, pad_id(tokenizer)).tolist()]
    plain = [row for row in generate_tokens(model, tokenizer, prompts, max_tokens=TOKENS, batch_size=12)]
    assert got == plain == expected


def test_shrinking_scope(tiny):
    model = tiny("llama")
    assert shrinking_ok(model)
    with Steering(model, torch.randn(64), 1.0):
        assert shrinking_ok(model)  # pure tensor work on each row
    with Steering(model, torch.randn(64), 1.0, record=True):
        assert not shrinking_ok(model)  # records every step's batch on the host
    model.generation_config.repetition_penalty = 1.1  # a logits processor: generate's path
    assert not shrinking.supported(model)
    model.generation_config.repetition_penalty = 1.0  # spelled out, but neutral
    model.generation_config.temperature = 0.7  # sampling knobs do not change greedy answers
    assert shrinking.supported(model)
