"""Edit methods behind one protocol, on tiny random models: every method undoes bit for bit, the
harmless-preserving edit removes the direction from harmful outputs and keeps harmless ones, the
leak-free norm-preserving edit keeps norms without putting the direction back."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import HARMFUL, HARMLESS, build_model
from vauban import VaubanError, measure
from vauban.edit.cutting import active_cuts, cut, original_weights
from vauban.methods.capture import writer_inputs
from vauban.methods.leak import leak, leak_free_plan
from vauban.methods.preserving import solve
from vauban.methods.protocol import Inputs, low_rank_factors, rank
from vauban.methods.registry import METHODS, get_method
from vauban.model import arch

TYPES = ["qwen2", "gemma2", "gpt2"]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def same_bits(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(
        torch.equal(p.detach().view(torch.int32), before[n].view(torch.int32))
        for n, p in model.named_parameters()
    )


@pytest.fixture(scope="module")
def measured(tokenizer):
    out = {}
    for kind in TYPES:
        model = build_model(kind)
        out[kind] = (model, measure(model, tokenizer, HARMFUL, HARMLESS, select="geometry"))
    return out


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_undoes_bit_for_bit_and_reapplies_the_same_bits(measured, tokenizer, kind, name):
    model, direction = measured[kind]
    before = snapshot(model)
    applied = get_method(name).make(
        model,
        tokenizer,
        direction,
        Inputs(HARMFUL, HARMLESS),
        **({"alpha": 0.7} if name == "norm_preserving_leak_free" else {}),
    )
    assert active_cuts(model) == [applied]
    edited = snapshot(model)
    assert not same_bits(model, before)
    with original_weights(model):
        assert same_bits(model, before)
    assert same_bits(model, edited)
    applied.undo()
    assert same_bits(model, before) and not active_cuts(model)
    applied.apply()
    assert same_bits(model, edited)
    applied.undo()


def test_unknown_method_is_one_clear_error():
    with pytest.raises(VaubanError, match="no edit method 'nope'"):
        get_method("nope")


def test_solve_removes_harmful_component_and_keeps_harmless_outputs():
    g = torch.Generator().manual_seed(0)
    xh, xb = torch.randn(20, 64, generator=g), torch.randn(20, 64, generator=g)
    v0 = torch.randn(64, generator=g)
    for prior in (0.0, 1.0):
        v = solve(xh, xb, v0, keep=1.0, ridge=1e-6, prior=prior)
        assert torch.allclose(xh @ v, xh @ v0, atol=1e-3)  # the direction's share gone from harmful outputs
        assert (xb @ v).abs().max() < 1e-3  # harmless outputs as they were
    assert solve(xh, xb, v0, prior=1.0, ridge=1e-6).norm() > solve(xh, xb, v0, prior=0.0, ridge=1e-6).norm()


def _distinct(rows: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """The rows that no row of ``others`` repeats, up to rounding (a word both prompt sets open
    with gives the same writer input in layer 0; rounded apart by 1e-7 on torch 2.11, such a pair
    of contradictory rows lets a ridge of 1e-8 blow the edit up along their difference)."""
    same = 1e-4 * max(1.0, float(rows.norm(dim=1).max()))
    return rows[torch.cdist(rows, others).min(1).values > same]


@pytest.mark.parametrize("kind", ["qwen2", "gemma2"])
def test_harmless_preserving_edit_on_captured_inputs(measured, tokenizer, kind):
    model, direction = measured[kind]
    writers = arch.residual_writers(model)
    xh = writer_inputs(model, tokenizer, HARMFUL, writers, prompt_set="harmful", max_rows=20)
    xb = writer_inputs(model, tokenizer, HARMLESS, writers, prompt_set="harmless", max_rows=20)
    xh = {name: _distinct(rows, xb[name]) for name, rows in xh.items()}  # no contradictory pairs
    originals = {w.name: w.weight.detach().clone() for w in writers}
    with get_method("harmless_preserving").make(
        model, tokenizer, direction, Inputs(HARMFUL, HARMLESS), ridge=1e-8, captured=(xh, xb)
    ) as applied:
        assert rank(applied) == 1
        factors = low_rank_factors(applied)
        for w in writers:
            q = applied._edits[[e.name for e in applied._edits].index(f"{w.name}.weight")].basis.float()
            new, old = w.weight.detach(), originals[w.name]
            h, b = xh[w.name], _distinct(xb[w.name], xh[w.name])
            assert len(h) >= 10 and len(b) >= 10
            scale = (h @ old.T @ q.T).abs().max()  # (rows, d) outputs: the residual axis is 0
            assert (h @ new.T @ q.T).abs().max() < 2e-2 * scale  # the direction gone from harmful outputs
            assert (b @ new.T - b @ old.T).abs().max() < 2e-2 * scale  # harmless outputs kept
            b, a = factors[f"{w.name}.weight"]
            assert b.shape[1] == a.shape[0] == 1 and torch.allclose(old + b @ a, new, atol=1e-6)


def test_solve_takes_several_directions_at_once_column_by_column():
    g = torch.Generator().manual_seed(1)
    xh, xb, v0 = (
        torch.randn(30, 48, generator=g),
        torch.randn(12, 48, generator=g),
        torch.randn(48, 3, generator=g),
    )
    both = solve(xh, xb, v0, keep=0.5, ridge=1e-3, prior=1.0)
    assert both.shape == (48, 3)
    for j in range(3):
        assert torch.allclose(both[:, j], solve(xh, xb, v0[:, j], keep=0.5, ridge=1e-3, prior=1.0), atol=1e-5)


def test_harmless_preserving_over_a_subspace_removes_every_row_and_keeps_harmless_outputs(
    measured, tokenizer
):
    model, direction = measured["qwen2"]
    writers = arch.residual_writers(model)
    xh = writer_inputs(model, tokenizer, HARMFUL, writers, prompt_set="harmful", max_rows=20)
    xb = writer_inputs(model, tokenizer, HARMLESS, writers, prompt_set="harmless", max_rows=20)
    xh = {name: _distinct(rows, xb[name]) for name, rows in xh.items()}
    originals = {w.name: w.weight.detach().clone() for w in writers}
    with get_method("harmless_preserving").make(
        model, tokenizer, direction, Inputs(HARMFUL, HARMLESS), ridge=1e-8, captured=(xh, xb), subspace=2
    ) as applied:
        assert rank(applied) == 2
        assert applied.record()["subspace"] == 2
        for w in writers:
            q = applied._edits[[e.name for e in applied._edits].index(f"{w.name}.weight")].basis.float()
            assert q.shape[0] == 2
            new, old = w.weight.detach(), originals[w.name]
            h, b = xh[w.name], _distinct(xb[w.name], xh[w.name])
            scale = (h @ old.T @ q.T).abs().max()
            assert (h @ new.T @ q.T).abs().max() < 2e-2 * scale  # both rows gone from harmful outputs
            assert (b @ new.T - b @ old.T).abs().max() < 2e-2 * scale  # harmless outputs kept
    with pytest.raises(VaubanError, match="subspace must be a number of directions"):
        get_method("harmless_preserving").make(
            model, tokenizer, direction, Inputs(HARMFUL, HARMLESS), captured=(xh, xb), subspace=0
        )


def test_plain_cut_is_rank_one_and_its_lora_factors_give_the_edit(measured):
    model, direction = measured["qwen2"]
    before = snapshot(model)
    with cut(model, direction) as applied:
        assert rank(applied) == 1
        for name, (b, a) in low_rank_factors(applied).items():
            assert torch.allclose(before[name] + b @ a, dict(model.named_parameters())[name], atol=1e-6)


@pytest.mark.parametrize("alpha", [0.4, 0.8])
def test_leak_free_keeps_norms_and_leaves_exactly_the_plain_share(measured, tokenizer, alpha):
    model, direction = measured["qwen2"]
    with cut(model, direction, alpha=alpha, norm_preserving=True) as np_cut:
        leaky = leak(np_cut)
    with cut(model, direction, alpha=alpha) as plain:
        plain_leak = leak(plain)
    with get_method("norm_preserving_leak_free").make(
        model, tokenizer, direction, Inputs([], []), alpha=alpha
    ) as free:
        fixed = leak(free)
    assert leaky["leak"] > 1e-3  # the rescale puts some of the direction back
    assert abs(plain_leak["leak"]) < 1e-5 and abs(fixed["leak"]) < 1e-5
    assert leaky["left"] > fixed["left"] == pytest.approx(1 - alpha, abs=1e-5)


def test_leak_free_plan_keeps_every_written_vector_norm():
    g = torch.Generator().manual_seed(1)
    w = torch.nn.Parameter(torch.randn(16, 8, generator=g))
    q = torch.randn(1, 16, generator=g)
    q = q / q.norm()
    plan = leak_free_plan("w", w, 0, q, 0.6)
    x = w.detach().T.double()
    new = (x - 0.6 * plan.removed.double() @ q.double()) * plan.factors.double()
    assert torch.allclose(new.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(new @ q.double().T, 0.4 * x @ q.double().T, atol=1e-5)


@pytest.mark.parametrize("kind", ["qwen2", "gemma2"])
def test_learned_direction_hooks_equal_the_plain_cut_and_the_direction_moves(measured, tokenizer, kind):
    from vauban.methods.learned import directed, learn
    from vauban.runtime.scoring import first_token_logprobs

    model, direction = measured[kind]
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with directed(model, lambda: direction.direction):
        hooked = model(ids).logits
    with cut(model, direction):
        plain = model(ids).logits
    assert torch.allclose(hooked, plain, atol=1e-4)
    refusals = [(p, "I'm sorry, I can't help with that.") for p in HARMFUL]
    base = list(first_token_logprobs(model, tokenizer, HARMLESS))
    before = snapshot(model)
    found, history = learn(model, tokenizer, direction.direction, HARMLESS, base, refusals, steps=3, lr=0.05)
    assert same_bits(model, before) and len(history) == 4
    assert found.norm() == pytest.approx(1.0, abs=1e-5)
    assert (found - direction.direction / direction.direction.norm()).norm() > 1e-3
    assert all(p.requires_grad for p in model.parameters())


def test_default_rule_takes_the_lowest_kl_within_the_tolerance_of_the_best_refusal():
    from vauban.methods.default import TOLERANCE, Candidate, choose_by_damage

    cands = [
        Candidate("a", 0.001, 0.09),
        Candidate("b", 0.001 + TOLERANCE / 2, 0.02),
        Candidate("c", 0.001 + 2 * TOLERANCE, 0.001),
    ]
    assert choose_by_damage(cands).name == "b"
    with pytest.raises(VaubanError, match="no candidate"):
        choose_by_damage([])


def small_search(measured, monkeypatch, subspaces):
    """The tiny qwen2 with effects at 4 layers, every held-back prompt refused, one λ, one
    learning step and ``subspaces``: a default-cut search small enough for a unit test."""
    import dataclasses

    import vauban.direction.selecting as selecting
    import vauban.methods.choosing as choosing
    from vauban.direction.results import LayerEffect

    model, direction = measured["qwen2"]
    effects = tuple(LayerEffect(layer, 0.001 * layer, 0.1 / (layer + 1)) for layer in range(4))
    direction = dataclasses.replace(direction, effects=effects, layer_index=1)
    monkeypatch.setattr(
        selecting, "original_refusals", lambda m, t, p, **k: [(x, "I'm sorry, no.") for x in p]
    )
    monkeypatch.setattr(choosing, "KEEPS", (1.0,))
    monkeypatch.setattr(choosing, "SUBSPACE_KS", subspaces)
    monkeypatch.setattr(choosing, "LEARN_STEPS", 1)
    return model, direction


def test_default_cut_scores_every_candidate_and_undoes(measured, tokenizer, monkeypatch):
    import vauban.methods.choosing as choosing

    model, direction = small_search(measured, monkeypatch, (2,))
    before = snapshot(model)
    applied, chosen = choosing.default_cut(model, tokenizer, direction, HARMFUL * 2, HARMLESS * 2)
    assert active_cuts(model) == [applied] and chosen.settings["method"] in METHODS
    assert chosen.settings["method"] not in ("learned", "learned_preserving")  # they game the score
    applied.undo()
    assert same_bits(model, before)


def test_auto_fits_its_preserving_edits_on_the_category_prompts_minus_the_held_back_ones():
    from vauban.direction.categories import category_prompts
    from vauban.methods.choosing import preserving_inputs

    bundled = [p for group in category_prompts("measure").values() for p in group]
    run, held = ["my own request", bundled[0]], [bundled[1]]
    widened = preserving_inputs(Inputs(run, ["a harmless one"]), held)
    assert widened.harmful[:2] == run and widened.harmless == ["a harmless one"]
    assert widened.harmful[2:] == bundled[2:]  # the run's prompts not twice, the held-back ones not at all


def test_score_all_fits_one_learned_direction_for_every_candidate_along_it(measured, tokenizer, monkeypatch):
    import vauban.methods.choosing as choosing
    import vauban.methods.learned as learned

    model, direction = small_search(measured, monkeypatch, ())
    fits, real_fit = [], learned.fit_direction
    monkeypatch.setattr(learned, "fit_direction", lambda *a, **k: fits.append(k) or real_fit(*a, **k))
    along = [{"method": "learned", "layer": 1, "steps": 1}] + [
        {"method": "learned_preserving", "layer": 1, "keep": 1.0, "strength": s, "steps": 1}
        for s in (1.0, 1.5)
    ]
    shared: dict = {}
    before = snapshot(model)
    scored = choosing.score_all(
        model,
        tokenizer,
        direction,
        Inputs(HARMFUL, HARMLESS),
        HARMFUL,
        HARMLESS,
        shared=shared,
        settings=along,
    )
    assert [c.name for c in scored][-3:] == [
        "learned@1@1",
        "learned_preserving@1@1.0@1.0@1",
        "learned_preserving@1@1.0@1.5@1",
    ]
    assert fits == [{"steps": 1}] and list(shared["learned"]) == [(1, 1)]
    assert same_bits(model, before)


def test_learned_preserving_is_the_preserving_edit_along_the_learned_direction_at_its_strength(
    measured, tokenizer
):
    model, direction = measured["qwen2"]
    inputs = Inputs(HARMFUL, HARMLESS)
    u = torch.nn.functional.normalize(
        torch.randn(arch.d_model(model), generator=torch.Generator().manual_seed(0)), dim=0
    )
    before = snapshot(model)
    with get_method("harmless_preserving").make(model, tokenizer, u, inputs, keep=1.0):
        once = snapshot(model)
    with get_method("learned_preserving").make(
        model, tokenizer, direction, inputs, learned=u, keep=1.0, strength=1.5
    ) as applied:
        assert applied.method == "learned_preserving" and applied.settings["strength"] == 1.5
        assert rank(applied) == 1
        for name, p in model.named_parameters():
            change, unit = p.detach() - before[name], once[name] - before[name]
            assert torch.allclose(change, 1.5 * unit, atol=1e-5)
    assert same_bits(model, before)


def test_score_all_resumes_from_known_candidates(measured, tokenizer, monkeypatch):
    import vauban.methods.choosing as choosing
    from vauban.methods.default import Candidate

    model, direction = small_search(measured, monkeypatch, ())
    inputs = Inputs(HARMFUL, HARMLESS)
    known = {"projected@1": Candidate("projected@1", 0.5, 0.25, {"method": "projected", "layer": 1})}
    built, real_build = [], choosing.build

    def build(m, t, d, settings, *rest):
        built.append(settings)
        return real_build(m, t, d, settings, *rest)

    monkeypatch.setattr(choosing, "build", build)
    scored = choosing.score_all(model, tokenizer, direction, inputs, HARMFUL, HARMLESS, known=known)
    names = [c.name for c in scored]
    assert known["projected@1"] in scored and {"method": "projected", "layer": 1} not in built
    assert set(known) == set(names) - {f"plain@{layer}" for layer in range(4)}
    assert {"method": "norm_preserving", "layer": 1} in built


def test_abliterate_auto_on_a_model_with_no_refusals_is_the_plain_cut(measured, tokenizer, tmp_path):
    from vauban.quick import abliterate

    model, direction = measured["qwen2"]
    before = snapshot(model)
    abliterate(model, tokenizer, output_dir=tmp_path / "out", direction=direction, method="auto")
    assert same_bits(model, before) and (tmp_path / "out" / "config.json").is_file()
    with pytest.raises(VaubanError, match="method must be one of plain, auto, harmless_preserving"):
        abliterate(model, tokenizer, output_dir=tmp_path / "x", direction=direction, method="nope")


def test_abliterate_fits_a_named_method_with_its_options_and_leaves_the_model_as_it_was(
    measured, tokenizer, tmp_path
):
    from vauban.quick import abliterate

    model, direction = measured["qwen2"]
    before = snapshot(model)
    options = {"keep": 0.3, "strength": 1.2}
    sets = {"harmful": HARMFUL, "harmless": HARMLESS, "direction": direction}
    abliterate(
        model,
        tokenizer,
        output_dir=tmp_path / "hp",
        method="harmless_preserving",
        method_options=options,
        **sets,
    )
    assert same_bits(model, before)
    record = json.loads((tmp_path / "hp" / "vauban.json").read_text())
    assert "harmless_preserving" in json.dumps(record) and '"strength": 1.2' in json.dumps(record)
    with pytest.raises(VaubanError, match="method_options sets a fitted method"):
        abliterate(model, tokenizer, output_dir=tmp_path / "y", direction=direction, method_options=options)


@pytest.mark.parametrize("kind", ["qwen2", "gemma2"])
def test_harmless_preserving_exports_as_a_rank_one_lora_equal_to_it(measured, tokenizer, tmp_path, kind):
    import warnings

    pytest.importorskip("peft")
    from peft import PeftModel

    from vauban.exports.exporting import export

    model, direction = measured[kind]
    ids = torch.tensor([[5, 17, 42, 99, 7, 12]])
    with get_method("harmless_preserving").make(model, tokenizer, direction, Inputs(HARMFUL, HARMLESS)):
        with torch.no_grad():
            merged = model(ids).logits
        export(model, tokenizer, tmp_path / "adapter", format="lora")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapted = PeftModel.from_pretrained(build_model(kind), tmp_path / "adapter")
    with torch.no_grad():
        got = adapted(ids).logits
        original = build_model(kind)(ids).logits
    assert (got - merged).abs().max() < 2e-5 * merged.abs().max()
    assert (original - merged).abs().max() > 1e-4  # the edit did something
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 1


def test_a_method_edit_redone_on_a_copy_of_the_weights_is_the_edit(measured, tokenizer):
    from vauban.edit.cutting import redo

    model, direction = measured["qwen2"]
    before = snapshot(model)
    for name, params in (("harmless_preserving", {}), ("norm_preserving_leak_free", {"alpha": 0.6})):
        inputs = Inputs(HARMFUL, HARMLESS)
        with get_method(name).make(model, tokenizer, direction, inputs, **params) as applied:
            now = dict(model.named_parameters())
            for edit in applied.tensor_edits():
                assert torch.allclose(redo(before[edit.name], edit), now[edit.name], atol=1e-5)


def test_the_cli_fitted_methods_are_registered_methods_with_their_options():
    from vauban.cli.commands_cut import METHOD_OPTIONS
    from vauban.methods import FITTED

    assert set(FITTED) <= set(METHODS) and set(METHOD_OPTIONS) == set(FITTED)


def test_harmless_preserving_rows_bounds_the_captured_rows(measured, tokenizer):
    """``rows``: token rows captured per writer and prompt set (recorded when not the default); the
    edit stays rank 1; fewer than one row is a one-line error."""
    model, direction = measured["qwen2"]
    before = snapshot(model)
    with get_method("harmless_preserving").make(
        model, tokenizer, direction, Inputs(HARMFUL, HARMLESS), rows=6
    ) as applied:
        assert rank(applied) == 1 and applied.record()["rows"] == 6
    assert same_bits(model, before)
    with pytest.raises(VaubanError, match="rows ≥ 1"):
        get_method("harmless_preserving").make(model, tokenizer, direction, Inputs(HARMFUL, HARMLESS), rows=0)
