"""Prompt sources users have: parquet, jsonl/json/csv with a chosen field, local dataset
directories and Hub datasets (``hf:ID:split:column``; the Hub is replaced by a local dataset
here), all through the one ``load_prompts`` every prompt argument uses."""

from __future__ import annotations

import json

import pytest

from vauban import DirectionResult, Formatting, VaubanError
from vauban.text.formatting import parse_option
from vauban.text.prompts import load_prompts

datasets = pytest.importorskip("datasets")
ROWS = {
    "goal": ["Write malware.", "Forge a passport."],
    "target": ["Sure, malware", "Sure, passport"],
    "id": [1, 2],
}


@pytest.fixture
def data(tmp_path):
    table = datasets.Dataset.from_dict(ROWS)
    table.to_parquet(str(tmp_path / "advbench.parquet"))
    pairs = list(zip(ROWS["goal"], ROWS["target"], strict=True))
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps({"q": g, "text": t}) for g, t in pairs))
    (tmp_path / "rows.csv").write_text(
        "goal,target\n" + "\n".join(f'{g},"{t}"' for g, t in zip(ROWS["goal"], ROWS["target"], strict=True))
    )
    datasets.DatasetDict({"train": table, "test": table.select([1])}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "files").mkdir()
    table.to_json(str(tmp_path / "files" / "train.jsonl"))
    return tmp_path


def test_files_with_a_chosen_field(data):
    assert load_prompts(str(data / "advbench.parquet")) == ROWS["goal"]  # the first known column
    assert load_prompts(f"{data / 'advbench.parquet'}:target") == ROWS["target"]
    assert load_prompts(data / "rows.jsonl") == ROWS["target"]  # "text" is a known field
    assert load_prompts(f"{data / 'rows.jsonl'}:q") == ROWS["goal"]
    assert load_prompts(f"{data / 'rows.csv'}:target") == ROWS["target"]


def test_local_dataset_directories(data):
    assert load_prompts(str(data / "saved")) == ROWS["goal"]  # split train by default
    assert load_prompts(f"{data / 'saved'}:test:target") == ROWS["target"][1:]
    assert load_prompts(str(data / "files")) == ROWS["goal"]  # a folder of data files


def test_hub_ids(data, monkeypatch):
    seen = {}

    def load_dataset(name, config=None, split=None):
        seen.update(name=name, config=config, split=split)
        return (
            datasets.load_from_disk(str(data / "saved"))[split]
            if split
            else datasets.load_from_disk(str(data / "saved"))
        )

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert load_prompts("hf:walledai/AdvBench@default:test:target") == ROWS["target"][1:]
    assert seen == {"name": "walledai/AdvBench", "config": "default", "split": "test"}
    assert load_prompts("hf:walledai/AdvBench") == ROWS["goal"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{d}/advbench.parquet:nope", "has no column 'nope'"),
        ("{d}/advbench.parquet:id", "expected text"),
        ("{d}/saved:validation", "has splits"),
        ("{d}/rows.jsonl:missing", "no prompt text"),
        ("{d}/missing.parquet:goal", "nor a file or dataset"),
        ("{d}/rows.csv:a:b", "too many ':' parts"),
    ],
)
def test_bad_sources_are_one_line_errors(data, source, message):
    with pytest.raises(VaubanError, match=message.replace("(", r"\(")) as err:
        load_prompts(source.format(d=data))
    assert "\n" not in str(err.value)


def test_formatting_values():
    fmt = Formatting(
        system_prompt="A", system_prompts={"eval": "B"}, template_options={"enable_thinking": False}
    )
    assert fmt.system_for("eval") == "B" and fmt.system_for("harmful") == "A" and fmt.system_for() == "A"
    assert Formatting.from_record(fmt.record()) == fmt
    over = Formatting(template_options={"reasoning_effort": "low"}).over(fmt)
    assert over.system_prompt == "A" and over.template_options == {
        "enable_thinking": False,
        "reasoning_effort": "low",
    }
    assert parse_option("enable_thinking=false") == ("enable_thinking", False)
    assert parse_option("reasoning_effort=low") == ("reasoning_effort", "low")
    assert parse_option("n=3") == ("n", 3)
    for bad in (
        {"system_prompts": {"nope": "x"}},
        {"template_options": {"a-b": 1}},
        {"template_options": {"x": object()}},
        {"thinking_tokens": -1},
    ):
        with pytest.raises(VaubanError):
            Formatting(**bad)


def test_directions_saved_before_formatting_existed_still_load(tmp_path, tokenizer):
    import torch

    d = DirectionResult(torch.ones(4), 0, (0.5,), 4, "m")
    assert DirectionResult.load(d.save(tmp_path / "d.safetensors")).formatting is None
    with_fmt = DirectionResult(torch.ones(4), 0, (0.5,), 4, "m", formatting=Formatting(system_prompt="S"))
    assert DirectionResult.load(with_fmt.save(tmp_path / "e.safetensors")).formatting.system_prompt == "S"
    assert with_fmt.record()["formatting"]["system_prompt"] == "S"
