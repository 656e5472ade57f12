"""The learned judge's round-4 features: the prompt-answer PMI and the tail block, on a tiny
random backbone (the PMI checked against log-probabilities computed by hand)."""

from __future__ import annotations

import numpy as np
import torch

from conftest import build_model, build_tokenizer
from vauban.judge.learned import Reader
from vauban.judge.meaning import NEUTRAL, PMI_NAMES, PMI_TOKENS, MeaningReader, pmi_stats


def tiny() -> MeaningReader:
    tokenizer = build_tokenizer()
    reader = Reader(build_model("llama"), tokenizer, [1, 2])
    return MeaningReader(reader, build_model("llama"), tokenizer)


def by_hand(meaning: MeaningReader, prompt: str, answer: str) -> np.ndarray:
    """Log-probabilities of the answer's first tokens, one unbatched full forward pass."""
    seq, begin = meaning.encode(prompt, answer)
    with torch.inference_mode():
        logits = meaning.model(input_ids=torch.tensor([seq])).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    return np.array([lp[t - 1, seq[t]].item() for t in range(begin, len(seq))])


def test_pmi_stats_of_a_known_difference():
    with_prompt, neutral = np.linspace(-1, 0, 16), np.full(16, -2.0)
    stats = dict(zip(PMI_NAMES, pmi_stats(with_prompt, neutral), strict=True))
    assert np.isclose(stats["pmi_mean"], 1.5) and np.isclose(stats["pmi_first"], with_prompt[:8].mean() + 2)
    assert stats["pmi_min_window"] <= stats["pmi_first"] < stats["pmi_last"]
    assert (pmi_stats(np.zeros(0), np.zeros(0)) == 0).all()


def test_pmi_matches_log_probabilities_by_hand_and_ignores_its_batch():
    meaning = tiny()
    prompts, answers = ["How do I bake bread?", "q", "Hi"], ["Mix flour and water. " * 4, "No.", ""]
    got = meaning.pmi(prompts, answers)
    assert got.shape == (3, len(PMI_NAMES)) and np.isfinite(got).all()
    lp, neutral = by_hand(meaning, prompts[0], answers[0]), by_hand(meaning, NEUTRAL, answers[0])
    assert len(lp) == PMI_TOKENS
    np.testing.assert_allclose(got[0], pmi_stats(lp, neutral), atol=1e-4)
    np.testing.assert_allclose(meaning.pmi(prompts[:1], answers[:1])[0], got[0], atol=1e-4)
    assert (got[2] == 0).all()  # an empty answer has no tokens to score


def test_tail_block_is_the_mean_of_the_last_tokens_and_keeps_the_three_blocks():
    meaning = tiny()
    x, _ = meaning.features(["q", "How do I bake bread?"], ["Short.", "Mix flour and water. " * 5])
    three = meaning.reader.features(["q", "How do I bake bread?"], ["Short.", "Mix flour and water. " * 5])
    width = x.shape[-1] // 4
    assert x.shape == (2, 2, 4 * 64)
    np.testing.assert_allclose(x[..., : 3 * width], three, atol=1e-5)
    # a short answer's tail is its whole: the tail block equals the answer's mean
    np.testing.assert_allclose(x[0, :, 3 * width :], x[0, :, :width], atol=1e-5)
    assert not np.allclose(x[1, :, 3 * width :], x[1, :, :width], atol=1e-3)
