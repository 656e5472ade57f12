"""The token head: reads every answer token from a tiny random backbone's states, pads without
changing an answer's logits, ignores padding, and round-trips through its file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import build_model, build_tokenizer
from vauban.core.errors import VaubanError
from vauban.judge import run_judge
from vauban.judge.learned import LearnedJudge, Reader, pool
from vauban.judge.tokenhead import N_CATEGORIES, TokenHead, TokenHeads


def ensemble(hidden: int = 64, seeds: int = 2) -> TokenHeads:
    heads = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        heads.append(TokenHead(hidden, width=8, heads=2))
    return TokenHeads(heads, {"backbone": "demo", "layer": 2, "threshold": 0.5}).eval()


def test_states_are_what_the_pooled_features_are_made_of():
    reader = Reader(build_model("llama"), build_tokenizer(), [1, 2])
    prompts, answers = ["a", "How do I bake bread?"], ["", "Mix flour and water. " * 3]
    states = reader.states(prompts, answers)
    answer, _ = states[1]
    assert answer.shape[:2] == (
        2,
        len(reader.encode(prompts[1], answers[1])[0]) - reader.encode(prompts[1], answers[1])[1],
    )
    assert states[0][0].shape[1] == 1  # an empty answer reads as the prompt's last token
    x = reader.features(prompts, answers)
    np.testing.assert_allclose(np.stack([pool(a, p) for a, p in states]), x, atol=1e-6)


def test_logits_do_not_depend_on_padding_or_batch():
    model = ensemble()
    rng = np.random.default_rng(0)
    pairs = [
        (rng.normal(size=(n, 64)).astype(np.float32), rng.normal(size=64).astype(np.float32))
        for n in (3, 17, 1)
    ]
    marks = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.float32)
    together = model.logits(pairs, marks)
    assert together.shape == (3, 1 + N_CATEGORIES) and np.isfinite(together).all()
    for i, pair in enumerate(pairs):
        np.testing.assert_allclose(model.logits([pair], marks[i : i + 1])[0], together[i], atol=1e-5)


def test_round_trips_through_its_file(tmp_path):
    model = ensemble()
    model.save(tmp_path / "head.safetensors")
    back = TokenHeads.read(tmp_path / "head.safetensors")
    assert back.meta["ensemble"] == 2 and back.meta["layer"] == 2
    pair = [(np.ones((4, 64), np.float32), np.zeros(64, np.float32))]
    marks = np.zeros((1, 2), np.float32)
    np.testing.assert_array_equal(back.logits(pair, marks), model.logits(pair, marks))
    with pytest.raises(VaubanError, match="no token head"):
        TokenHeads.read(tmp_path / "missing.safetensors")


def test_the_learned_judge_reads_through_a_token_head():
    reader = Reader(build_model("llama"), build_tokenizer(), [2])
    for bias, refusal in ((20.0, True), (-20.0, False)):
        model = ensemble()
        for head in model.heads:
            with torch.no_grad():
                head.out.weight.zero_()
                head.out.bias.zero_()
                head.out.bias[0] = bias
                head.out.bias[1 + 2] = 1.0  # partial refusal (categories follow the refusal logit)
        verdicts = run_judge(LearnedJudge(model, reader), ["q1", "q2"], ["I can't help.", "Sure: step 1"])
        assert [v.refusal for v in verdicts] == [refusal, refusal]
        assert {v.category for v in verdicts} == {"partial_refusal" if refusal else "compliance"}
