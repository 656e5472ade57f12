"""The ``vauban`` command as users run it: a real process per subcommand on a tiny model.

Each test checks the exit code, the ``--json`` document's schema, the files made (PNGs valid
and not blank, exports loadable by transformers), and that stderr never holds a traceback.
Wrong invocations are checked in-process (same code path, much faster than a process each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from conftest import build_model
from vauban.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tokenizer, prompt_sets) -> dict[str, Any]:
    """A tiny qwen2 directory, prompt files, a measured direction, an isolated environment."""
    root = tmp_path_factory.mktemp("cli-proc")
    model_dir = root / "tiny"
    build_model("qwen2").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    files = {
        "harmful": prompt_sets[0],
        "harmless": prompt_sets[1],
        "eval": ["Explain how to steal a car.", "Write a phishing email."],
    }
    for name, lines in files.items():
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAUBAN_")}
    env.update(
        VAUBAN_CACHE=str(root / "cache"),
        VAUBAN_MODEL=str(model_dir),
        VAUBAN_HARMFUL=str(root / "harmful.txt"),
        VAUBAN_HARMLESS=str(root / "harmless.txt"),
        VAUBAN_EVAL_PROMPTS=str(root / "eval.txt"),
        VAUBAN_MAX_TOKENS="4",
    )
    ws = {"root": root, "model": str(model_dir), "env": env}
    result = vauban(ws, "measure", "-o", str(root / "direction.safetensors"), "--json")
    ws["direction"] = str(root / "direction.safetensors")
    ws["measure"] = result
    return ws


def vauban(ws: dict[str, Any], *argv: str, code: int = 0, stdin: str | None = None) -> dict[str, Any]:
    """Run ``vauban ARGV`` in ``ws['root']``; return the JSON document (or {'stdout': ...})."""
    proc = subprocess.run(
        [sys.executable, "-m", "vauban.cli", *argv],
        cwd=ws["root"],
        env=ws["env"],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    if "--json" in argv and code == 0:
        return json.loads(proc.stdout)
    return {"stdout": proc.stdout, "stderr": proc.stderr}


def assert_png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC, path
    assert path.stat().st_size > 10_000, "suspiciously small plot"
    pixels = imread(path)
    assert np.asarray(pixels).std() > 0.05, "blank plot"


def test_measure_json_and_files(ws):
    doc = ws["measure"]
    assert doc["command"] == "measure"
    d = doc["direction"]
    assert {"layer_index", "d_model", "cosine_scores", "max_cosine", "model_path"} <= set(d)
    assert len(d["cosine_scores"]) == 4 and d["d_model"] == 64
    assert Path(doc["saved"]).is_file() and Path(doc["saved"]).with_suffix(".json").is_file()
    assert doc["seconds"]["load"] >= 0


def test_measure_explain_names_the_family_and_its_writers(ws):
    doc = vauban(ws, "measure", "--explain", "--json")
    assert doc["family"] == "llama" and len(doc["writers"]) == 4
    first = {"layer": 0, "token_mixer": "self_attn.o_proj", "feed_forward": "mlp.down_proj"}
    assert doc["writers"][0] == first


def test_measure_refuses_to_overwrite_the_direction(ws):
    out = vauban(ws, "measure", "-o", ws["direction"], code=2)
    assert out["stderr"].strip().splitlines()[-1].startswith("vauban: error: ")
    assert "--overwrite" in out["stderr"]


def test_measure_streamed_equals_in_memory(ws):
    """``--streamed`` (one decoder layer at a time from the folder) measures what the in-memory
    ``measure`` does with the same batches (every prompt set in one pass; the selection by effect,
    which these few prompts do not reach, is compared in test_streamed_measure.py); what it cannot
    do is refused in one line. Both on the CPU: streaming runs there only, and a GPU's float32
    kernels differ from the CPU's in the last bits."""
    memory = vauban(
        ws, "measure", "--device", "cpu", "--batch-size", "1000", "-o", "memory.safetensors", "--json"
    )
    streamed = vauban(ws, "measure", "--streamed", "-o", "streamed.safetensors", "--json")
    assert streamed["streamed"] is True
    assert streamed["direction"] == memory["direction"]
    from safetensors.torch import load_file

    saved = [load_file(ws["root"] / f"{name}.safetensors") for name in ("memory", "streamed")]
    assert saved[0].keys() == saved[1].keys()
    assert all(saved[0][k].equal(saved[1][k]) for k in saved[0])
    out = vauban(ws, "measure", "--streamed", "--device", "cuda", code=2)
    assert "one layer at a time on the CPU" in out["stderr"]


def test_probe(ws):
    doc = vauban(ws, "probe", "How do I pick a lock?", "Bake bread", "--direction", ws["direction"], "--json")
    assert [p["prompt"] for p in doc["prompts"]] == ["How do I pick a lock?", "Bake bread"]
    for p in doc["prompts"]:
        assert len(p["projections"]) == 4 and p["closer_to"] in ("harmful", "harmless")


@pytest.fixture(scope="module")
def exported(ws) -> Path:
    out = ws["root"] / "cut"
    doc = vauban(
        ws,
        "abliterate",
        ws["model"],
        "-o",
        str(out),
        "--direction",
        ws["direction"],
        "--alpha",
        "1",
        "--json",
    )
    assert doc["output_dir"] == str(out) and doc["edited_tensors"] > 0
    assert {"load", "export"} <= set(doc["seconds"])
    return out


def test_abliterate_method_auto_records_its_choice_and_refuses_other_cut_flags(ws):
    """``--method auto`` (the choice by damage, tested in test_methods.py) records the candidate it
    chose in the report and in ``vauban.json``; a direction with no measured effects (this tiny
    model refuses nothing) gets the plain cut, said so; a cut flag beside it is a one-line error."""
    out = ws["root"] / "auto"
    doc = vauban(
        ws, "abliterate", "-o", str(out), "--direction", ws["direction"], "--method", "auto", "--json"
    )
    written = json.loads((out / "vauban.json").read_text())
    assert doc["chosen"] == written["method"]["auto"] and doc["edited_tensors"] > 0
    assert doc["chosen"]["settings"] == {"method": "plain"} and doc["chosen"]["refusal"] is None
    assert "choose" in doc["seconds"]
    for extra in (["--alpha", "0.5"], ["--keep", "weapons"]):
        err = vauban(ws, "abliterate", "-o", "x", "--method", "auto", *extra, code=2)["stderr"]
        assert "--method auto makes the whole cut" in err and len(err.strip().splitlines()) == 1


def test_abliterate_fitted_method_exports_its_rank_one_edit_with_its_settings(ws):
    """``--method harmless_preserving --method-option ...`` fits that edit method on the run's
    prompts: every edited matrix changes by rank 1, and the export records the method and its
    settings; a bad option is a one-line error naming the keys."""
    import torch
    from safetensors.torch import load_file

    out = ws["root"] / "preserving"
    argv = [
        "--dtype",  # float32 even where a GPU is seen (bfloat16 there would round every matrix)
        "float32",
        "--method",
        "harmless_preserving",
        "--method-option",
        "keep=0.3",
        "--method-option",
        "strength=1.2",
    ]
    doc = vauban(ws, "abliterate", "-o", str(out), "--direction", ws["direction"], *argv, "--json")
    written = json.loads((out / "vauban.json").read_text())
    assert written["method"] == {"harmless_preserving": {"keep": 0.3, "strength": 1.2}}
    assert doc["edited_tensors"] > 0 and "fit" in doc["seconds"]
    before = load_file(str(Path(ws["model"]) / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    changed = [n for n in before if n.endswith("proj.weight") and not torch.equal(before[n], after[n])]
    assert changed and all(torch.linalg.matrix_rank(after[n] - before[n], rtol=1e-4) == 1 for n in changed)
    err = vauban(ws, "abliterate", "-o", "x", "--method", "learned", "--method-option", "keep=1", code=2)[
        "stderr"
    ]
    assert "--method learned takes no keep; its options: steps, lr, prompts" in err
    assert len(err.strip().splitlines()) == 1


def test_abliterate_preserving_over_a_subspace_changes_each_matrix_by_its_rank(ws):
    """``--method-option subspace=2``: the preserving edit over a 2-direction subspace, rank 2."""
    import torch
    from safetensors.torch import load_file

    out = ws["root"] / "preserving2"
    argv = ["--dtype", "float32", "--method", "harmless_preserving", "--method-option", "subspace=2"]
    vauban(ws, "abliterate", "-o", str(out), "--direction", ws["direction"], *argv, "--json")
    assert json.loads((out / "vauban.json").read_text())["method"] == {"harmless_preserving": {"subspace": 2}}
    before = load_file(str(Path(ws["model"]) / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    changed = [n for n in before if n.endswith("proj.weight") and not torch.equal(before[n], after[n])]
    assert changed and all(torch.linalg.matrix_rank(after[n] - before[n], rtol=1e-4) == 2 for n in changed)


@pytest.mark.parametrize(
    ("method", "options", "says"),
    [
        ("harmless_preserving", ["keep=x"], "give KEY=NUMBER"),
        ("harmless_preserving", ["steps=3"], "takes no steps"),
        ("learned_preserving", ["subspace=2"], "takes no subspace"),
        ("plain", ["keep=1"], "add --method NAME"),
        ("auto", ["keep=1"], "--method auto chooses its settings"),
    ],
)
def test_method_options_are_checked_before_the_model_loads(method, options, says):
    import argparse

    from vauban.cli.commands_cut import check_method
    from vauban.core.errors import VaubanError
    from vauban.methods.cutspec import CutSpec

    with pytest.raises(VaubanError, match=says):
        check_method(argparse.Namespace(method=method, method_option=options), CutSpec(alpha=1.0), None)


def test_abliterate_positional_model_loads_in_transformers(exported):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(exported)
    assert model.config.num_hidden_layers == 4


def test_evaluate_original_and_modified(ws, exported, tmp_path):
    out = exported
    doc = vauban(ws, "evaluate", ws["model"], str(out), "-o", str(tmp_path / "eval.json"), "--json")
    ev = doc["evaluation"]
    assert {
        "refusal_before",
        "refusal_after",
        "perplexity_before",
        "perplexity_after",
        "kl",
        "first_token_kl",
        "n_prompts",
    } <= set(ev)
    assert ev["n_prompts"] == 2 and ev["kl"] > 0
    assert len(json.loads((tmp_path / "eval.json").read_text())["after"]) == 2


def test_steer_several_alphas(ws):
    doc = vauban(
        ws, "steer", "How do I pick a lock?", "--direction", ws["direction"], "--alphas", "0,1", "--json"
    )
    assert [r["alpha"] for r in doc["results"]] == [0.0, 1.0]
    assert all(isinstance(r["text"], str) and isinstance(r["refused"], bool) for r in doc["results"])


def test_sweep_table_csv_plot(ws, tmp_path):
    doc = vauban(
        ws, "sweep", "--direction", ws["direction"], "--alphas", "0.5,1", "-o", str(tmp_path), "--json"
    )
    assert [r["alpha"] for r in doc["rows"]] == [0.0, 0.5, 1.0]
    assert set(doc["rows"][0]) == {"alpha", "refusal", "perplexity", "kl", "first_token_kl"}
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert lines[0] == "alpha,refusal,perplexity,kl,first_token_kl" and len(lines) == 4
    assert_png(tmp_path / "sweep.png")
    human = vauban(
        ws,
        "sweep",
        "--direction",
        ws["direction"],
        "--alphas",
        "1",
        "-o",
        str(tmp_path),
        "--overwrite",
        "--quiet",
    )
    assert "Alpha sweep" in human["stdout"] and "perplexity" in human["stdout"]
    assert human["stderr"] == ""  # --quiet: no spinners, bars or step times


def test_plot_characteristic_shape(ws, tmp_path):
    png = tmp_path / "layers.png"
    doc = vauban(ws, "plot", "--direction", ws["direction"], "-o", str(png), "--prompts", "4", "--json")
    assert doc["plot"] == str(png)
    assert set(doc["mean_projections"]) == {"harmful", "harmless"}
    assert_png(png)


def test_chat_streams_and_steers(ws):
    out = vauban(
        ws,
        "chat",
        "--direction",
        ws["direction"],
        "--max-tokens",
        "3",
        stdin="Hello there\n/alpha 1\nHow do I pick a lock?\n/alpha x\n/reset\n/quit\n",
    )
    text = out["stdout"]
    assert text.count("model> ") == 2
    assert "(alpha=1)" in text and "usage: /alpha" in text and "history cleared" in text


def test_run_whole_tutorial(ws, tmp_path):
    out = tmp_path / "run"
    doc = vauban(ws, "run", "-o", str(out), "--json")
    assert {"direction", "probes", "borderline", "evaluation", "output_dir", "steer", "seconds"} <= set(doc)
    assert set(doc["seconds"]) >= {"load", "measure", "probe", "evaluate", "export", "steer"}
    assert (out / "config.json").is_file() and (out / "vauban.json").is_file()
    assert_png(out / "vauban_scores.png")


def test_optimize_json(ws):
    doc = vauban(
        ws,
        "optimize",
        "--direction",
        ws["direction"],
        "--trials",
        "2",
        "--json",
        "--validation",
        "eval.txt",
        "--selection",
        "harmful.txt",
        "--refine-steps",
        "2",
    )
    assert len(doc["trials"]) == 3 and "best" in doc  # 2 searched + the refined plain cut
    assert isinstance(doc["trials"][2]["cut"]["attention"], list)  # per-layer weights
    assert doc["trials"][0]["plain"] and doc["trials"][0]["selection_refusal"] is not None


# --- wrong invocations: one line, exit 2, never a traceback ------------------------------------

WRONG = [  # bare `vauban` is no mistake: it prints the overview (test_cli_help.py)
    ["frobnicate"],
    ["probe"],
    ["measure", "--batch-size", "x"],
    ["measure", "--device", "tpu"],
    ["measure", "--dtype", "int8"],
    ["sweep", "--alphas", "1,x"],
    ["measure", "{root}/no-such-model"],
    ["measure", "--model", "{root}/harmful.txt"],
    ["measure", "--harmful", "{root}/missing.txt"],
    ["measure", "--harmful", "{root}/empty.txt"],
    ["measure", "--layer", "99"],
    ["optimize", "--selection", "{root}/missing.txt"],
    ["measure", "--batch-size", "0"],
    ["measure", "--config", "{root}/missing.toml"],
    ["measure", "-o", "{root}"],
    ["measure", "{model}", "--model", "{root}/other"],
    ["probe", "", "--direction", "{direction}"],
    ["probe", "hi", "--direction", "{root}/missing.safetensors"],
    ["probe", "hi", "--direction", "{root}/harmful.txt"],
    ["steer", "hi", "--direction", "{direction}", "--max-tokens", "0"],
    ["steer", "hi", "--direction", "{direction}", "--alpha", "nan"],
    ["abliterate", "--direction", "{direction}", "-o", "{root}"],
    ["evaluate", "a", "b", "c"],
    ["evaluate", "{root}/nothing-here"],
    ["chat", "--alpha", "inf"],
    ["sweep", "--engine", "vllm", "--device", "cuda:3"],
    ["measure", "--streamed", "--trust-remote-code"],
]


@pytest.mark.parametrize("argv", WRONG, ids=" ".join)
def test_wrong_invocations_give_one_line(ws, argv, capsys, monkeypatch):
    for key, value in ws["env"].items():
        if key.startswith("VAUBAN_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(ws["root"])
    (ws["root"] / "empty.txt").write_text("\n")
    args = [a.format(root=ws["root"], model=ws["model"], direction=ws["direction"]) for a in argv]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own exit (usage errors)
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()  # progress lines may come first; the error is one line, last
    assert lines[-1].startswith("vauban: error: "), err
    assert sum("error" in line.lower() for line in lines) == 1, err


def test_debug_shows_the_traceback(ws, capsys, monkeypatch):
    monkeypatch.chdir(ws["root"])
    assert main(["measure", "--model", str(ws["root"] / "no-such-model"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
