"""Multi-objective optimization on a tiny model: reproducible, resumable, model left unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import build_model
from vauban import VaubanError, measure
from vauban.optimize import export_trial, optimize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def setup(tokenizer, prompt_sets):
    model = build_model("llama")
    direction = measure(model, tokenizer, *prompt_sets)
    kwargs = dict(prompts=prompt_sets[0][:2], harmless=prompt_sets[1][:3], max_tokens=2)
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
        (t.params, t.refusal, t.kl) for t in second.trials]
    assert len(first.trials) == 3 and len(lines) == 3
    assert "refusal" in lines[-1] and "best: trial" in lines[-1] and "ETA" in lines[-1]
    plain = first.trials[0]
    assert plain.plain and first.plain is plain
    assert plain.params.direction_index == direction.layer_index
    assert plain.params.attention.weights(direction.num_layers) == (1.0,) * direction.num_layers
    assert all(t.kl >= 0 and 0 <= t.refusal <= 1 for t in first.trials)
    assert first.pareto and all(t.pareto for t in first.pareto)
    assert first.best in first.pareto
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert first.table().splitlines()[0].startswith("trial  refusal")
    assert first.summary().startswith("OptimizeResult: trials=3")
    saved = json.loads(first.save_json(tmp_path / "pareto.json").read_text())
    assert len(saved["trials"]) == 3 and saved["pareto"]

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
        (t.number, t.params, t.kl) for t in kept.trials]
    old = {t.params for t in kept.trials}
    assert all(t.params not in old for t in resumed.trials[3:])  # the sampler moved on
    assert sum(t.plain for t in resumed.trials) == 1
    with pytest.raises(VaubanError, match="different settings"):
        optimize(model, tokenizer, direction, n_trials=7, study=db, projected=True, **kwargs)


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
