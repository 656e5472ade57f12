"""A model remembers its measurements (vauban.direction.measuring): asked again with the same
prompts and options while its weights are the ones a measurement ended with, ``measure`` returns
that result without running the model; any change to what a forward pass computes with measures
again."""

from __future__ import annotations

import gc

import pytest
import torch

from conftest import HARMFUL, HARMLESS, build_model
from vauban import cut, measure
from vauban.direction import measuring, selecting
from vauban.edit.editing import checksum

PROMPTS = (HARMFUL * 2, HARMLESS * 2)  # 12 each: 9 measured, 3 held back for the selection


@pytest.fixture
def runs(monkeypatch):
    """How many times the model was really measured (each measurement reads both prompt sets)."""
    calls = []
    real = measuring.last_token_residuals

    def counted(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        return real(*args, **kwargs)

    monkeypatch.setattr(measuring, "last_token_residuals", counted)
    # a random model refuses nothing; pretend it refuses its held-back prompts so the selection
    # cuts candidates (and undoes them) as on a real model
    monkeypatch.setattr(selecting, "original_refusals", lambda model, tok, held, *a: [(p, "I") for p in held])
    return lambda: calls.count("harmful")


def same(a, b) -> bool:
    return (
        torch.equal(a.direction, b.direction)
        and torch.equal(a.harmful_means, b.harmful_means)
        and torch.equal(a.harmless_means, b.harmless_means)
        and (a.layer_index, a.cosine_scores, a.effects) == (b.layer_index, b.cosine_scores, b.effects)
        and a.selection == b.selection
    )


def test_the_same_request_on_an_unchanged_model_is_remembered(tokenizer, runs):
    model = build_model("qwen2")
    first = measure(model, tokenizer, *PROMPTS)
    assert first.selection == "effect" and first.effects  # the selection cut and undid candidates
    again = measure(model, tokenizer, *PROMPTS)
    assert runs() == 1 and same(again, first)
    fresh = measure(build_model("qwen2"), tokenizer, *PROMPTS)  # another object: measured
    assert runs() == 2 and same(fresh, first)  # and what the memo returned is what measuring gives
    again.direction.mul_(-1)  # a copy: writing into it leaves the remembered result
    assert same(measure(model, tokenizer, *PROMPTS), first) and runs() == 2


def test_other_prompts_options_or_tokenizer_measure_again(tokenizer, runs):
    from conftest import build_tokenizer

    model = build_model("qwen2")
    measure(model, tokenizer, *PROMPTS)
    measure(model, tokenizer, PROMPTS[0][:-1], PROMPTS[1])
    measure(model, tokenizer, *PROMPTS, max_kl=0.5)
    measure(model, build_tokenizer(), *PROMPTS)
    measure(model, tokenizer, *PROMPTS, select="geometry")
    measure(model, tokenizer, *PROMPTS, layer=2)
    assert runs() == 6
    # the last two cut nothing (no selection), so the geometric one is still the model's state
    measure(model, tokenizer, *PROMPTS, select="geometry")
    assert runs() == 6


@pytest.mark.parametrize(
    "change",
    [
        "cut",
        "cut_undone",
        "data_write",
        "data_write_restored",
        "no_grad_write",
        "load_state_dict",
        "hook",
        "train",
    ],
)
def test_any_change_to_the_model_measures_again(tokenizer, runs, change):
    model = build_model("qwen2")
    first = measure(model, tokenizer, *PROMPTS)
    weight = model.model.layers[1].mlp.down_proj.weight
    if change == "cut":
        applied = cut(model, first)
    elif change == "cut_undone":  # same bits again, but the cut's undo bumped the version counters
        cut(model, first).undo()
    elif change == "data_write":  # invisible to the version counters; the checksum sees it
        weight.data[0, 0] += 1.0
    elif change == "data_write_restored":  # a round trip through .data: measured again, same result
        old = weight.data[0, 0].clone()
        weight.data[0, 0] += 1.0
        measure(model, tokenizer, *PROMPTS)
        weight.data[0, 0] = old
    elif change == "no_grad_write":
        with torch.no_grad():
            weight[0, 0] = weight[0, 0]  # same value, but an in-place write
    elif change == "load_state_dict":
        model.load_state_dict(build_model("qwen2", seed=1).state_dict())
    elif change == "hook":
        handle = model.model.layers[1].register_forward_hook(lambda module, args, out: None)
    elif change == "train":
        model.train()
    second = measure(model, tokenizer, *PROMPTS)
    assert runs() == (3 if change == "data_write_restored" else 2)
    if change == "cut":
        assert not same(second, first)  # measured on the cut model
        applied.undo()
    elif change == "hook":
        handle.remove()
    if change in ("cut_undone", "no_grad_write", "hook", "data_write_restored"):
        assert same(second, first)  # the same weights measure the same (determinism)


def test_the_memo_dies_with_the_model(tokenizer):
    model = build_model("qwen2")
    measure(model, tokenizer, HARMFUL, HARMLESS)
    assert model in measuring._MEASURED
    before = len(measuring._MEASURED)
    del model
    gc.collect()
    assert len(measuring._MEASURED) == before - 1


def test_a_custom_cutting_always_measures(tokenizer, runs):
    model = build_model("qwen2")
    measure(model, tokenizer, *PROMPTS, cutting=cut)
    measure(model, tokenizer, *PROMPTS, cutting=cut)
    assert runs() == 2


def test_a_model_without_version_counters_always_measures(tokenizer, runs):
    with torch.inference_mode():  # inference tensors keep no version counter: nothing to check
        model = build_model("qwen2")
    measure(model, tokenizer, HARMFUL, HARMLESS)
    measure(model, tokenizer, HARMFUL, HARMLESS)
    assert runs() == 2 and model not in measuring._MEASURED


@pytest.mark.parametrize(
    ("dtype", "n"),
    [(torch.float32, 6), (torch.float16, 7), (torch.bfloat16, 6), (torch.float64, 3), (torch.bool, 5)],
)
def test_checksum_sees_any_one_element_change(dtype, n):
    values = torch.rand(n, 2).to(dtype)
    before = checksum(values)
    assert torch.equal(checksum(values.clone()), before)
    for i in range(n):  # the smallest change: one element to its neighbour (or flipped)
        changed = values.clone()
        if dtype == torch.bool:
            changed[i, 1] = ~changed[i, 1]
        else:
            changed[i, 1] = torch.nextafter(changed[i, 1], torch.tensor(2.0, dtype=dtype))
        assert not torch.equal(checksum(changed), before)
    assert torch.equal(checksum(values.t()), checksum(values.t().contiguous()))
