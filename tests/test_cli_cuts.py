"""The command line expresses every cut and every formatting: ``vauban abliterate``'s variants and
``--params`` give the same weights as the Python API, and ``--system-prompt`` /
``--template-option`` reach the prompts and the records (in-process ``main``, a tiny model)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from conftest import HARMFUL, HARMLESS, build_model
from vauban import DirectionResult, LayerKernel, cut
from vauban.cli import main
from vauban.config import resolve
from vauban.direction.results import direction_at, directions_per_layer
from vauban.methods.cutspec import CutSpec, parse_weights
from vauban.search.trials import CutParams


def run(capsys, *argv: str, code: int = 0) -> dict[str, Any]:
    assert main(list(argv)) == code, capsys.readouterr().err
    out = capsys.readouterr()
    return json.loads(out.out) if "--json" in argv and code == 0 else {"stderr": out.err}


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tokenizer) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cli-cuts")
    model = build_model("qwen2")
    model.save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    for name, lines in (("harmful", HARMFUL), ("harmless", HARMLESS)):
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return {"root": root, "model": str(root / "tiny")}


def isolate(ws: dict[str, Any], patch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("VAUBAN_")]:
        patch.delenv(key)
    patch.chdir(ws["root"])
    # The CLI cuts on the CPU like expected_weights does: the claim is the same weights from the
    # same arithmetic, and a GPU's matrix products round differently (seen on an H200).
    for key, value in (
        ("CACHE", ws["root"] / "cache"),
        ("MODEL", ws["model"]),
        ("MAX_TOKENS", 4),
        ("DEVICE", "cpu"),
        ("HARMFUL", ws["root"] / "harmful.txt"),
        ("HARMLESS", ws["root"] / "harmless.txt"),
    ):
        patch.setenv(f"VAUBAN_{key}", str(value))


@pytest.fixture(autouse=True)
def env(ws, monkeypatch):
    isolate(ws, monkeypatch)


@pytest.fixture(scope="module")
def direction_file(ws) -> str:
    path = ws["root"] / "direction.safetensors"
    with pytest.MonkeyPatch.context() as patch:
        isolate(ws, patch)
        assert (
            main(
                [
                    "measure",
                    "-o",
                    str(path),
                    "--quiet",
                    "--system-prompt",
                    "Be careful.",
                    "--template-option",
                    "enable_thinking=false",
                    "--set-system-prompt",
                    "harmless=Be kind.",
                ]
            )
            == 0
        )
    return str(path)


def exported_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def expected_weights(ws, tokenizer, apply) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ws["model"])
    with apply(model):
        return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_direction_records_its_formatting_and_is_reused(ws, direction_file, capsys):
    direction = DirectionResult.load(direction_file)
    fmt = direction.formatting
    assert fmt.system_prompt == "Be careful." and fmt.system_prompts == {"harmless": "Be kind."}
    assert fmt.template_options == {"enable_thinking": False} and fmt.thinking_tokens == 0
    doc = run(capsys, "probe", "Hi", "--direction", direction_file, "--json")
    assert doc["direction"]["formatting"] == fmt.record()
    # the same prompt with another system prompt reads other activations
    other = run(capsys, "probe", "Hi", "--direction", direction_file, "--system-prompt", "Be bold.", "--json")
    assert other["prompts"][0]["projections"] != doc["prompts"][0]["projections"]


def test_abliterate_every_variant_equals_the_python_cut(ws, direction_file, tokenizer, capsys):
    out = ws["root"] / "variants"
    doc = run(
        capsys,
        "abliterate",
        "-o",
        str(out),
        "--direction",
        direction_file,
        "--layers",
        "1,2,3",
        "--alpha",
        "0.8",
        "--attention",
        "0,0.5,1,1",
        "--mlp",
        "peak=2,max=1.2,min=0.1,width=2",
        "--norm-preserving",
        "--projected",
        "--direction-index",
        "1.5",
        "--quiet",
        "--json",
    )
    assert doc["cut"]["projected"] and doc["cut"]["attention"] == [0.0, 0.5, 1.0, 1.0]
    direction = DirectionResult.load(direction_file)
    vector = direction_at(direction, 1.5, projected=True)
    kernel = LayerKernel(peak=2, max_weight=1.2, min_weight=0.1, width=2)
    want = expected_weights(
        ws,
        tokenizer,
        lambda m: cut(
            m, vector, alpha=0.8, layers=[1, 2, 3], attention=[0, 0.5, 1, 1], mlp=kernel, norm_preserving=True
        ),
    )
    got = exported_weights(out)
    assert all(torch.equal(got[k], want[k]) for k in got)
    record = json.loads((out / "vauban.json").read_text())
    assert record["cut"]["norm_preserving"] and record["cut_spec"]["direction_index"] == 1.5
    assert record["formatting"]["system_prompt"] == "Be careful."


def test_abliterate_per_layer_and_subspace(ws, direction_file, capsys):
    per_layer = run(
        capsys,
        "abliterate",
        "-o",
        str(ws["root"] / "per-layer"),
        "--direction",
        direction_file,
        "--per-layer",
        "--quiet",
        "--json",
    )
    assert per_layer["cut"]["per_layer"]
    doc = run(
        capsys,
        "abliterate",
        "-o",
        str(ws["root"] / "subspace"),
        "--direction",
        direction_file,
        "--subspace",
        "2",
        "--quiet",
        "--json",
    )
    record = json.loads((ws["root"] / "subspace" / "vauban.json").read_text())
    assert doc["cut"]["subspace"] == 2 and record["cut"]["subspace_rank"] == 2


def test_params_reproduce_an_optimize_trial(ws, direction_file, tokenizer, capsys, tmp_path):
    params = CutParams(
        2.3,
        LayerKernel(peak=2.5, max_weight=1.1, min_weight=0.3, width=1.5),
        (0.2, 0.9, 1.0, 1.3),
        projected=True,
    )
    plain = CutParams(1.0, LayerKernel(1.0), LayerKernel(1.0))
    pareto = {
        "best": 7,
        "trials": [
            {"number": 3, "cut": plain.record()},
            {"number": 7, "refusal": 0.0, "cut": params.record()},
        ],
    }
    (tmp_path / "pareto.json").write_text(json.dumps(pareto))
    direction = DirectionResult.load(direction_file)
    want = expected_weights(ws, tokenizer, lambda m: params.apply(m, direction))
    out = ws["root"] / "from-params"
    doc = run(
        capsys,
        "abliterate",
        "-o",
        str(out),
        "--direction",
        direction_file,
        "--params",
        str(tmp_path / "pareto.json"),
        "--quiet",
        "--json",
    )
    assert doc["cut"]["params"]["trial"] == 7  # the study's pick
    got = exported_weights(out)
    assert all(torch.equal(got[k], want[k]) for k in got)
    # the export's own vauban.json, or one trial's record, work as well; --trial picks another
    assert CutSpec.from_params(tmp_path / "pareto.json", trial=3).direction_index == 1.0
    (tmp_path / "trial.json").write_text(json.dumps(pareto["trials"][1]))
    assert CutSpec.from_params(tmp_path / "trial.json") == CutSpec.from_params(tmp_path / "pareto.json")
    (tmp_path / "export.json").write_text(json.dumps({"optimization": {"trial": pareto["trials"][1]}}))
    assert CutSpec.from_params(tmp_path / "export.json").mlp == (0.2, 0.9, 1.0, 1.3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--params", "x.json", "--alpha", "2"], "--params fixes the whole cut"),
        (["--trial", "3"], "--trial N picks a trial"),
        (["--attention", "peak=x"], "cannot read weights"),
        (["--mlp", "top=1"], "unknown kernel keys"),
        (["--per-layer", "--subspace", "2"], "per-layer directions exclude"),
        (["--template-option", "enable-thinking"], "not KEY=VALUE"),
        (["--set-system-prompt", "nosuchset=hi"], "SET=TEXT"),
        (["--thinking-tokens", "-1"], "thinking_tokens must be an integer >= 0"),
    ],
)
def test_bad_cut_and_formatting_flags_are_one_line(ws, direction_file, capsys, argv, message):
    out = run(
        capsys, "abliterate", "-o", str(ws["root"] / "never"), "--direction", direction_file, *argv, code=2
    )
    assert message in out["stderr"] and out["stderr"].count("\n") == 1


def test_formatting_settings_from_file_and_environment(tmp_path):
    config = tmp_path / "vauban.toml"
    config.write_text(
        'system_prompt = "File."\n[template_options]\nenable_thinking = false\n'
        '[system_prompts]\neval = "Answer briefly."\n'
    )
    s = resolve({}, env={"VAUBAN_THINKING_TOKENS": "256"}, config_file=config)
    fmt = s.formatting()
    assert (fmt.system_prompt, fmt.template_options, fmt.system_prompts, fmt.thinking_tokens) == (
        "File.",
        {"enable_thinking": False},
        {"eval": "Answer briefly."},
        256,
    )
    env = resolve(
        {"template_options": ["reasoning_effort=low"]},
        env={"VAUBAN_TEMPLATE_OPTIONS": "enable_thinking=true,budget=3"},
    )
    assert env.formatting().template_options == {"reasoning_effort": "low"}  # flags win whole
    assert resolve({}, env={"VAUBAN_TEMPLATE_OPTIONS": '{"a": [1, 2]}'}).template_options == {"a": [1, 2]}
    assert resolve({}, env={}).formatting() is None


def test_parse_weights():
    assert parse_weights("0, 0.5,1") == (0.0, 0.5, 1.0)
    assert parse_weights("peak=3,max=2") == LayerKernel(
        peak=3, max_weight=2, min_weight=0, width=float("inf")
    )
    assert directions_per_layer  # imported for the per-layer variant's formula
