"""Multi-objective optimization on a tiny model: reproducible, resumable, model left unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import build_model
from vauban import VaubanError, measure
from vauban.edit.cutting import LayerKernel
from vauban.search.optimizing import export_trial, optimize
from vauban.search.trials import CutParams, OptimizeResult, Trial, candidates

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def setup(tokenizer, prompt_sets):
    model = build_model("llama")
    direction = measure(model, tokenizer, *prompt_sets)
    kwargs = dict(
        prompts=prompt_sets[0][:2],
        harmless=prompt_sets[1][:3],
        selection=prompt_sets[0][2:4],
        max_tokens=2,
        selection_tokens=3,
        refine_steps=0,
    )
    return model, direction, kwargs


def test_optimize_is_reproducible_starts_with_the_plain_cut_and_leaves_the_model_unchanged(
    setup, tokenizer, tmp_path
):
    model, direction, kwargs = setup
    state = {k: v.clone() for k, v in model.state_dict().items()}
    lines: list[str] = []
    first = optimize(model, tokenizer, direction, n_trials=3, log=lines.append, **kwargs)
    second = optimize(model, tokenizer, direction, n_trials=3, **kwargs)
    assert [(t.params, t.refusal, t.kl) for t in first.trials] == [
        (t.params, t.refusal, t.kl) for t in second.trials
    ]
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(first.trials) == 3 and len(trial_lines) == 3
    assert "refusal" in trial_lines[-1] and "best: trial" in trial_lines[-1] and "ETA" in trial_lines[-1]
    assert lines[-1].startswith(f"pick: trial {first.best.number}")
    plain = first.trials[0]
    assert plain.plain and first.plain is plain
    assert plain.params.direction_index == direction.layer_index
    assert plain.params.attention.weights(direction.num_layers) == (1.0,) * direction.num_layers
    assert all(t.kl >= 0 and 0 <= t.refusal <= 1 and 0 <= t.likelihood <= 1 for t in first.trials)
    assert first.pareto and all(t.pareto for t in first.pareto)
    assert first.plain.selection_refusal is not None  # the plain cut is always checked
    assert first.best.selection_refusal is not None
    assert first.best.selection_refusal <= first.plain.selection_refusal
    assert first.best.refusal <= first.plain.refusal and first.best.kl <= first.plain.kl
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert first.table().splitlines()[0].split()[:3] == ["trial", "refusal", "first-token"]
    assert "*" in first.table()  # the pick is starred
    assert first.summary().startswith("OptimizeResult: trials=3")
    saved = json.loads(first.save_json(tmp_path / "pareto.json").read_text())
    assert len(saved["trials"]) == 3 and saved["pareto"] and saved["best"] == first.best.number
    assert saved["trials"][0]["selection_refusal"] == first.plain.selection_refusal

    from vauban.plots import plot_pareto

    plot_pareto(first, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").read_bytes()[:8] == PNG_MAGIC


def test_interrupted_study_resumes_where_it_stopped(setup, tokenizer, tmp_path):
    model, direction, kwargs = setup
    db = tmp_path / "study.db"
    seen: list[str] = []

    def stop_after_three(line: str) -> None:
        seen.append(line)
        if len(seen) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        optimize(model, tokenizer, direction, n_trials=10, study=db, log=stop_after_three, **kwargs)
    kept = optimize(model, tokenizer, direction, n_trials=3, study=db, **kwargs)  # nothing left to run
    assert len(kept.trials) == 3
    resumed = optimize(model, tokenizer, direction, n_trials=6, study=db, **kwargs)
    assert len(resumed.trials) == 6
    assert [(t.number, t.params, t.kl) for t in resumed.trials[:3]] == [
        (t.number, t.params, t.kl) for t in kept.trials
    ]
    old = {t.params for t in kept.trials}
    assert all(t.params not in old for t in resumed.trials[3:])  # the sampler moved on
    assert sum(t.plain for t in resumed.trials) == 1
    with pytest.raises(VaubanError, match="different settings"):
        optimize(model, tokenizer, direction, n_trials=7, study=db, projected=True, **kwargs)


def test_settings_are_one_frozen_object_validated_when_made(setup, tokenizer):
    """``OptimizeSettings`` checks its values once, when made; keyword arguments to ``optimize``
    take the place of its values, and an unknown one is a one-line error before any work."""
    import dataclasses

    from vauban.search.settings import OptimizeSettings

    settings = OptimizeSettings(n_trials=5, check=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.n_trials = 6  # type: ignore[misc]
    assert OptimizeSettings.with_options(settings, {"n_trials": 7}) == OptimizeSettings(n_trials=7, check=0)
    for bad, match in [
        ({"n_trials": 0}, "n_trials"),
        ({"damage": "all"}, "damage"),
        ({"timeout": -1}, "timeout"),
    ]:
        with pytest.raises(VaubanError, match=match):
            OptimizeSettings(**bad)
    model, direction, _ = setup
    with pytest.raises(VaubanError, match="optimize has no option n_trails"):
        optimize(model, tokenizer, direction, settings, n_trails=3)


def test_export_any_trial(setup, tokenizer, tmp_path):
    model, direction, kwargs = setup
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = optimize(model, tokenizer, direction, n_trials=2, norm_preserving=True, **kwargs)
    out = export_trial(model, tokenizer, direction, result, 1, tmp_path / "trial1")
    record = json.loads((out / "vauban.json").read_text())
    assert record["optimization"]["trial"]["number"] == 1
    assert record["cut"]["norm_preserving"] is True
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(VaubanError, match="no finished trial 9"):
        export_trial(model, tokenizer, direction, result, 9, tmp_path / "nine")


def test_bad_arguments_are_clear_errors(setup, tokenizer, tmp_path):
    model, direction, kwargs = setup
    with pytest.raises(VaubanError, match="n_trials"):
        optimize(model, tokenizer, direction, n_trials=0, **kwargs)
    with pytest.raises(VaubanError, match="directory"):
        optimize(model, tokenizer, direction, n_trials=1, study=tmp_path, **kwargs)
    with pytest.warns(UserWarning, match="also search prompts"):
        optimize(model, tokenizer, direction, n_trials=1, **kwargs | {"selection": kwargs["prompts"]})
    with pytest.raises(VaubanError, match="check must be an integer >= 0"):
        optimize(model, tokenizer, direction, n_trials=1, **kwargs | {"check": -1})
    with pytest.raises(VaubanError, match="timeout"):
        optimize(model, tokenizer, direction, n_trials=1, timeout=0, **kwargs)


def test_timeout_stops_starting_trials(setup, tokenizer):
    model, direction, kwargs = setup
    result = optimize(model, tokenizer, direction, n_trials=50, timeout=1e-6, **kwargs | {"check": 0})
    assert len(result.trials) == 1 and result.trials[0].plain  # the running trial finishes


class Clock:
    """A fake ``time`` for vauban.search.optimizing and vauban.search.refining: it moves only when work
    is charged."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def charging(self, seconds: float, fn, ends: list[float] | None = None):
        """``fn`` costing ``seconds``; ``ends`` gets the time each call ends."""

        def charged(*args, **kwargs):
            self.now += seconds
            if ends is not None:
                ends.append(self.now)
            return fn(*args, **kwargs)

        return charged


def test_budget_keeps_a_third_for_refinement():
    from vauban.search.refining import budget

    assert budget(10.0, None, True) == (None, None)
    assert budget(10.0, 90.0, True) == pytest.approx((70.0, 100.0))
    assert budget(10.0, 90.0, False) == (100.0, 100.0)


@pytest.mark.parametrize("refine_steps", [0, 16])
def test_timeout_bounds_search_and_refinement(setup, tokenizer, monkeypatch, refine_steps):
    """On a fake clock (a trial costs 10 s, a refinement step 10 s): with refinement the search
    ends within two thirds of the timeout and refinement, its result scored, within the timeout;
    without, the search has all of it."""
    import vauban.search.objectives
    import vauban.search.optimizing
    import vauban.search.refining
    import vauban.search.searching

    model, direction, kwargs = setup
    clock = Clock()
    for module in (vauban.search.optimizing, vauban.search.searching, vauban.search.refining):
        monkeypatch.setattr(module, "time", clock)
    ends: list[float] = []  # of every scored cut: the search's trials, then the refined one
    scores = vauban.search.objectives.Scores
    monkeypatch.setattr(scores, "__call__", clock.charging(10.0, scores.__call__, ends))
    refining = vauban.search.refining
    monkeypatch.setattr(refining, "mean_and_grad", clock.charging(5.0, refining.mean_and_grad))
    lines: list[str] = []
    result = optimize(
        model,
        tokenizer,
        direction,
        n_trials=50,
        timeout=100.0,
        log=lines.append,
        **kwargs | {"check": 0, "refine_steps": refine_steps},
    )
    assert clock.now <= 100.0
    refined = [t for t in result.trials if t.params.refined]
    if refine_steps:
        assert len(ends) == 7 and max(ends[:-1]) <= 100.0 * 2 / 3  # 6 search trials
        assert len(refined) == 1 and len(result.trials) == 7
        assert any(line.startswith("Refined: steps=2/16 (stopped at the deadline)") for line in lines)
        assert any(
            line.startswith("refine step 2/16") and "stopped at the deadline" in line for line in lines
        )
    else:
        assert len(ends) == 10 and not refined


def _trial(
    number: int,
    refusal: float,
    kl: float,
    selection: float | None,
    plain: bool = False,
    likelihood: float = 0.01,
) -> Trial:
    flat = LayerKernel(peak=3.0, max_weight=1.0, min_weight=1.0, width=3.0)
    return Trial(
        number,
        refusal,
        kl,
        1.0,
        CutParams(2.0, flat, flat),
        likelihood,
        plain=plain,
        selection_refusal=selection,
    )


def test_the_pick_is_the_lightest_cut_no_weaker_than_the_plain_cut_on_both_splits():
    plain = _trial(0, 0.0, 0.10, 0.025, plain=True)
    edge = _trial(1, 0.0, 0.02, 0.05)  # lightest on the search prompts, refuses more when checked
    safe = _trial(2, 0.0, 0.05, 0.0)
    unchecked = _trial(3, 0.0, 0.06, None)
    leaky = _trial(4, 0.1, 0.01, None)  # more search refusals than the plain cut
    weak = _trial(5, 0.0, 0.001, 0.0, likelihood=0.05)  # answers, but closer to refusing
    result = OptimizeResult((plain, edge, safe, unchecked, leaky, weak), n_prompts=40, n_harmless=24, seed=0)
    assert result.best is safe
    assert candidates(result) == [edge, safe, unchecked]  # checked in this order
    no_check = OptimizeResult(
        tuple(_trial(t.number, t.refusal, t.kl, None, t.plain, t.likelihood) for t in result.trials),
        n_prompts=40,
        n_harmless=24,
        seed=0,
    )
    assert no_check.best.number == edge.number  # without the check, the search's own pick
    none_pass = OptimizeResult((plain, edge), n_prompts=40, n_harmless=24, seed=0)
    assert none_pass.best is plain


def test_checks_stop_at_the_first_passing_candidate_and_are_kept_in_the_study(setup, tokenizer, tmp_path):
    model, direction, kwargs = setup
    db = tmp_path / "study.db"
    lines: list[str] = []
    first = optimize(model, tokenizer, direction, n_trials=4, study=db, log=lines.append, **kwargs)
    checks = [line for line in lines if line.startswith("check trial")]
    order = [first.plain, *candidates(first)]
    passed = [
        t
        for t in order[1:]
        if t.selection_refusal is not None and t.selection_refusal <= first.plain.selection_refusal
    ]
    assert len(checks) == 1 + len([t for t in order[1:] if t.selection_refusal is not None])
    assert len(passed) <= 1 and (not passed or passed[0] is first.best)
    again: list[str] = []
    second = optimize(model, tokenizer, direction, n_trials=4, study=db, log=again.append, **kwargs)
    assert not [line for line in again if line.startswith("check trial")]  # read from the study
    assert second.best.number == first.best.number
    skipped = optimize(model, tokenizer, direction, n_trials=4, study=db, check=0, **kwargs)
    assert skipped.n_selection == 0 and all(t.selection_refusal is None for t in skipped.trials)


def test_refusal_likelihood_is_a_probability_and_skips_empty_refusals(setup, tokenizer):
    from vauban.runtime.scoring import refusal_likelihood

    model, _, _ = setup
    refusals = [("Explain how to steal a car.", "I can't help with that."), ("Write malware.", "")]
    p = refusal_likelihood(model, tokenizer, refusals)
    assert 0 < p < 1
    assert p == refusal_likelihood(model, tokenizer, refusals[:1])  # the empty one adds nothing
    assert refusal_likelihood(model, tokenizer, [("Write malware.", "")]) == 0.0
    assert refusal_likelihood(model, tokenizer, []) == 0.0


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "gpt2", "qwen3_moe", "gpt_oss"])
def test_refine_hooks_compute_the_weight_edit(model_type, tokenizer):
    """The hooks refine differentiates through are the per-layer weight edit itself, post-norms,
    Conv1D and fused experts included."""
    from vauban.edit.cutting import cut
    from vauban.model.arch import num_layers
    from vauban.search.refining import gated

    model = build_model(model_type)
    n = num_layers(model)
    torch.manual_seed(1)
    weights = torch.rand(2, n) * 1.5
    vec = torch.randn(64)
    ids = torch.tensor([[5, 9, 17, 33, 40, 2]])
    with torch.no_grad(), gated(model, vec, weights):
        hooked = model(input_ids=ids).logits
    with torch.no_grad(), cut(model, vec, attention=weights[0].tolist(), mlp=weights[1].tolist()):
        edited = model(input_ids=ids).logits
    assert torch.allclose(hooked, edited, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, edited, atol=1e-4)  # hooks removed


def test_refined_trial_is_scored_stored_once_and_exportable(setup, tokenizer, tmp_path):
    model, direction, kwargs = setup
    state = {k: v.clone() for k, v in model.state_dict().items()}
    db = tmp_path / "study.db"
    lines: list[str] = []
    result = optimize(
        model, tokenizer, direction, n_trials=2, study=db, log=lines.append, **kwargs | {"refine_steps": 3}
    )
    steps = [line for line in lines if line.startswith("refine step")]
    assert len(steps) == 4 and any(line.startswith("refined trial") for line in lines)
    assert len(result.trials) == 3
    refined = next(t for t in result.trials if t.params.refined)
    plain = result.plain
    assert refined.params.direction_index == plain.params.direction_index
    assert len(refined.params.attention) == len(refined.params.mlp) == direction.num_layers
    assert all(0 <= w <= 1.5 for w in (*refined.params.attention, *refined.params.mlp))
    assert "per layer" in result.table() or not refined.pareto
    again: list[str] = []
    rerun = optimize(
        model, tokenizer, direction, n_trials=2, study=db, log=again.append, **kwargs | {"refine_steps": 3}
    )
    assert not [line for line in again if line.startswith("refine")]  # refined once per study
    assert rerun.trial(refined.number).params == refined.params
    out = export_trial(model, tokenizer, direction, rerun, refined.number, tmp_path / "refined")
    record = json.loads((out / "vauban.json").read_text())
    assert record["cut"]["attention_weights"] == pytest.approx(list(refined.params.attention))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_refine_starts_at_the_plain_cut_and_never_ends_worse(setup, tokenizer):
    from vauban.edit.cutting import cut
    from vauban.runtime.scoring import first_token_logprobs, kl_divergence, loss, refusal_likelihood
    from vauban.search.refining import refine

    model, direction, kwargs = setup
    harmless = kwargs["harmless"]
    refusals = [(p, "I can't help with that.") for p in kwargs["prompts"]]
    base = first_token_logprobs(model, tokenizer, harmless)
    refined = refine(model, tokenizer, direction.direction, harmless, base, refusals, steps=4, lr=0.1)
    with cut(model, direction.direction):
        kl = kl_divergence(base, first_token_logprobs(model, tokenizer, harmless))
        lik = refusal_likelihood(model, tokenizer, refusals)
    assert refined.history[0] == pytest.approx((kl, lik), rel=1e-3)  # step 0 is the plain cut
    start = refined.history[0]
    assert loss((refined.kl, refined.likelihood), start) <= loss(start, start)
    assert len(refined.history) == 5
    with pytest.raises(VaubanError, match="steps must be an integer"):
        refine(model, tokenizer, direction.direction, harmless, base, refusals, steps=-1)
    with cut(model, direction.direction, attention=refined.attention, mlp=refined.mlp):
        assert kl_divergence(base, first_token_logprobs(model, tokenizer, harmless)) == pytest.approx(
            refined.kl, rel=1e-3
        )


def test_refine_past_its_deadline_returns_the_plain_cut_and_says_it_stopped(setup, tokenizer):
    import time

    from vauban.runtime.scoring import first_token_logprobs
    from vauban.search.refining import refine

    model, direction, kwargs = setup
    harmless = kwargs["harmless"]
    refusals = [(p, "I can't help with that.") for p in kwargs["prompts"]]
    base = first_token_logprobs(model, tokenizer, harmless)
    lines: list[str] = []
    refined = refine(
        model,
        tokenizer,
        direction.direction,
        harmless,
        base,
        refusals,
        steps=4,
        lr=0.1,
        log=lines.append,
        deadline=time.perf_counter() - 1.0,
    )
    assert (refined.steps, refined.planned, refined.stopped) == (0, 4, True)
    assert len(refined.history) == 1 and (refined.kl, refined.likelihood) == refined.history[0]
    assert set(refined.attention) == set(refined.mlp) == {1.0}  # the plain cut
    assert len(lines) == 1 and "stopped at the deadline after 0 of 4 steps" in lines[0]
    assert refined.summary().startswith("Refined: steps=0/4 (stopped at the deadline)")
    free = refine(
        model,
        tokenizer,
        direction.direction,
        harmless,
        base,
        refusals,
        steps=1,
        deadline=time.perf_counter() + 3600.0,
    )
    assert (free.steps, free.stopped) == (1, False)


def test_the_front_is_over_all_three_objectives():
    from vauban.search.trials import pareto_mask

    plain, refined, light = (0, 0.05, 0.005), (0, 0.04, 0.004), (0, 0.03, 0.02)
    worse, twin = (0.1, 0.05, 0.005), (0, 0.04, 0.004)
    assert pareto_mask([plain, refined, light, worse]) == [False, True, True, False]
    assert pareto_mask([refined, twin]) == [True, True]  # equal points do not dominate each other


def test_k_token_damage_scores_trials_and_refines_on_the_originals_answers(setup, tokenizer):
    model, direction, kwargs = setup
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = optimize(model, tokenizer, direction, n_trials=2, **kwargs)
    k = optimize(
        model,
        tokenizer,
        direction,
        n_trials=2,
        damage="k_tokens",
        kl_tokens=4,
        **(kwargs | {"refine_steps": 1}),
    )
    assert k.settings["damage"] == {"kind": "k_tokens", "kl_tokens": 4}
    assert "damage" not in first.settings  # first-token studies keep their old settings
    assert k.trials[0].plain and k.trials[0].kl > 0 and k.trials[0].kl != first.trials[0].kl
    assert any(t.params.refined for t in k.trials)
    assert k.table().splitlines()[0].split()[:3] == ["trial", "refusal", "4-token"]
    assert all(torch.equal(v, state[k_]) for k_, v in model.state_dict().items())


class Everything:
    """A judge that calls every answer a refusal."""

    spec = "everything"

    def judge(self, prompts, answers):
        from vauban.judge import Verdict

        return [Verdict(True, 1.0, "refusal") for _ in answers]


def test_a_check_judge_counts_the_check_only_and_keeps_its_own_rates(setup, tokenizer, tmp_path):
    model, direction, kwargs = setup
    db = tmp_path / "study.db"
    plain = optimize(model, tokenizer, direction, n_trials=2, study=db, **kwargs)
    lines: list[str] = []
    strict = optimize(
        model,
        tokenizer,
        direction,
        n_trials=2,
        study=db,
        check_judge=Everything(),
        log=lines.append,
        **kwargs,
    )
    assert [line for line in lines if line.startswith("check trial")]  # not the search judge's rates
    assert [(t.refusal, t.kl) for t in strict.trials] == [(t.refusal, t.kl) for t in plain.trials]
    assert strict.plain.selection_refusal == 1.0 and strict.best.selection_refusal == 1.0
    assert strict.check_judge == "everything" and plain.check_judge == "markers"
    assert strict.record()["check_judge"] == "everything"
