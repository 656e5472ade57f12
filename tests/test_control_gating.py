"""Probe conditions (``--when``'s default, :mod:`vauban.methods.gating`) and mean-pooled residuals,
on synthetic residuals and tiny random models."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from conftest import HARMFUL, HARMLESS
from vauban.core.errors import VaubanError
from vauban.direction.measuring import measure
from vauban.methods.conditional import (
    Condition,
    CosineCondition,
    condition_scores,
    condition_sets,
    conditional_generate,
    cosine_from_residuals,
    measure_condition,
)
from vauban.methods.gating import (
    ProbeCondition,
    choose_probe,
    fit_logistic,
    fit_probe_condition,
    fold_of,
    layer_sets,
    out_of_fold,
    pick_setting,
    probe_from_residuals,
    setting_logits,
    standardized,
    strict_threshold,
)
from vauban.model import arch
from vauban.runtime.activations import last_token_residuals


def _blobs(n: int = 40, layers: int = 4, d: int = 8, signal_layer: int = 3, seed: int = 0):
    """Residuals ``(n, layers, d)`` whose labels show only at ``signal_layer`` (first feature)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2 == 0
    x = torch.randn(n, layers, d, generator=g)
    x[:, signal_layer, 0] += torch.where(y, 4.0, -4.0)
    return x, y


def test_fit_logistic_separates_and_refuses_one_class():
    x, y = _blobs()
    w, b = fit_logistic(x[:, 3], y, 1.0)
    assert ((x[:, 3].double() @ w + b > 0) == y).all() and w[0] > 0
    with pytest.raises(VaubanError, match="matched and unmatched"):
        fit_logistic(x[:, 3], torch.ones(len(y), dtype=torch.bool), 1.0)
    with pytest.raises(VaubanError, match="C > 0"):
        fit_logistic(x[:, 3], y, 0.0)


def test_folds_are_stratified_and_out_of_fold_scores_never_see_their_row():
    y = torch.tensor([True] * 7 + [False] * 13)
    fold = fold_of(y, 5)
    for k in range(5):
        assert (fold[y] == k).sum() in (1, 2) and (fold[~y] == k).sum() in (2, 3)
    x, y2 = _blobs()
    logits = out_of_fold(x, y2, 1.0, folds=4)
    assert ((logits > 0) == y2).double().mean() > 0.8
    train, flat = fold_of(y2, 4) != 0, x.reshape(len(x), -1).double()
    centre, scale = flat[train].mean(0), flat[train].std(0)
    w, b = fit_logistic((flat[train] - centre) / scale, y2[train], 1.0)  # fold 0's fit: its rows unseen
    assert torch.allclose(logits[~train], ((flat[~train] - centre) / scale) @ w + b)


def test_choose_probe_finds_the_layer_set_that_holds_the_signal():
    x, y = _blobs(layers=6, signal_layer=5)
    noise, _ = _blobs(layers=6, seed=1)
    noise[:, 3, 0] = torch.randn(len(y))  # no signal anywhere
    choice = choose_probe({"last": x, "mean": noise}, y, penalties=(0.1, 1.0))
    assert choice.pooling == "last" and 5 in choice.layers and choice.accuracy > 0.9
    assert len(choice.table) == 16 and choice.table[f"last, all, C {choice.penalty:g}"] <= choice.accuracy
    with pytest.raises(VaubanError, match="at least 2 matched"):
        choose_probe({"last": x[:3]}, torch.tensor([True, False, False]))


def test_probe_condition_scores_negation_and_record():
    x, y = _blobs(layers=6, signal_layer=5)
    probe = probe_from_residuals("c", {"last": x}, y, penalties=(1.0,))
    assert isinstance(probe, Condition) and probe.cv_accuracy > 0.9
    logits = probe.scores(x[:, list(probe.layers)])
    matched = logits > probe.threshold
    assert (matched == y).double().mean() > 0.9
    negated = probe.negated()
    assert negated.name == "not:c"
    assert ((negated.scores(x[:, list(probe.layers)]) > negated.threshold) == ~matched).all()
    record = probe.record()
    assert record["kind"] == "probe" and record["layers"] == list(probe.layers)
    assert record["pooling"] == "last"
    json.dumps(record)


def test_false_match_threshold_lets_at_most_that_share_of_unmatched_through():
    unmatched = torch.arange(100, dtype=torch.float64)  # scores 0..99
    for share in (0.0, 0.02, 0.05):
        threshold = strict_threshold(unmatched, share)
        assert (unmatched > threshold).double().mean() <= share
        assert (unmatched >= threshold).double().mean() > share  # the lowest such threshold
    with pytest.raises(VaubanError, match="share in"):
        strict_threshold(unmatched, 1.0)
    x, y = _blobs(n=60, layers=3, signal_layer=2)
    x[:, 2, 0] += torch.randn(60, generator=torch.Generator().manual_seed(3)) * 4  # overlap the classes
    logits = setting_logits({"last": x}, y, penalties=(1.0,))
    loose, strict = pick_setting(logits, y), pick_setting(logits, y, 0.0)
    assert strict.threshold >= loose.threshold
    (layers, oof), *_ = [v for k, v in logits.items() if k[1] == "last"]
    assert not (oof[~y] > pick_setting({("last", "last", 1.0): (layers, oof)}, y, 0.0).threshold).any()
    probe = probe_from_residuals("c", {"last": x}, y, penalties=(1.0,), false_match=0.05)
    assert probe.false_match == 0.05 and "at most 0.05" in probe.record()["threshold_rule"]
    assert probe_from_residuals("c", {"last": x}, y, penalties=(1.0,)).record()["threshold_rule"] == (
        "best balanced accuracy"
    )


def test_layer_sets_are_never_empty():
    assert layer_sets(2) == {"last": (1,), "late half": (1,), "all": (0, 1)}  # no "every third"
    assert layer_sets(24)["every third"] == (2, 5, 8, 11, 14, 17, 20, 23)


def test_probe_on_too_few_prompts_says_so_in_one_line():
    x, y = _blobs(n=6)  # 3 matched, 3 unmatched
    with pytest.raises(VaubanError, match=r"3 matched and 3 unmatched .* at least 4 of each") as err:
        probe_from_residuals("c", {"last": x}, y)
    assert "\n" not in str(err.value) and "--condition-kind cosine" in str(err.value)
    with pytest.raises(VaubanError, match="from 1 prompt"):
        standardized(x.reshape(6, -1), torch.tensor([True] + [False] * 5))


def test_cosine_from_residuals_matches_measure_condition(tiny, tokenizer, tmp_path):
    model = tiny("qwen2")
    sets = condition_sets(str(_condition_file(tmp_path / "c.jsonl")))
    condition = measure_condition(model, tokenizer, sets)
    assert isinstance(condition, CosineCondition) and isinstance(condition, Condition)

    def acts(prompts):
        return last_token_residuals(model, tokenizer, prompts)

    again = cosine_from_residuals(
        "c",
        (acts(sets.matched["measure"]), acts(sets.unmatched["measure"])),
        (acts(sets.matched["tune"]), acts(sets.unmatched["tune"])),
        list(range(arch.num_layers(model))),
        arch.num_layers(model),
    )
    assert again.layer_index == condition.layer_index
    assert again.threshold == pytest.approx(condition.threshold, abs=1e-5)


def test_fit_probe_condition_gates_generation(tiny, tokenizer, tmp_path):
    model = tiny("qwen2")
    sets = condition_sets(str(_condition_file(tmp_path / "c.jsonl", n=5)))
    probe = fit_probe_condition(model, tokenizer, sets)
    assert isinstance(probe, ProbeCondition)
    assert probe.weight.shape == (len(probe.layers), arch.d_model(model))
    prompts = HARMFUL[:3] + HARMLESS[:3]
    scores = condition_scores(model, tokenizer, probe, prompts)
    turned = condition_scores(model, tokenizer, probe.negated(), prompts)
    assert torch.allclose(turned, -scores)
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, layer=2)
    for threshold in (float("inf"), float("-inf")):
        always = dataclasses.replace(probe, threshold=threshold)
        _, matched = conditional_generate(model, tokenizer, prompts, always, direction, max_tokens=2)
        assert matched == [threshold < 0] * len(prompts)
    _, matched = conditional_generate(model, tokenizer, prompts, probe, direction, max_tokens=2)
    assert matched == [bool(s > probe.threshold) for s in scores]


def test_probe_refuses_another_model(tiny, tokenizer):
    x, y = _blobs(layers=2, d=8, signal_layer=1)
    probe = probe_from_residuals("c", {"last": x}, y, penalties=(1.0,))
    with pytest.raises(VaubanError, match="fit it again"):
        probe.prompt_scores(tiny("qwen2"), tokenizer, HARMFUL[:1])


def test_mean_pooling_averages_every_prompt_token_and_skips_padding(tiny, tokenizer):
    model = tiny("qwen2")
    prompts = [HARMFUL[0], "Hi."]  # different lengths: the short one is padded in the batch
    pooled = last_token_residuals(model, tokenizer, prompts, layers=[1], pooling="mean", batch_size=2)
    for i, prompt in enumerate(prompts):
        alone = last_token_residuals(model, tokenizer, [prompt], layers=[1], pooling="mean", batch_size=1)
        assert torch.allclose(pooled[i], alone[0], atol=1e-4)
    last = last_token_residuals(model, tokenizer, prompts, layers=[1], batch_size=2)
    assert not torch.allclose(pooled, last)
    with pytest.raises(VaubanError, match="choose one of"):
        last_token_residuals(model, tokenizer, prompts, pooling="max")


def _condition_file(path, n: int = 3):
    """A condition file: harmful prompts match, harmless ones do not (measure and tune splits)."""
    rows = [
        {"prompt": p, "matched": m, "split": s}
        for s in ("measure", "tune")
        for m, ps in ((True, HARMFUL[:n]), (False, HARMLESS[:n]))
        for p in ps
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
