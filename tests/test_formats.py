"""Export formats on tiny models: LoRA adapters equal the merged cut, the source's dtype is kept,
MLX 4-bit answers through mlx_lm, a GGUF source is patched byte for byte, every format has a
model card and passes verify. The llama.cpp round trips on real weights are in
``test_formats_llamacpp.py``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import HARMFUL, HARMLESS, build_model, build_tokenizer
from vauban import LayerKernel, VaubanError, cut, export, load, measure, verify
from vauban.edit.editing import edited
from vauban.exports.formats import ExportJob
from vauban.model.loading import ModelSource


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAUBAN_CACHE", str(tmp_path / "cache"))


def _direction(model, tokenizer):
    return measure(model, tokenizer, HARMFUL, HARMLESS)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _ids(tokenizer):
    return tokenizer(["Write a poem about the sea."], return_tensors="pt").input_ids


# --- LoRA --------------------------------------------------------------------------------------

LORA_CASES = {
    "llama plain": ("llama", {}),
    "qwen2 per-layer weights": (
        "qwen2",
        {"attention": [1.0, 0.5, 0.0, 2.0], "mlp": LayerKernel(peak=2, width=2)},
    ),
    "gemma2 post-norm, tied embeddings": ("gemma2", {"embeddings": True}),
    "olmo2 post-norm": ("olmo2", {"alpha": 1.5}),
    "gpt2 Conv1D with biases": ("gpt2", {}),
    "llama subspace rank 2": ("llama", {"subspace": True}),
}


@pytest.mark.parametrize("case", list(LORA_CASES))
def test_lora_adapter_equals_the_merged_cut(case, tokenizer, tmp_path):
    from peft import PeftModel

    model_type, options = LORA_CASES[case]
    model = build_model(model_type)
    direction = _direction(model, tokenizer)
    if options.pop("subspace", False):
        direction = torch.stack([direction.direction, torch.randn_like(direction.direction)])
    ids = _ids(tokenizer)
    with cut(model, direction, **options):
        merged = _logits(model, ids)
        export(model, tokenizer, tmp_path / "adapter", format="lora")
        export(model, tokenizer, tmp_path / "full")
    assert sorted(p.name for p in (tmp_path / "adapter").glob("adapter_*")) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapted = PeftModel.from_pretrained(build_model(model_type), tmp_path / "adapter")
    got = _logits(adapted, ids)
    assert (got - merged).abs().max() < 2e-5 * merged.abs().max()
    assert (_logits(build_model(model_type), ids) - merged).abs().max() > 1e-2  # the cut did something
    record = json.loads((tmp_path / "adapter" / "vauban.json").read_text())
    assert record["format"] == "lora" and record["quantization"] is None
    verify(tmp_path / "adapter")
    adapter = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert adapter < (tmp_path / "full" / "model.safetensors").stat().st_size


def test_lora_refuses_norm_preserving_and_stacked_cuts(tokenizer, tmp_path):
    model = build_model("llama")
    direction = _direction(model, tokenizer)
    with cut(model, direction, norm_preserving=True), pytest.raises(VaubanError, match="not a low-rank"):
        export(model, tokenizer, tmp_path / "a", format="lora")
    with cut(model, direction), cut(model, direction), pytest.raises(VaubanError, match="exactly one cut"):
        export(model, tokenizer, tmp_path / "b", format="lora")
    with pytest.raises(VaubanError, match="not quantized"):
        export(model, tokenizer, tmp_path / "c", format="lora", quant="q8_0")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- dtype, sharding, model card ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_source_exports_in_its_dtype(dtype, tmp_path):
    source = tmp_path / "src"
    build_model("qwen2", dtype=dtype).save_pretrained(source)
    build_tokenizer().save_pretrained(source)
    (source / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    model, tokenizer = load(source, device="cpu")
    assert next(model.parameters()).dtype == torch.float32  # vauban computes in float32 on a CPU
    with cut(model, _direction(model, tokenizer)):
        expected = {k: v.to(dtype) for k, v in model.state_dict().items()}
        export(model, tokenizer, tmp_path / "out")
        export(model, tokenizer, tmp_path / "f32", dtype="float32")
    from safetensors.torch import load_file

    written = load_file(tmp_path / "out" / "model.safetensors")
    assert {v.dtype for v in written.values()} == {dtype}
    assert all(torch.equal(written[k], expected[k]) for k in written)  # cast once, from float32
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["dtype"] == str(dtype).removeprefix("torch.")
    assert json.loads((tmp_path / "out" / "vauban.json").read_text())["dtype"] == config["dtype"]
    assert {v.dtype for v in load_file(tmp_path / "f32" / "model.safetensors").values()} == {torch.float32}
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\n") and 'license: "apache-2.0"' in card
    assert "- abliterated\n- vauban\n" in card and "| alpha | 1.0 |" in card


def test_large_export_is_sharded_like_transformers(tokenizer, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    model = build_model("llama")
    original = PreTrainedModel.save_pretrained

    def small_shards(self, *args, **kwargs):  # what a model above transformers' 50 GB default gets
        return original(self, *args, **{**kwargs, "max_shard_size": "100KB"})

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", small_shards)
    with cut(model, _direction(model, tokenizer)):
        export(model, tokenizer, tmp_path / "out", dtype="bfloat16")
    shards = sorted(p.name for p in (tmp_path / "out").glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert verify(tmp_path / "out").tensors > 0


def test_model_card_carries_the_evaluation_table(tokenizer, tmp_path):
    model = build_model("llama")
    direction = _direction(model, tokenizer)
    evaluation = {"refusal_before": 0.9, "refusal_after": 0.05, "kl": 0.12, "n_prompts": 20}
    with cut(model, direction, alpha=1.2):
        export(model, tokenizer, tmp_path / "out", direction=direction, record={"evaluation": evaluation})
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Evaluation" in card and "| refusal | 0.9 | 0.05 |" in card and "| kl | | 0.12 |" in card
    assert f"layer {direction.layer_index}" in card and "| alpha | 1.2 |" in card
    assert "README.md" in json.loads((tmp_path / "out" / "vauban.json").read_text())["files"]


def test_unknown_format_or_quant_fails_before_writing(tokenizer, tmp_path):
    model = build_model("llama")
    with pytest.raises(VaubanError, match="unknown export format"):
        export(model, tokenizer, tmp_path / "a", format="onnx")
    with pytest.raises(VaubanError, match="not quantized"):
        export(model, tokenizer, tmp_path / "b", quant="q4_k_m")
    with pytest.raises(VaubanError, match="bits"):
        export(model, tokenizer, tmp_path / "c", format="mlx", quant="7")
    with pytest.raises(VaubanError, match="not a GGUF type"):
        export(model, tokenizer, tmp_path / "d", format="gguf", quant="q9_z")
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"] or not list(tmp_path.glob("[abcd]"))


# --- MLX ---------------------------------------------------------------------------------------


def test_mlx_4bit_export_answers_through_mlx_lm(tokenizer, tmp_path):
    mlx_lm = pytest.importorskip("mlx_lm")
    model = build_model("llama")
    with cut(model, _direction(model, tokenizer)):
        export(model, tokenizer, tmp_path / "mlx", format="mlx", quant="4")
    config = json.loads((tmp_path / "mlx" / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    record = json.loads((tmp_path / "mlx" / "vauban.json").read_text())
    assert record["format"] == "mlx" and record["quantization"].startswith("4-bit")
    verify(tmp_path / "mlx")
    loaded, mlx_tokenizer = mlx_lm.load(str(tmp_path / "mlx"))
    text = mlx_lm.generate(loaded, mlx_tokenizer, "Hello", max_tokens=6)
    assert isinstance(text, str) and text
    assert "library_name: mlx" in (tmp_path / "mlx" / "README.md").read_text()


# --- GGUF: patching a GGUF source --------------------------------------------------------------


def _tiny_gguf(model, path: Path, types: dict[str, str]) -> None:
    """A GGUF holding ``model``'s tensors under llama.cpp's names, edited writers quantized."""
    import gguf

    arch = gguf.MODEL_ARCH.LLAMA
    names = gguf.get_tensor_name_map(arch, model.config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(model.config.num_hidden_layers)
    writer.add_string("general.license", "mit")
    for name, value in model.state_dict().items():
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        kind = next((t for key, t in types.items() if key in name), "F32")
        qtype = gguf.GGMLQuantizationType[kind]
        data = gguf.quants.quantize(value.float().numpy(), qtype)
        writer.add_tensor(gname, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("quant", [None, "q8_0"])
def test_gguf_source_is_patched_byte_for_byte(tokenizer, tmp_path, quant):
    import gguf

    from vauban.exports.formats import gguf as gguf_format

    model = build_model("llama")
    source = tmp_path / "tiny.gguf"
    _tiny_gguf(model, source, {"o_proj": "Q8_0", "down_proj": "Q4_0", "q_proj": "Q5_0"})
    reader = gguf.GGUFReader(source)
    # the in-memory model is what loading the GGUF gives: its dequantized weights
    with torch.no_grad():
        for name, param in model.named_parameters():
            gname = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 4).get_name(name, (".weight", ".bias"))
            tensor = next(t for t in reader.tensors if t.name == gname)
            param.copy_(torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy()))
    direction = _direction(model, tokenizer)
    folder = tmp_path / "out"
    folder.mkdir()
    with cut(model, direction, mlp=[1, 0.5, 1, 0]) as applied:
        job = ExportJob(model, tokenizer, ModelSource(str(source), "gguf", str(source)), quant, None, "tiny")
        info = gguf_format.write(job, folder)
        edits = {e.name: e for e in applied.tensor_edits()}
        merged = {k: v.clone() for k, v in model.state_dict().items()}
    out = gguf.GGUFReader(folder / info["gguf_file"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 4)
    changed = 0
    for before, after in zip(reader.tensors, out.tensors, strict=True):
        hf = next(k for k in merged if names.get_name(k, (".weight", ".bias")) == before.name)
        if hf not in edits:  # untouched: same type, same bytes
            assert before.tensor_type == after.tensor_type
            assert np.array_equal(
                np.asarray(before.data).view(np.uint8), np.asarray(after.data).view(np.uint8)
            )
            continue
        changed += 1
        expected_type = before.tensor_type if quant is None else gguf.GGMLQuantizationType.Q8_0
        assert after.tensor_type == expected_type
        got = torch.from_numpy(gguf.quants.dequantize(after.data, after.tensor_type).copy())
        e = edits[hf]
        redone = edited(
            torch.from_numpy(gguf.quants.dequantize(before.data, before.tensor_type).copy()),
            e.axis,
            e.basis,
            e.alpha,
        )
        levels = 7 if after.tensor_type == gguf.GGMLQuantizationType.Q4_0 else 127
        step = (redone.abs().max() / levels).item()
        assert (got - redone).abs().max() <= step  # one quantization step of the redone cut
        assert (redone - merged[hf]).abs().max() < 1e-5  # the same cut as the in-memory model's
    assert changed == len(edits) == 7  # 4 attention outputs + 3 MLP downs (layer 3's weight is 0)
    with source.open("rb") as a, (folder / info["gguf_file"]).open("rb") as b:
        start = min(t.field.offset for t in reader.tensors)
        assert a.read(start) == b.read(start)  # header and metadata, byte for byte
    if quant is None:
        assert (folder / info["gguf_file"]).stat().st_size == source.stat().st_size
    assert info["source_bytes"] == source.stat().st_size
    assert gguf_format.check(folder) == len(reader.tensors)


def test_gguf_check_finds_a_truncated_file(tmp_path):
    from vauban.exports.formats import gguf as gguf_format

    model = build_model("llama")
    _tiny_gguf(model, tmp_path / "m.gguf", {})
    data = (tmp_path / "m.gguf").read_bytes()
    (tmp_path / "m.gguf").write_bytes(data[: len(data) - 1000])
    with pytest.raises(VaubanError, match=r"truncated|not a complete GGUF"):
        gguf_format.check(tmp_path)


def test_a_killed_converter_is_named_in_one_line():
    """A converter stopped by a signal prints no error of its own (its last line is a progress
    bar); the error names the signal and, for SIGKILL, memory."""
    import subprocess
    import sys

    from vauban.exports.formats.llamacpp import converter_failure

    script = (
        "import os, signal, sys; print('Writing:  71%|###  | 479M/670M', file=sys.stderr, flush=True);"
        " os.kill(os.getpid(), signal.SIGKILL)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    message = converter_failure(done.returncode, done.stderr)
    assert message.startswith("was stopped by SIGKILL") and "memory" in message and "\n" not in message
    bar_then_error = "Writing: 10%\rWriting: 20%\rValueError: unknown tensor type\n"
    expected = "failed on this model (exit 1): ValueError: unknown tensor type"
    assert converter_failure(1, bar_then_error) == expected
    assert converter_failure(2, "") == "failed on this model (exit 2): no output"


def test_a_crashed_llamacpp_child_is_one_line_error(monkeypatch):
    """llama.cpp runs in a child process: its result and its errors come back; a child stopped
    by a signal (a crash of the native code; here it kills itself) is one line naming llama.cpp,
    the signal and the portable rebuild, and this process lives on."""
    import operator
    import os

    from vauban.core.errors import check_int
    from vauban.exports.formats import llamacpp

    with llamacpp.child("adding") as child:
        assert child.call(operator.add, 2, 3) == 5
        assert child.call(operator.mul, 2, 3) == 6  # the same child, still there
        with pytest.raises(VaubanError, match="n must be an integer"):
            child.call(check_int, "n", -1, 0)
    monkeypatch.setenv(llamacpp.KILL_ENV, "SIGSEGV")
    with pytest.raises(VaubanError) as crash:
        llamacpp.in_child("answering with m.gguf", os.getpid)
    message = str(crash.value)
    assert message.startswith("llama.cpp (answering with m.gguf) was stopped by SIGSEGV")
    assert message.endswith(llamacpp.PORTABLE) and "\n" not in message
    monkeypatch.setenv(llamacpp.KILL_ENV, "SIGKILL")
    with pytest.raises(VaubanError, match=r"SIGKILL .*out of memory"):
        llamacpp.in_child("quantizing", os.getpid)


# --- CLI, atomicity, never overwriting ---------------------------------------------------------


@pytest.fixture
def tiny_dir(tmp_path, tokenizer):
    path = tmp_path / "tiny"
    build_model("qwen2", dtype=torch.bfloat16).save_pretrained(path)
    tokenizer.save_pretrained(path)
    model, tok = load(path, device="cpu")
    direction = _direction(model, tok)
    direction.save(tmp_path / "d.safetensors")
    return path


@pytest.mark.parametrize(
    ("fmt", "extra", "expect"),
    [
        ("lora", [], "adapter_model.safetensors"),
        ("mlx", ["--quant", "4"], "model.safetensors"),
        ("safetensors", ["--dtype", "float32"], "model.safetensors"),
    ],
)
def test_cli_abliterate_format_flags(tiny_dir, tmp_path, capsys, fmt, extra, expect):
    from vauban.cli import main

    if fmt == "mlx":
        pytest.importorskip("mlx_lm")
    out = tmp_path / f"out-{fmt}"
    code = main(
        [
            "abliterate",
            str(tiny_dir),
            "-o",
            str(out),
            "--direction",
            str(tmp_path / "d.safetensors"),
            "--format",
            fmt,
            *extra,
            "--json",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "vauban.json").read_text())
    assert record["format"] == fmt and (out / expect).is_file() and (out / "README.md").is_file()
    if fmt == "safetensors":
        assert record["dtype"] == "float32"  # --dtype overrides the source's bfloat16
    verify(out)


def test_cli_rejects_a_bad_quant_before_loading(tiny_dir, tmp_path, capsys):
    from vauban.cli import main

    code = main(
        ["abliterate", str(tiny_dir), "-o", str(tmp_path / "o"), "--format", "gguf", "--quant", "q9_z"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a GGUF type" in err[0]


def test_cli_a_crashed_llamacpp_is_exit_2_in_one_line(tiny_dir, tmp_path, capsys, monkeypatch):
    """``--quant q4_k_m`` from a transformers directory: converter (a stand-in writing a file),
    then llama.cpp's quantizer in a child, which crashes (SIGSEGV, sent by itself): exit code 2,
    one line naming llama.cpp, the signal and the fix, and nothing written."""
    pytest.importorskip("llama_cpp")
    from vauban.cli import main
    from vauban.core.atomic import TEMP_TAG
    from vauban.exports.formats import llamacpp

    converter = tmp_path / "llama.cpp"
    converter.mkdir()
    (converter / "convert_hf_to_gguf.py").write_text(
        "import sys\nopen(sys.argv[sys.argv.index('--outfile') + 1], 'wb').write(b'GGUF')\n"
    )
    monkeypatch.setenv("VAUBAN_LLAMA_CPP", str(converter))
    monkeypatch.setenv(llamacpp.KILL_ENV, "SIGSEGV")
    out = tmp_path / "out"
    code = main(
        [
            "abliterate",
            str(tiny_dir),
            "-o",
            str(out),
            "--direction",
            str(tmp_path / "d.safetensors"),
            "--format",
            "gguf",
            "--quant",
            "q4_k_m",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("vauban: error: llama.cpp (quantizing ") and err[0].endswith(llamacpp.PORTABLE)
    assert "to q4_k_m) was stopped by SIGSEGV" in err[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if TEMP_TAG in p.name]


def _export_child(fmt, gguf_source, direction_file, out, ready):
    """A fresh (spawned) process exporting the tiny llama in ``fmt``, pausing once the weights
    are written (the model card is next) so the parent can SIGKILL it there."""
    import time

    import vauban.exports.exporting as exporting
    from vauban import DirectionResult
    from vauban.model.loading import remember_source

    model, tokenizer = build_model("llama"), build_tokenizer()
    if gguf_source:
        remember_source(model, ModelSource(gguf_source, "gguf", gguf_source))
    original = exporting.write_card

    def pause(*args, **kwargs):
        original(*args, **kwargs)
        ready.set()
        time.sleep(120)

    exporting.write_card = pause
    with cut(model, DirectionResult.load(direction_file)):
        export(model, tokenizer, out, format=fmt, overwrite=True)


@pytest.mark.parametrize("fmt", ["lora", "mlx", "gguf"])
def test_every_format_is_atomic_and_never_overwrites(fmt, tokenizer, tmp_path):
    """Never overwrite without asking; a SIGKILL mid-export leaves the old export complete."""
    import multiprocessing
    import os
    import signal

    from vauban.core.atomic import TEMP_TAG
    from vauban.model.loading import remember_source

    if fmt == "mlx":
        pytest.importorskip("mlx_lm")
    model = build_model("llama")
    source = None
    if fmt == "gguf":  # a GGUF source, so the export patches it with gguf-py or llama.cpp alone
        source = str(tmp_path / "src.gguf")
        _tiny_gguf(model, Path(source), {"o_proj": "Q8_0", "down_proj": "Q8_0"})
        remember_source(model, ModelSource(source, "gguf", source))
    direction = _direction(model, tokenizer)
    direction.save(tmp_path / "d.safetensors")
    out = tmp_path / "out"
    with cut(model, direction):
        export(model, tokenizer, out, format=fmt)
        before = json.loads((out / "vauban.json").read_text())["files"]
        with pytest.raises(VaubanError, match="not empty"):
            export(model, tokenizer, out, format=fmt)
    ctx = multiprocessing.get_context("spawn")  # MLX and llama.cpp threads do not survive a fork
    ready = ctx.Event()
    args = (fmt, source, str(tmp_path / "d.safetensors"), str(out), ready)
    child = ctx.Process(target=_export_child, args=args)
    child.start()
    assert ready.wait(240), "the export never reached its model card"
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert [p for p in tmp_path.iterdir() if TEMP_TAG in p.name]  # the killed writer's leftover
    verify(out)  # the old export, complete and unchanged
    assert json.loads((out / "vauban.json").read_text())["files"] == before
    with cut(model, direction):
        export(model, tokenizer, out, format=fmt, overwrite=True)  # sweeps the leftover
    assert not [p for p in tmp_path.iterdir() if TEMP_TAG in p.name]
    assert verify(out).files == len(before)
