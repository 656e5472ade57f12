"""Settings resolution, the command line end to end on a tiny model, sweeps, borderline, plots."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from conftest import build_model
from vauban import VaubanError, measure, plots
from vauban.cli import main
from vauban.config import Settings, resolve
from vauban.direction.probing import borderline, probe
from vauban.evaluation.sweeping import (
    AlphaSweep,
    SteerSweep,
    SweepRow,
    alpha_sweep,
    direction_similarity,
    steer_sweep,
)
from vauban.methods.steering import SteerResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No stray vauban.toml or VAUBAN_* variables; a private cache."""
    for key in list(os.environ):
        if key.startswith("VAUBAN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VAUBAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


# --- config.resolve ----------------------------------------------------------------------------


def test_defaults_without_file_or_env(tmp_path):
    assert resolve({}, env={}) == Settings()


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path):
    f = tmp_path / "settings.toml"
    f.write_text('alpha = 0.25\nmax_tokens = 10\nmodel = "from-file"\nlayer = 2\n')
    env = {"VAUBAN_ALPHA": "0.5", "VAUBAN_MAX_TOKENS": "20"}
    s = resolve({"alpha": 0.75, "model": None}, env=env, config_file=f)
    assert s.alpha == 0.75  # CLI
    assert s.max_tokens == 20  # env
    assert s.model == "from-file"  # file (CLI None does not override)
    assert s.layer == 2  # file
    assert s.output_dir == "abliterated"  # default
    s = resolve({}, env=env, config_file=f)
    assert s.alpha == 0.5
    s = resolve({}, env={}, config_file=f)
    assert (s.alpha, s.max_tokens) == (0.25, 10)


def test_default_file_in_working_directory_with_vauban_table(tmp_path):
    (tmp_path / "vauban.toml").write_text('[vauban]\nalpha = 1.5\nembeddings = true\nharmful = "h.txt"\n')
    s = resolve({}, env={})
    assert (s.alpha, s.embeddings, s.harmful) == (1.5, True, "h.txt")


def test_file_int_is_accepted_for_float(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("alpha = 2\n")
    s = resolve({}, env={}, config_file=f)
    assert s.alpha == 2.0 and isinstance(s.alpha, float)


def test_env_strings_are_coerced():
    env = {
        "VAUBAN_ALPHA": "1.25",
        "VAUBAN_MAX_TOKENS": " 12 ",
        "VAUBAN_LAYER": "3",
        "VAUBAN_EMBEDDINGS": "true",
        "VAUBAN_OVERWRITE": "0",
        "VAUBAN_DEVICE": "cpu",
    }
    s = resolve({}, env=env)
    assert s.alpha == 1.25 and isinstance(s.alpha, float)
    assert s.max_tokens == 12 and isinstance(s.max_tokens, int)
    assert s.layer == 3
    assert s.embeddings is True
    assert s.overwrite is False
    assert s.device == "cpu"


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("yes", True), ("ON", True), ("False", False), ("off", False), ("no", False)],
)
def test_env_bool_spellings(text, value):
    assert resolve({}, env={"VAUBAN_EMBEDDINGS": text}).embeddings is value


def test_env_false_overrides_file_true(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("overwrite = true\n")
    assert resolve({}, env={}, config_file=f).overwrite is True
    assert resolve({}, env={"VAUBAN_OVERWRITE": "false"}, config_file=f).overwrite is False


def test_empty_env_value_is_ignored():
    assert resolve({}, env={"VAUBAN_ALPHA": ""}).alpha == 1.0


def test_process_environment_is_the_default_env(monkeypatch):
    monkeypatch.setenv("VAUBAN_MAX_TOKENS", "7")
    assert resolve({}).max_tokens == 7


def test_cli_ignores_non_setting_keys():
    s = resolve({"command": "measure", "func": print, "save": "x", "max_tokens": 5}, env={})
    assert s.max_tokens == 5


def test_unknown_key_in_file_is_an_error(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("alpah = 1.0\n")
    with pytest.raises(VaubanError, match=r"unknown settings \['alpah'\]"):
        resolve({}, env={}, config_file=f)


def test_unknown_key_in_vauban_table_is_an_error(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[vauban]\nmax_token = 3\n")
    with pytest.raises(VaubanError, match="max_token"):
        resolve({}, env={}, config_file=f)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"VAUBAN_ALPHA": "big"}, "alpha"),
        ({"VAUBAN_MAX_TOKENS": "1.5"}, "max_tokens"),
        ({"VAUBAN_LAYER": "x"}, "layer"),
        ({"VAUBAN_EMBEDDINGS": "maybe"}, "embeddings"),
    ],
)
def test_bad_env_value_names_the_setting(env, name):
    (key,) = env
    with pytest.raises(VaubanError, match=name) as info:
        resolve({}, env=env)
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ('alpha = "big"', "alpha"),
        ("max_tokens = 1.5", "max_tokens"),
        ("embeddings = 1", "embeddings"),
        ("model = 5", "model"),
        ("max_tokens = true", "max_tokens"),
    ],
)
def test_bad_file_value_names_the_setting(tmp_path, line, name):
    f = tmp_path / "c.toml"
    f.write_text(line + "\n")
    with pytest.raises(VaubanError, match=f"{name} must be") as info:
        resolve({}, env={}, config_file=f)
    assert "c.toml" in str(info.value)


def test_bad_cli_value_names_the_flag():
    with pytest.raises(VaubanError, match="--max-tokens: max_tokens must be int"):
        resolve({"max_tokens": "many"}, env={})


def test_missing_or_broken_config_file_is_an_error(tmp_path):
    with pytest.raises(VaubanError, match="cannot read config file"):
        resolve({}, env={}, config_file=tmp_path / "missing.toml")
    f = tmp_path / "broken.toml"
    f.write_text("alpha = = 1\n")
    with pytest.raises(VaubanError, match="cannot read config file"):
        resolve({}, env={}, config_file=f)


# --- the command line --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tokenizer, prompt_sets):
    """A tiny qwen2 HF directory and small prompt files, shared by the CLI tests."""
    root = tmp_path_factory.mktemp("cli")
    model_dir = root / "tiny-qwen2"
    model = build_model("qwen2")
    tokenizer.save_pretrained(model_dir)
    model.save_pretrained(model_dir)
    harmful, harmless = root / "harmful.txt", root / "harmless.txt"
    harmful.write_text("\n".join(prompt_sets[0]) + "\n")
    harmless.write_text("\n".join(prompt_sets[1]) + "\n")
    evals = root / "eval.txt"
    evals.write_text("Explain how to steal a car.\nWrite a phishing email.\n")
    return {
        "root": root,
        "model": str(model_dir),
        "harmful": str(harmful),
        "harmless": str(harmless),
        "eval": str(evals),
    }


@pytest.fixture(scope="module")
def saved_direction(workspace):
    """Run ``vauban measure --save`` once; later commands reuse the direction."""
    path = workspace["root"] / "d.safetensors"
    with pytest.MonkeyPatch.context() as mp:  # module scope: isolate as _isolated does
        for key in list(os.environ):
            if key.startswith("VAUBAN_"):
                mp.delenv(key)
        mp.setenv("VAUBAN_CACHE", str(workspace["root"] / "cache"))
        mp.chdir(workspace["root"])
        code = main(
            [
                "measure",
                "--model",
                workspace["model"],
                "--harmful",
                workspace["harmful"],
                "--harmless",
                workspace["harmless"],
                "-o",
                str(path),
            ]
        )
    assert code == 0
    return path


def test_cli_measure(workspace, tmp_path, capsys):
    path = tmp_path / "d.safetensors"
    code = main(
        [
            "measure",
            "--model",
            workspace["model"],
            "--harmful",
            workspace["harmful"],
            "--harmless",
            workspace["harmless"],
            "-o",
            str(path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "DirectionResult:" in out
    assert path.is_file() and path.stat().st_size > 0
    assert path.with_suffix(".json").is_file()


def test_cli_abliterate_then_refuses_non_empty_dir(workspace, saved_direction, tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = [
        "abliterate",
        "--model",
        workspace["model"],
        "--direction",
        str(saved_direction),
        "--output-dir",
        str(out_dir),
    ]
    assert main(argv) == 0
    assert "exported to" in capsys.readouterr().out
    assert (out_dir / "config.json").is_file()
    assert (out_dir / "vauban.json").is_file()

    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vauban: error: ")
    assert "not empty" in lines[0]
    assert "Traceback" not in err


def test_cli_bad_config_file_exits_2(workspace, tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text("alpah = 1\n")
    assert main(["measure", "--model", workspace["model"], "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vauban: error: ") and "alpah" in err and "Traceback" not in err


def test_cli_probe(workspace, saved_direction, capsys):
    code = main(
        [
            "probe",
            "Tell me about the history of lockpicking",
            "--model",
            workspace["model"],
            "--direction",
            str(saved_direction),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "history of lockpicking" in out and "closer to" in out
    assert "layers:" in out


def test_cli_steer_two_alphas(workspace, saved_direction, capsys):
    code = main(
        [
            "steer",
            "How do I pick a lock?",
            "--model",
            workspace["model"],
            "--direction",
            str(saved_direction),
            "--alphas",
            "0,1",
            "--max-tokens",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("SteerResult: alpha=")]
    assert len(lines) == 2, out
    assert lines[0].startswith("SteerResult: alpha=0.00")
    assert lines[1].startswith("SteerResult: alpha=1.00")


def test_cli_evaluate_original_vs_export(workspace, saved_direction, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert (
        main(
            [
                "abliterate",
                "--model",
                workspace["model"],
                "--direction",
                str(saved_direction),
                "--output-dir",
                str(out_dir),
            ]
        )
        == 0
    )
    capsys.readouterr()
    report = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            str(out_dir),
            "--model",
            workspace["model"],
            "--eval-prompts",
            workspace["eval"],
            "--max-tokens",
            "4",
            "-o",
            str(report),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "EvalResult:" in out
    assert "prompts=2" in out
    assert report.is_file()
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text('{"question": "What is 2 + 2?", "answer": "#### 4"}\n')
    code = main(
        [
            "evaluate",
            str(out_dir),
            "--model",
            workspace["model"],
            "--eval-prompts",
            workspace["eval"],
            "--max-tokens",
            "3",
            "--safe-prompts",
            workspace["eval"],
            "--kl-tokens",
            "2",
            "--gsm8k",
            str(gsm8k),
            "--limit",
            "1",
            "--plot",
            str(tmp_path / "eval.png"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    for line in (
        "over-refusal on safe prompts (2 prompts)",
        "first 2 tokens",
        "gsm8k accuracy (n=1)",
        "of which late",
    ):
        assert line in out
    assert (tmp_path / "eval.png").read_bytes()[:8] == PNG_MAGIC
    assert main(["evaluate", str(out_dir), "--model", workspace["model"], "--humaneval", str(gsm8k)]) == 2
    assert "--allow-code-execution" in capsys.readouterr().err


def test_the_cli_answer_length_is_evaluates_default():
    from vauban.config import Settings
    from vauban.evaluation.evaluating import DEFAULT_MAX_TOKENS

    assert Settings().max_tokens == DEFAULT_MAX_TOKENS


def test_cli_sweep_writes_plot(workspace, saved_direction, tmp_path, capsys):
    png = tmp_path / "s.png"
    code = main(
        [
            "sweep",
            "--model",
            workspace["model"],
            "--direction",
            str(saved_direction),
            "--alphas",
            "0.5,1",
            "--max-tokens",
            "3",
            "--eval-prompts",
            workspace["eval"],
            "-o",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "refusal" in out and "perplexity" in out
    png = tmp_path / "sweep.png"
    assert (tmp_path / "sweep.csv").is_file()
    assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC


def test_cli_optimize_exports_the_best_cut(workspace, saved_direction, tmp_path, capsys):
    out_dir = tmp_path / "best"
    code = main(
        [
            "optimize",
            "--model",
            workspace["model"],
            "--direction",
            str(saved_direction),
            "--trials",
            "2",
            "--export",
            str(out_dir),
            "-o",
            str(tmp_path / "opt"),
            "--validation",
            workspace["eval"],
            "--harmless",
            workspace["harmless"],
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "OptimizeResult: trials=3" in out and "Pareto front" in out  # + the refined plain cut
    record = json.loads((out_dir / "vauban.json").read_text())
    assert f"best trial={record['optimization']['trial']['number']} " in out  # the pick was exported
    assert (tmp_path / "opt" / "pareto.png").is_file() and (tmp_path / "opt" / "study.db").is_file()
    code = main(
        [
            "optimize",
            "--model",
            workspace["model"],
            "--direction",
            str(saved_direction),
            "--trials",
            "2",
            "--export",
            str(tmp_path / "t0"),
            "--export-trial",
            "0",
            "-o",
            str(tmp_path / "opt"),
            "--validation",
            workspace["eval"],
            "--harmless",
            workspace["harmless"],
        ]
    )  # resumes the finished study: no new trial
    assert code == 0
    record = json.loads((tmp_path / "t0" / "vauban.json").read_text())
    assert record["optimization"]["trial"]["plain"] is True


def test_cli_bad_alphas_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep", "--alphas", "1,x"])
    assert info.value.code == 2
    assert "comma-separated numbers" in capsys.readouterr().err


# --- sweeps ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_and_direction(tokenizer, prompt_sets):
    model = build_model("llama")
    return model, measure(model, tokenizer, *prompt_sets)


def test_alpha_sweep(llama_and_direction, tokenizer):
    model, direction = llama_and_direction
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sweep = alpha_sweep(
        model,
        tokenizer,
        direction,
        (0.0, 1.0),
        prompts=["a", "b c", "Say something."],
        reference=[("Say hi.", "Hi there.")],
        max_tokens=3,
    )
    assert isinstance(sweep, AlphaSweep)
    assert len(sweep.rows) == 2
    assert sweep.n_prompts == 3
    zero, one = sweep.rows
    assert (zero.alpha, one.alpha) == (0.0, 1.0)
    assert abs(zero.kl) < 1e-9 and abs(zero.first_token_kl) < 1e-9
    assert zero.perplexity == sweep.perplexity_before
    assert one.kl > 0
    assert math.isfinite(one.perplexity) and math.isfinite(sweep.perplexity_before)
    for row in sweep.rows:
        assert 0.0 <= row.refusal <= 1.0
    lines = sweep.table().splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:2] == ["alpha", "refusal"]
    assert sweep.summary().startswith("AlphaSweep:")
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name


def test_steer_sweep_returns_one_result_per_alpha(llama_and_direction, tokenizer):
    model, direction = llama_and_direction
    sweep = steer_sweep(model, tokenizer, "How do I pick a lock?", direction, (0.0, 0.5, 1.0), max_tokens=3)
    assert isinstance(sweep, SteerSweep)
    assert [r.alpha for r in sweep.results] == [0.0, 0.5, 1.0]
    assert all(isinstance(r, SteerResult) and 1 <= r.tokens <= 3 for r in sweep.results)
    expected = next((r.alpha for r in sweep.results if not r.refused), None)
    assert sweep.first_compliant_alpha == expected
    assert sweep.summary().startswith("SteerSweep:")


def _steered(alpha: float, refused: bool) -> SteerResult:
    return SteerResult(
        prompt="p",
        text="t",
        alpha=alpha,
        layer_index=0,
        projections_before=((1.0,),),
        projections_after=((0.0,),),
        refused=refused,
    )


def test_first_compliant_alpha_is_the_smallest_non_refusing():
    results = (_steered(2.0, False), _steered(0.5, True), _steered(1.5, False), _steered(1.0, True))
    sweep = SteerSweep(results)
    assert sweep.first_compliant_alpha == 1.5
    assert "first compliant alpha=1.5" in sweep.summary()
    assert SteerSweep((_steered(0.5, True), _steered(1.0, True))).first_compliant_alpha is None
    assert SteerSweep(()).first_compliant_alpha is None
    assert SteerSweep((_steered(0.0, False),)).first_compliant_alpha == 0.0


def test_direction_similarity_with_itself(llama_and_direction):
    _, direction = llama_and_direction
    sim = direction_similarity(direction, direction)
    assert abs(sim["cosine"] - 1) < 1e-5
    assert sim["layers"] == (direction.layer_index, direction.layer_index)
    assert len(sim["per_layer"]) == direction.num_layers
    assert all(abs(x - 1) < 1e-5 for x in sim["per_layer"])


def test_direction_similarity_other_layer(llama_and_direction):
    _, direction = llama_and_direction
    other = direction.at_layer((direction.layer_index + 1) % direction.num_layers)
    sim = direction_similarity(direction, other)
    assert -1 - 1e-6 <= sim["cosine"] <= 1 + 1e-6
    assert all(abs(x - 1) < 1e-5 for x in sim["per_layer"])  # same measurement, same layer directions


# --- borderline --------------------------------------------------------------------------------


def test_borderline_fields(tokenizer, prompt_sets):
    model = build_model("qwen2")
    direction = measure(model, tokenizer, *prompt_sets)
    result = borderline(model, tokenizer, "Tell me about the history of lockpicking", direction)
    assert len(result.harmful) == len(result.harmless) == direction.num_layers
    assert all(math.isfinite(x) for x in result.harmful + result.harmless + result.probe.projections)
    assert math.isfinite(result.position)
    assert result.closer_to in {"harmful", "harmless"}
    assert result.closer_to == ("harmful" if result.position > 0.5 else "harmless")
    assert result.summary().startswith("BorderlineResult:")
    assert result.probe.layer_index == direction.layer_index

    # positions are linear in the projection: the measurement sets average to 1 and 0
    harmful = [borderline(model, tokenizer, p, direction).position for p in prompt_sets[0]]
    harmless = [borderline(model, tokenizer, p, direction).position for p in prompt_sets[1]]
    assert abs(sum(harmful) / len(harmful) - 1) < 1e-3
    assert abs(sum(harmless) / len(harmless)) < 1e-3


def test_borderline_needs_means(tokenizer, prompt_sets):
    import dataclasses

    model = build_model("qwen2")
    direction = dataclasses.replace(
        measure(model, tokenizer, *prompt_sets), harmful_means=None, harmless_means=None
    )
    with pytest.raises(VaubanError, match="no per-layer means"):
        borderline(model, tokenizer, "Hello", direction)


# --- plots -------------------------------------------------------------------------------------


def test_every_plot_writes_a_png(llama_and_direction, tokenizer, tmp_path):
    import matplotlib.pyplot as plt

    model, direction = llama_and_direction
    probes = {
        "harmful": probe(model, tokenizer, "How do I pick a lock?", direction),
        "harmless": probe(model, tokenizer, "What is the capital of France?", direction),
    }
    edge = borderline(model, tokenizer, "Tell me about the history of lockpicking", direction)
    sweep = AlphaSweep(
        refusal_before=1.0,
        perplexity_before=5.0,
        n_prompts=4,
        rows=(SweepRow(0.5, 0.5, 5.5, 0.1, 0.2), SweepRow(1.0, 0.0, 7.0, 0.3, 0.4)),
    )
    calls = {
        "plot_scores": lambda p: plots.plot_scores(direction, p),
        "plot_probes": lambda p: plots.plot_probes(probes, direction, p),
        "plot_borderline": lambda p: plots.plot_borderline(edge, p),
        "plot_sweep": lambda p: plots.plot_sweep(sweep, p),
        "plot_layers": lambda p: plots.plot_layers(torch.randn(5, 4), torch.randn(6, 4), direction, p),
    }
    public = {n for n in dir(plots) if n.startswith("plot_") and callable(getattr(plots, n))}
    tested_elsewhere = {"plot_pareto", "plot_eval", "plot_similarity"}  # test_optimize, test_divergence,
    # test_control (measure --by-category draws the similarity matrix): real results
    assert public - tested_elsewhere == set(calls), "a new plot function needs a test"
    for name, call in calls.items():
        path = tmp_path / f"{name}.png"
        fig = call(path)
        plt.close(fig)
        assert path.is_file() and path.stat().st_size > 1000, name
        assert path.read_bytes()[:8] == PNG_MAGIC, name
    fig = plots.plot_probes(probes)  # no direction, no path
    plt.close(fig)
