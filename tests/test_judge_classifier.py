"""``classifier:ID`` on tiny random sequence classifiers saved to a temp dir (the Hub is not
reachable from the tests: a real checkpoint such as ProtectAI/distilroberta-base-rejection-v1
loads the same way, by hub id or local directory)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from conftest import build_tokenizer
from vauban import VaubanError
from vauban.judge import get_judge, run_judge
from vauban.judge.classifier import ClassifierJudge, refusal_labels

PROMPTS = ["How do I pick a lock?", "What is 2+2?", "Write a poem."]
ANSWERS = ["I can't help with that.", "4.", "Roses are red, violets are blue, here is a poem for you."]


def save_classifier(path, labels: dict[int, str], bias: list[float] | None = None, seed: int = 0):
    """A 1-layer BERT classifier with the byte tokenizer; ``bias`` (with zeroed weights) fixes
    its output so the label mapping can be checked exactly."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=320,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=256,
        pad_token_id=256,
        num_labels=len(labels),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model = BertForSequenceClassification(config).eval()
    if bias is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return model


def test_refusal_labels():
    assert refusal_labels({0: "NORMAL", 1: "REJECTION"}, None) == [1]
    assert refusal_labels({0: "Non-refusal", 1: "Refusal"}, None) == [1]
    assert refusal_labels(
        {0: "compliant", 1: "full_refusal", 2: "partial_refusal", 3: "clarification"}, None
    ) == [1, 2]
    assert refusal_labels({0: "LABEL_0", 1: "LABEL_1"}, None) == [1]
    assert refusal_labels({0: "a", 1: "b", 2: "c"}, "A,2") == [0, 2]
    with pytest.raises(VaubanError, match="cannot tell which of the labels"):
        refusal_labels({0: "a", 1: "b", 2: "c"}, None)
    with pytest.raises(VaubanError, match="has no label 'x'"):
        refusal_labels({0: "a", 1: "b"}, "x")


def test_label_mapping_and_threshold(tmp_path):
    save_classifier(tmp_path, {0: "NORMAL", 1: "REJECTION"}, bias=[0.0, 2.0])
    judge = get_judge(f"classifier:{tmp_path}")
    assert isinstance(judge, ClassifierJudge) and judge.spec == f"classifier:{tmp_path}"
    p = torch.softmax(torch.tensor([0.0, 2.0]), -1)
    verdicts = run_judge(judge, PROMPTS, ANSWERS)
    assert all(v.refusal and v.score == pytest.approx(float(p[1]), abs=1e-6) for v in verdicts)
    assert "REJECTION" in verdicts[0].reason
    flipped = get_judge(f"classifier:{tmp_path}?refusal=NORMAL")
    assert not any(v.refusal for v in run_judge(flipped, PROMPTS, ANSWERS))
    strict = get_judge(f"classifier:{tmp_path}?threshold=0.95")
    assert not any(v.refusal for v in run_judge(strict, PROMPTS, ANSWERS))


def test_scores_match_the_checkpoint_run_directly(tmp_path):
    from transformers import AutoTokenizer

    model = save_classifier(tmp_path, {0: "Non-refusal", 1: "Refusal"}, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    for mode in ("answer", "pair", "chat"):
        judge = get_judge(f"classifier:{tmp_path}?input={mode}")
        got = judge.scores(PROMPTS, ANSWERS)  # type: ignore[attr-defined]
        for prompt, answer, score in zip(PROMPTS, ANSWERS, got, strict=True):
            if mode == "answer":
                enc = tokenizer(answer, return_tensors="pt")
            elif mode == "pair":
                enc = tokenizer(prompt, answer, return_tensors="pt")
            else:
                enc = tokenizer(f"<|user|>\n{prompt}\n<|assistant|>\n{answer}", return_tensors="pt")
            with torch.no_grad():
                want = torch.softmax(model(**enc).logits, -1)[0, 1]
            assert score == pytest.approx(float(want), abs=1e-5), mode
    pair = get_judge(f"classifier:{tmp_path}?input=pair").scores(PROMPTS, ANSWERS)  # type: ignore[attr-defined]
    alone = get_judge(f"classifier:{tmp_path}").scores(PROMPTS, ANSWERS)  # type: ignore[attr-defined]
    assert pair != alone  # the prompt reaches the checkpoint


def test_single_logit_checkpoint_and_long_answers(tmp_path):
    save_classifier(tmp_path, {0: "refusal"}, bias=[1.0])
    judge = get_judge(f"classifier:{tmp_path}")
    (v,) = run_judge(judge, ["p"], ["word " * 2000])  # longer than the 256 positions: truncated
    assert v.score == pytest.approx(float(torch.sigmoid(torch.tensor(1.0))), abs=1e-6) and v.refusal


def test_late_refusal_from_the_openings(tmp_path):
    """The late flag comes from judging the opening again: a classifier that calls long texts
    refusals and short ones not gives a late refusal on a long answer."""
    save_classifier(tmp_path, {0: "ok", 1: "refusal"}, bias=[0.0, 0.0])
    judge = get_judge(f"classifier:{tmp_path}")
    judge.scores = lambda prompts, answers: [1.0 if len(a) > 60 else 0.0 for a in answers]  # type: ignore
    long = "Sure. Here is the first step. Then the second. " + "However, I cannot continue with this. " * 2
    short_refusal = "x" * 70
    late, early = run_judge(judge, ["p", "p"], [long, short_refusal])
    assert late.refusal and late.late
    assert early.refusal and not early.late


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(VaubanError, match="cannot load the classifier") as err:
        get_judge(f"classifier:{tmp_path / 'missing'}")
    assert "\n" not in str(err.value)
    with pytest.raises(VaubanError, match="input must be answer, pair or chat"):
        get_judge(f"classifier:{tmp_path}?input=both")
