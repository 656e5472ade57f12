"""Choosing the direction by the effect of its cut (vauban.direction.selecting), on a tiny GPT-2 built so
the answer is known: every prompt's last position carries a constant ``3·e5`` (the embedding of
the generation prompt's final newline) plus ``2·e1`` and ``2·e2`` written by the MLP biases of
layers 1 and 2, and the LM head reads the "refusal" token ``S`` off ``e1`` (weight 2) and
``e2`` (weight 1). Cutting layer 1's direction (``e1``) lowers p(S) most but moves the whole
next-token distribution (high KL); cutting layer 2's (``e2``) lowers it less at a small KL;
layers 0 and 3 (``e0``, ``e3``) carry nothing the head reads."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import HARMFUL, HARMLESS, TINY_CONFIGS
from vauban import DirectionResult, VaubanError, measure
from vauban.direction.selecting import (
    candidate_layers,
    choose,
    layer_effects,
    layer_range,
    select_by_effect,
    split,
)


def designed(tokenizer) -> tuple[torch.nn.Module, DirectionResult]:
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "gpt2", **TINY_CONFIGS["gpt2"], tie_word_embeddings=False, bos_token_id=256, eos_token_id=258
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    eye = torch.eye(64)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    refusal = tokenizer("S", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.02)  # small next to the designed parts
            elif "bias" in name:
                param.zero_()
        model.transformer.wte.weight[newline] = 3 * eye[5]
        model.transformer.h[1].mlp.c_proj.bias.copy_(2 * eye[1])
        model.transformer.h[2].mlp.c_proj.bias.copy_(2 * eye[2])
        model.lm_head.weight[refusal] = 2 * eye[1] + eye[2]
    means = eye[:4].double()  # layer l's direction is e_l
    direction = DirectionResult(
        direction=eye[0],
        layer_index=0,
        cosine_scores=(0.4, 0.3, 0.2, 0.1),
        d_model=64,
        model_path="designed",
        harmful_means=means,
        harmless_means=torch.zeros(4, 64, dtype=torch.float64),
    )
    return model.eval(), direction


@pytest.fixture(scope="module")
def setup(tokenizer):
    model, direction = designed(tokenizer)
    refusals = [(p, "S") for p in HARMFUL[:4]]
    effects = {e.layer: e for e in layer_effects(model, tokenizer, direction, refusals, HARMLESS, range(4))}
    return model, direction, refusals, effects


def test_the_designed_model_has_the_designed_effects(setup):
    _, _, _, effects = setup
    assert effects[1].refusal < effects[2].refusal < min(effects[0].refusal, effects[3].refusal)
    assert effects[1].kl > 0.4 > effects[2].kl > max(effects[0].kl, effects[3].kl)


def test_chooses_the_lowest_refusal_among_acceptable_kl(setup, tokenizer):
    model, direction, refusals, _ = setup
    before = [p.clone() for p in model.parameters()]
    chosen = select_by_effect(model, tokenizer, direction, refusals, HARMLESS, max_kl=0.4, layers=range(4))
    assert chosen.layer_index == 2  # layer 1 removes more, but its KL is over the limit
    assert chosen.selection == "effect" and chosen.max_kl == 0.4
    assert torch.equal(chosen.direction, direction.layer_directions()[2])
    assert [e.layer for e in chosen.effects] == [0, 1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # undone
    loose = select_by_effect(model, tokenizer, direction, refusals, HARMLESS, max_kl=10.0, layers=range(4))
    assert loose.layer_index == 1
    assert chosen.summary().startswith("DirectionResult: layer=2, d_model=64, shape=(64,), max_cosine=")


def test_choice_is_saved_with_the_direction(setup, tokenizer, tmp_path):
    model, direction, refusals, _ = setup
    chosen = select_by_effect(model, tokenizer, direction, refusals, HARMLESS, max_kl=0.4, layers=range(4))
    again = DirectionResult.load(chosen.save(tmp_path / "d.safetensors"))
    assert (again.layer_index, again.selection, again.max_kl, again.effects) == (
        2,
        "effect",
        0.4,
        chosen.effects,
    )
    assert chosen.record()["effects"][2] == {
        "layer": 2,
        "refusal": chosen.effects[2].refusal,
        "kl": chosen.effects[2].kl,
    }


def test_choose_falls_back_to_the_lowest_kl_and_rejects_nothing():
    from vauban.direction.results import LayerEffect

    effects = [LayerEffect(0, 0.1, 0.9), LayerEffect(1, 0.0, 0.7)]
    assert choose(effects, max_kl=0.4).layer == 1  # none acceptable: least damage
    assert choose(effects, max_kl=0.8).layer == 1
    with pytest.raises(VaubanError, match="no candidate"):
        choose([])


def test_candidates_skip_the_first_and_last_fifth():
    assert layer_range(24) == list(range(5, 19))
    assert layer_range(4) == [1, 2]
    assert layer_range(1) == [0]


def test_candidates_are_the_geometric_best_and_their_neighbours():
    scores = [0.0] * 24
    scores[16], scores[17], scores[10], scores[22], scores[23] = 0.9, 0.8, 0.7, 1.0, 1.0  # 22, 23: excluded
    assert candidate_layers(scores) == [9, 10, 11, 15, 16, 17, 18]
    assert candidate_layers(scores, top=1) == [15, 16, 17]
    assert candidate_layers([0.4, 0.3, 0.2, 0.1]) == [1, 2]


def test_by_default_the_candidates_come_from_the_geometry(setup, tokenizer):
    """The designed model's geometric order (layer 0 first, then 1) is not the effect's: with
    the default candidates (layers 1 and 2 of 4) the effect choice is layer 2."""
    model, direction, refusals, _ = setup
    chosen = select_by_effect(model, tokenizer, direction, refusals, HARMLESS, max_kl=0.4)
    assert [e.layer for e in chosen.effects] == [1, 2] and chosen.layer_index == 2


def test_split_holds_back_a_quarter_at_most_24():
    assert split(list("abcdefgh")) == (list("abcdef"), list("gh"))
    assert split(["a", "b"]) == (["a"], ["b"])
    measured, held = split([str(i) for i in range(128)])
    assert (len(measured), held[0], len(held)) == (104, "104", 24)


def test_measure_holds_back_prompts_and_falls_back_without_refusals(tokenizer, monkeypatch):
    from conftest import build_model
    from vauban.direction import selecting

    model = build_model("llama")
    prompts = (HARMFUL * 2, HARMLESS * 2)  # 12 each: 9 measured, 3 held back
    # a random model's short answers are noise; whether one reads as a refusal depended on the
    # batch size free memory allowed (the test failed in some orders): no refusals, explicitly
    monkeypatch.setattr(selecting, "original_refusals", lambda *args, **kwargs: [])
    with pytest.warns(UserWarning, match="refuses none"):
        effect = measure(model, tokenizer, *prompts)
    geometry = measure(model, tokenizer, *prompts, select="geometry")
    assert (effect.n_harmful, geometry.n_harmful) == (9, 12)
    assert effect.selection == geometry.selection == "geometry" and not effect.effects
    assert measure(model, tokenizer, *prompts, layer=1).selection == "forced"
    with pytest.raises(VaubanError, match="select must be"):
        measure(model, tokenizer, *prompts, select="cosine")


def test_max_kl_is_checked(setup, tokenizer):
    model, direction, refusals, _ = setup
    with pytest.raises(VaubanError, match="max_kl"):
        select_by_effect(model, tokenizer, direction, refusals, HARMLESS, max_kl=0)
