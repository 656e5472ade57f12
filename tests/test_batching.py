"""Batch sizes from free memory and the model's shape (no trial and error)."""

from __future__ import annotations

import psutil
import pytest
import torch

import vauban
from conftest import HARMFUL, HARMLESS, TINY_CONFIGS, build_model
from vauban.evaluation.evaluating import Pair, answer_scores
from vauban.runtime.batching import MEMORY_SHARE, SATURATING_TOKENS, Shape, batch_size_for, free_memory


def test_shape_reads_the_config():
    shape = Shape.of(build_model("llama"))
    assert shape == Shape(
        layers=4, hidden=64, intermediate=96, heads=4, kv_heads=2, head_dim=16, vocab=320, itemsize=4
    )
    gpt2 = Shape.of(build_model("gpt2", dtype=torch.bfloat16))
    assert (gpt2.hidden, gpt2.intermediate, gpt2.kv_heads, gpt2.head_dim) == (64, 256, 4, 16)
    assert gpt2.itemsize == 2
    moe = Shape.of(build_model("qwen3_moe"))
    assert moe.intermediate == 32 * 2  # top-2 experts of 32


def test_sequence_bytes_formula():
    shape = Shape(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=100, itemsize=2)
    activations = 10 * (6 * 8 + 3 * 16) * 2
    scores = 2 * 10 * 10 * 4
    assert shape.sequence_bytes(10) == activations + scores
    assert shape.sequence_bytes(10, cache=True) == activations + scores + 10 * 2 * 2 * 1 * 4 * 2
    logits = 5 * 100 * 4 * 3
    assert shape.sequence_bytes(10, logit_positions=5, logit_copies=3) == activations + scores + logits


def test_batch_size_from_free_memory():
    model = build_model("llama")
    per = Shape.of(model).sequence_bytes(40, logit_positions=41, logit_copies=3)
    free = int(7.5 * per / MEMORY_SHARE)
    assert batch_size_for(model, 40, 100, logit_positions=41, logit_copies=3, free=free) == 7
    assert batch_size_for(model, 40, 5, logit_positions=41, logit_copies=3, free=free) == 5
    assert batch_size_for(model, 40, 100, free=1) == 1  # never zero
    # enough memory: capped by what keeps two CPU cores busy, unless told not to saturate
    huge = 10**15
    assert batch_size_for(model, 512, 100, free=huge) == SATURATING_TOKENS["cpu"] // 512
    assert batch_size_for(model, 512, 100, free=huge, saturate=False) == 100
    # a decoding step feeds one token per sequence
    assert batch_size_for(model, 512, 100, free=huge, cache=True) == 100


def test_free_memory_on_cpu():
    assert 0 < free_memory(torch.device("cpu")) <= psutil.virtual_memory().total


def test_answer_scores_same_for_any_batch_size(tokenizer):
    model = build_model("qwen2")
    pairs = [
        ("What is bread?", "Bread is baked dough."),
        ("Name a sea.", "The North Sea."),
        ("Say hi.", "Hi there, how are you today?"),
    ]
    direction = torch.randn(64, generator=torch.Generator().manual_seed(0))
    with vauban.cut(model, direction):
        auto = answer_scores(Pair(model, model), tokenizer, pairs)
        ones = answer_scores(Pair(model, model), tokenizer, pairs, batch_size=1)
    # each batch runs its rows' shared chat opening once (batching.last_logits): another batch
    # splits the work differently, so float32 rounding differs at the 1e-5 level
    for a, b in zip(vars(auto).values(), vars(ones).values(), strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-7)
    assert auto.kl > 0 and auto.first_token_kl > 0


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_last_logits_share_the_opening_and_agree_with_one_padded_pass(family, tokenizer):
    """The shared opening run once (keys and values repeated) gives the logits of the plain
    left-padded pass, for every family (sliding windows, sinks, absolute positions)."""
    from vauban.runtime.batching import common_prefix, last_logits, left_pad
    from vauban.text.formatting import Formatting
    from vauban.text.prompts import encode_chat

    model = build_model(family)
    seqs = encode_chat(tokenizer, HARMLESS[:4] + HARMFUL[:2], Formatting(system_prompt="Be brief."))
    assert common_prefix(seqs) >= 8  # the template's opening: system block and user header
    ids, mask, positions = left_pad(seqs, 256, torch.device("cpu"))
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
        shared = last_logits(model, seqs, 5, 256)
    assert shared.shape == (6, 5, plain.shape[-1])
    torch.testing.assert_close(shared, plain[:, -5:], atol=1e-4, rtol=1e-4)
    assert common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2


def test_last_logits_carry_gradients_through_the_opening(tokenizer):
    from vauban.runtime.batching import last_logits
    from vauban.text.prompts import encode_chat

    model = build_model("llama")
    weight = model.model.layers[0].mlp.down_proj.weight
    from vauban.text.formatting import Formatting

    seqs = encode_chat(tokenizer, HARMLESS[:3], Formatting(system_prompt="Be brief."))
    last_logits(model, seqs, 1, 256).sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_last_logits_run_the_opening_once(tokenizer):
    from vauban.runtime.batching import common_prefix, last_logits
    from vauban.text.formatting import Formatting
    from vauban.text.prompts import encode_chat

    model = build_model("qwen2")
    seqs = encode_chat(tokenizer, HARMFUL, Formatting(system_prompt="Be brief."))
    shapes = []
    model.model.embed_tokens.register_forward_hook(lambda _m, args, _out: shapes.append(tuple(args[0].shape)))
    with torch.no_grad():
        last_logits(model, seqs, 2, 256)
    shared = common_prefix(seqs)
    assert shapes == [(1, shared), (len(seqs), max(map(len, seqs)) - shared)]
