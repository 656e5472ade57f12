"""Batch sizes from free memory and the model's shape (no trial and error)."""

from __future__ import annotations

import psutil
import pytest
import torch

import vauban
from conftest import build_model
from vauban.batching import MEMORY_SHARE, SATURATING_TOKENS, Shape, batch_size_for, free_memory
from vauban.evaluating import Pair, answer_scores


def test_shape_reads_the_config():
    shape = Shape.of(build_model("llama"))
    assert shape == Shape(layers=4, hidden=64, intermediate=96, heads=4, kv_heads=2, head_dim=16,
                          vocab=320, itemsize=4)
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
    pairs = [("What is bread?", "Bread is baked dough."), ("Name a sea.", "The North Sea."),
             ("Say hi.", "Hi there, how are you today?")]
    direction = torch.randn(64, generator=torch.Generator().manual_seed(0))
    with vauban.cut(model, direction):
        auto = answer_scores(Pair(model, model), tokenizer, pairs)
        ones = answer_scores(Pair(model, model), tokenizer, pairs, batch_size=1)
    for a, b in zip(vars(auto).values(), vars(ones).values(), strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)
    assert auto.kl > 0 and auto.first_token_kl > 0
