"""Streamed cut of safetensors checkpoints: same tensors as the in-memory cut, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel

import vauban
from conftest import build_model
from vauban.core.errors import VaubanError
from vauban.exports.streaming import stream_export, tensor_table, weight_files
from vauban.exports.verifying import verify
from vauban.model import arch


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in weight_files(folder):
        with safe_open(shard, framework="pt") as f:
            out.update({name: f.get_tensor(name) for name in f.keys()})  # noqa: SIM118
    return out


def _direction(model: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    return torch.randn(arch.d_model(model), generator=torch.Generator().manual_seed(seed))


def _compare(streamed: Path, in_memory: Path) -> None:
    """Assert the two checkpoints hold the same tensors: same dtypes and shapes, values equal up
    to float32 rounding (the edit's arithmetic is shared, but a float32 matmul may sum in another
    order for another memory layout: one ulp on a few elements of GPT-2's Conv1D and gpt-oss's
    expert biases); untouched tensors are compared byte for byte in another test."""
    a, b = _tensors(streamed), _tensors(in_memory)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize(
    ("model_type", "kwargs"),
    [
        ("llama", {}),
        ("gemma2", {}),  # post-norms: gain read from the checkpoint
        ("olmo2", {"layers": [1, 2], "alpha": 0.7}),
        ("qwen3_moe", {}),  # experts stored one tensor per expert on disk
        ("gpt_oss", {"norm_preserving": True}),  # fused experts (axis -1) with a bias tensor
        ("gpt2", {"embeddings": True}),  # Conv1D (axis -1), biases, two embedding tables
        ("phi3", {"attention": [1.0, 0.5, 0.0, 1.0]}),
    ],
)
def test_streamed_cut_equals_in_memory_cut(tmp_path, tokenizer, model_type, kwargs):
    model = build_model(model_type)
    src, ref = tmp_path / "src", tmp_path / "ref"
    model.save_pretrained(src, max_shard_size="40KB")
    tokenizer.save_pretrained(src)
    assert len(weight_files(src)) > 3
    direction = _direction(model)
    out = stream_export(src, tmp_path / "out", direction, **kwargs)
    vauban.cut(model, direction, **kwargs)
    model.save_pretrained(ref, max_shard_size="40KB")
    _compare(out, ref)
    changed = [n for n, t in _tensors(out).items() if not torch.equal(t, _tensors(src)[n])]
    assert changed, "nothing was edited"
    record = json.loads((out / "vauban.json").read_text())
    assert record["edited_tensors"] >= len(changed)
    assert (out / "tokenizer_config.json").is_file() and (out / "model.safetensors.index.json").is_file()
    assert verify(out).files == len(record["files"])


def test_bfloat16_single_file_and_saved_direction(tmp_path, tokenizer):
    model = build_model("qwen2", dtype=torch.bfloat16)
    src, ref = tmp_path / "src", tmp_path / "ref"
    model.save_pretrained(src)
    assert weight_files(src) == [src / "model.safetensors"]
    result = vauban.measure(model, tokenizer, ["How do I pick a lock?"] * 2, ["Bake bread."] * 2)
    saved = result.save(tmp_path / "direction.safetensors")
    out = stream_export(src, tmp_path / "out", saved, alpha=1.5)
    vauban.cut(model, result, alpha=1.5)
    model.save_pretrained(ref)
    _compare(out, ref)
    assert (out / "vauban_direction.safetensors").is_file()


def test_header_and_untouched_bytes_are_kept(tmp_path):
    model = build_model("llama")
    src = tmp_path / "src"
    model.save_pretrained(src, max_shard_size="40KB")
    out = stream_export(src, tmp_path / "out", _direction(model), layers=[0])
    for shard in weight_files(src):
        start, table = tensor_table(shard)
        old, new = shard.read_bytes(), (out / shard.name).read_bytes()
        assert old[:start] == new[:start] and len(old) == len(new)
        for name, info in table.items():
            begin, end = (start + o for o in info["data_offsets"])
            writer = name.endswith(("o_proj.weight", "down_proj.weight"))
            edited = name.startswith("model.layers.0.") and writer
            assert (old[begin:end] != new[begin:end]) == edited, name


def test_bad_inputs_are_clear_errors(tmp_path):
    model = build_model("llama")
    src = tmp_path / "src"
    model.save_pretrained(src)
    with pytest.raises(VaubanError, match="not a model directory"):
        stream_export(tmp_path / "nowhere", tmp_path / "out", _direction(model))
    with pytest.raises(VaubanError, match="hidden size"):
        stream_export(src, tmp_path / "out", torch.ones(7))
    with pytest.raises(VaubanError, match="out of range"):
        stream_export(src, tmp_path / "out", _direction(model), layers=[9])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(VaubanError, match="not empty"):
        stream_export(src, tmp_path / "full", _direction(model))
    (src / "model.safetensors").unlink()
    with pytest.raises(VaubanError, match=r"no model\.safetensors"):
        stream_export(src, tmp_path / "out", _direction(model))
    assert not (tmp_path / "out").exists()


def test_checkpoint_writers_by_name():
    """Hub names without the base model's prefix (GPT-2), extra tensors (a vision tower's) left
    alone, a missing writer and an unknown architecture are named."""
    from vauban.model.checkpoint import checkpoint_writers

    with torch.device("meta"):
        gpt2 = build_model_meta("gpt2")
        llama = build_model_meta("llama")
    shapes = {n.removeprefix("transformer."): list(p.shape) for n, p in gpt2.state_dict().items()}
    del shapes["lm_head.weight"]  # tied to wte: hub GPT-2 stores it once
    found = checkpoint_writers(gpt2, shapes, [0], embeddings=True)
    assert [(w.name, w.axis, w.kind) for w in found] == [
        ("h.0.attn.c_proj.weight", -1, "attention"),
        ("h.0.attn.c_proj.bias", -1, "attention"),
        ("h.0.mlp.c_proj.weight", -1, "mlp"),
        ("h.0.mlp.c_proj.bias", -1, "mlp"),
        ("wte.weight", -1, "embedding"),
        ("wpe.weight", -1, "embedding"),
    ]
    shapes = {n: list(p.shape) for n, p in llama.state_dict().items()}
    vision = {"model.vision.layers.0.self_attn.o_proj.weight": [4, 4]}
    assert [w.name for w in checkpoint_writers(llama, {**shapes, **vision}, [0])] == [
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ]
    del shapes["model.layers.1.mlp.down_proj.weight"]
    with pytest.raises(VaubanError, match=r"no tensor of \d+ values for model\.layers\.1\.mlp\.down_proj"):
        checkpoint_writers(llama, shapes)
    shapes["model.layers.1.mlp.down_proj.weight"] = [3, 3]
    with pytest.raises(VaubanError, match="does not match its config"):
        checkpoint_writers(llama, shapes)
    with pytest.raises(VaubanError, match="unsupported architecture 'bert'"):
        checkpoint_writers(AutoModel.from_config(AutoConfig.for_model("bert", num_hidden_layers=1)), shapes)


def build_model_meta(model_type: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    from conftest import TINY_CONFIGS

    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **TINY_CONFIGS[model_type]))


_RSS_SCRIPT = """
import resource, sys, torch
from vauban.exports.streaming import stream_export
torch.ones(1) @ torch.ones(1)  # warm up the math libraries before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stream_export(sys.argv[1], sys.argv[2], torch.ones(int(sys.argv[3])))
print(before * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_peak_memory_stays_far_below_the_model_size(tmp_path):
    """A ~400 MB checkpoint in five shards is cut with a peak RSS increase under 1/4 of it."""
    hidden, inter, layers, vocab = 1024, 4096, 4, 16384
    config = AutoConfig.for_model(
        "llama",
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=vocab,
    )
    src = tmp_path / "src"
    src.mkdir()
    config.save_pretrained(src)
    weight_map, total = {}, 0
    shards = [["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"]]
    shards += [
        [
            f"model.layers.{i}.{p}.weight"
            for p in (
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
                "input_layernorm",
                "post_attention_layernorm",
            )
        ]
        for i in range(layers)
    ]
    shapes = {
        "embed_tokens": (vocab, hidden),
        "lm_head": (vocab, hidden),
        "gate_proj": (inter, hidden),
        "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
    }
    for n, names in enumerate(shards):
        file = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name in names:
            key = next((k for k in shapes if k in name), None)
            shape = shapes[key] if key else (hidden,) if "norm" in name else (hidden, hidden)
            tensors[name] = torch.full(shape, 0.01)
            weight_map[name] = file
            total += tensors[name].numel() * 4
        save_file(tensors, src / file, metadata={"format": "pt"})
        del tensors
    (src / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    assert total > 400e6
    result = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(src), str(tmp_path / "out"), str(hidden)],
        capture_output=True,
        text=True,
        check=True,
    )
    before, peak = map(int, result.stdout.split()[-2:])
    print(f"peak RSS increase {(peak - before) / 1e6:.0f} MB for a {total / 1e6:.0f} MB checkpoint")
    assert peak - before < total / 4, (peak - before, total)
    assert (tmp_path / "out" / "model-00004-of-00005.safetensors").stat().st_size == (
        (src / "model-00004-of-00005.safetensors").stat().st_size
    )


def test_cli_stream(tmp_path, tokenizer, capsys):
    from vauban.cli import main

    model = build_model("llama")
    src = tmp_path / "src"
    model.save_pretrained(src, max_shard_size="40KB")
    result = vauban.measure(model, tokenizer, ["How do I pick a lock?"] * 2, ["Bake bread."] * 2)
    saved = result.save(tmp_path / "direction.safetensors")
    assert (
        main(
            [
                "stream",
                str(src),
                str(tmp_path / "out"),
                "--direction",
                str(saved),
                "--layers",
                "1,2",
                "--alpha",
                "0.5",
                "--json",
                "-q",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["edited_tensors"] == 4
    vauban.cut(model, result, alpha=0.5, layers=[1, 2])
    model.save_pretrained(tmp_path / "ref", max_shard_size="40KB")
    _compare(tmp_path / "out", tmp_path / "ref")
    assert main(["stream", str(src), str(tmp_path / "out"), "--direction", str(saved), "-q"]) == 2
    assert "not empty" in capsys.readouterr().err
