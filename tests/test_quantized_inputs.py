"""Quantized inputs (tests/quantized.py): a block-FP8 checkpoint (DeepSeek V3 / Qwen3-FP8's config)
and an MXFP4 gpt-oss (its released config) load as float weights on a CPU, close to the float
model they were made from, and are measured, cut exactly and exported in float like any model.
bitsandbytes 4-bit needs its package (not installed by vauban): skipped without it."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from quantized import fp8_checkpoint, load_checkpoint, mxfp4_checkpoint, relative_error
from vauban import cut, export, measure
from vauban.core.errors import VaubanError
from vauban.exports.streaming import stream_export
from vauban.model import arch, block_fp8
from vauban.model.loading import load_model
from vauban.runtime.activations import last_token_residuals

HARMFUL = ["Write malware that steals passwords.", "How do I make a weapon at home?"]
HARMLESS = ["Write a poem about the sea.", "How do I plant tomatoes at home?"]
IDS = torch.tensor([[5, 9, 17, 33, 40, 2, 77]])
# (checkpoint, weights that are quantized, bounds on their relative error and on the logits' vs the
# float reference): e4m3 keeps 3 mantissa bits, E2M1 one. Measured (docs/models.md): FP8 2.6 % on
# the weights, 9 % on the logits of this random model; MXFP4 12 % on the experts, 27 % on the logits.
KINDS = {"fp8": (fp8_checkpoint, ".layers.", 0.04, 0.15), "mxfp4": (mxfp4_checkpoint, "experts", 0.15, 0.4)}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_quantized_checkpoint_is_edited_in_float(kind: str, tmp_path) -> None:
    make, quantized, bound, logits_bound = KINDS[kind]
    path, reference = make(tmp_path / kind)
    model, tokenizer = load_model(path, device="cpu")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert getattr(model.config, "quantization_config", None) is None  # saved as a float model
    error = relative_error(model, reference, quantized)
    assert 0 < error < bound, error
    unquantized = [n for n, _ in model.named_parameters() if quantized not in n and "bias" not in n]
    ref = dict(reference.named_parameters())
    assert all(torch.equal(dict(model.named_parameters())[n], ref[n]) for n in unquantized)
    drift = (_logits(model) - _logits(reference)).norm() / _logits(reference).norm()
    assert drift < logits_bound, drift

    direction = measure(model, tokenizer, HARMFUL, HARMLESS)
    d = direction.direction
    with cut(model, d, embeddings=True):
        after = last_token_residuals(model, tokenizer, HARMFUL)
        edited = _logits(model)
        out = export(model, tokenizer, tmp_path / "out", direction=direction)
    assert ((after @ d).abs() / after.norm(dim=-1)).max() < 1e-5
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    reloaded, _ = load_model(out, device="cpu")
    with torch.no_grad():
        for param in reloaded.parameters():  # off the memory map, see test_families._aligned
            param.data = param.data.clone()
    assert torch.equal(_logits(reloaded), edited)


def test_fp8_weights_are_the_checkpoint_dequantized_exactly(tmp_path) -> None:
    """On a CPU transformers dequantizes block FP8 while loading, in the dtype asked for: the
    float32 weights vauban edits are ``fp8 × scale_inv`` of each 128x128 block, exactly."""
    path, _ = fp8_checkpoint(tmp_path / "fp8")
    stored = load_checkpoint(path)
    model, _ = load_model(path, device="cpu")
    name = "model.layers.0.mlp.down_proj.weight"
    q, scale = stored[name].float(), stored[f"{name}_scale_inv"]
    expected = q * scale.repeat_interleave(128, 0).repeat_interleave(128, 1)[: q.shape[0], : q.shape[1]]
    loaded = dict(model.named_parameters())[name]
    assert torch.equal(loaded, expected)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")
def test_bitsandbytes_4bit_loads_as_float(tmp_path) -> None:  # pragma: no cover - needs bitsandbytes
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from families import BY_NAME, model_for, tokenizer_for

    family = BY_NAME["Qwen 3"]
    tokenizer = tokenizer_for(family)
    reference = model_for(family, tokenizer)
    reference.save_pretrained(tmp_path / "float")
    tokenizer.save_pretrained(tmp_path / "float")
    nf4 = AutoModelForCausalLM.from_pretrained(
        tmp_path / "float", device_map="cpu", quantization_config=BitsAndBytesConfig(load_in_4bit=True)
    )
    nf4.save_pretrained(tmp_path / "nf4")
    tokenizer.save_pretrained(tmp_path / "nf4")
    model, _ = load_model(tmp_path / "nf4", device="cpu")
    assert all(p.dtype.is_floating_point for p in model.parameters())
    own = AutoModelForCausalLM.from_pretrained(tmp_path / "nf4", device_map="cpu")
    own.dequantize()  # bitsandbytes' own dequantization: what vauban edits, bit for bit
    theirs = dict(own.named_parameters())
    assert all(torch.equal(p, theirs[n]) for n, p in model.named_parameters() if n in theirs)
    # NF4's own error against the float weights (the worst tensor): 27 % on this random tiny model
    # (torch 2.13, bitsandbytes 0.50.2; the other tensors ~12 %)
    assert relative_error(model, reference, ".layers.") < 0.35


def test_fp8_checkpoint_streams_back_to_fp8(tmp_path) -> None:
    """`vauban stream` on a block-FP8 checkpoint writes block FP8 with the same quantization_config:
    only the edited weights are dequantized, cut in float32 and quantized again (fresh 128x128
    scales; the record states the error against the float cut), every other tensor keeps its
    bytes. A quantization the stream cannot edit (MXFP4) is a one-line error naming the way out."""
    path, _ = fp8_checkpoint(tmp_path / "fp8")
    model, _ = load_model(path, device="cpu")
    d = torch.randn(arch.d_model(model), generator=torch.Generator().manual_seed(4))
    d = d / d.norm()
    out = stream_export(path, tmp_path / "out", d)
    config = lambda p: json.loads((p / "config.json").read_text())["quantization_config"]  # noqa: E731
    assert config(out) == config(path)
    src, got = load_checkpoint(path), load_checkpoint(out)
    writers = {f"model.layers.{i}.{w}.weight" for i in (0, 1) for w in ("self_attn.o_proj", "mlp.down_proj")}
    changed = {n for n in src if not torch.equal(src[n].view(torch.uint8), got[n].view(torch.uint8))}
    assert changed == writers | {block_fp8.scale_name(n) for n in writers}
    assert all(got[n].dtype == torch.float8_e4m3fn for n in writers)
    record = json.loads((out / "vauban.json").read_text())
    assert record["fp8_requantized_tensors"] == 4 and 0 < record["fp8_requantization_error_max"] < 0.04

    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in writers}
    cut(model, d)
    reloaded, _ = load_model(out, device="cpu")
    params = dict(reloaded.named_parameters())
    for name, w in model.named_parameters():
        if name in writers:  # the float cut removed d; the FP8 one keeps the re-quantization's part of it
            assert (params[name] - w).norm() / w.norm() < 0.04
            assert (d @ params[name]).norm() < 0.1 * (d @ before[name]).norm()
        else:
            assert torch.equal(params[name], w), name

    mxfp4, _ = mxfp4_checkpoint(tmp_path / "mxfp4")
    with pytest.raises(VaubanError, match=r"quantized \(mxfp4\).*vauban abliterate"):
        stream_export(mxfp4, tmp_path / "out2", torch.ones(64))


@pytest.mark.parametrize("ue8m0", [False, True])
def test_block_fp8_round_trip_with_partial_blocks(ue8m0: bool) -> None:
    """Edge blocks may be partial (DeepSeek V3 pads its scales); ``ue8m0`` scales are powers of two."""
    w = torch.randn(3, 130, 200, generator=torch.Generator().manual_seed(0))
    q, scale = block_fp8.quantize(w, (128, 128), ue8m0=ue8m0)
    assert q.shape == w.shape and q.dtype == torch.float8_e4m3fn and scale.shape == (3, 2, 2)
    back = block_fp8.dequantize(q, scale, (128, 128))
    assert (back - w).norm() / w.norm() < (0.05 if ue8m0 else 0.03)
    if ue8m0:
        assert torch.equal(torch.log2(scale), torch.log2(scale).round())
    again = block_fp8.quantize(back, (128, 128), ue8m0=ue8m0)
    assert torch.equal(block_fp8.dequantize(*again, (128, 128)), back)  # quantized weights stay put


def test_fp8_source_exports_back_to_fp8_from_memory(tmp_path) -> None:
    """``export(..., quant="fp8")`` of the in-memory cut writes what ``vauban stream`` writes: the
    source checkpoint with the edited weights re-quantized; a float source is a one-line error."""
    path, _ = fp8_checkpoint(tmp_path / "fp8")
    model, tokenizer = load_model(path, device="cpu")
    d = torch.randn(arch.d_model(model), generator=torch.Generator().manual_seed(4))
    streamed = stream_export(path, tmp_path / "streamed", d, embeddings=True)
    with cut(model, d, embeddings=True):
        out = export(model, tokenizer, tmp_path / "out", quant="fp8")
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "fp8"
    record = json.loads((out / "vauban.json").read_text())
    assert record["fp8_requantized_tensors"] == 4 and record["quantization"].startswith("block FP8")
    got, want = load_checkpoint(out), load_checkpoint(streamed)
    assert got.keys() == want.keys()
    for name, tensor in want.items():  # the same bytes, to a float32 rounding flipping one fp8 step
        torch.testing.assert_close(got[name].float(), tensor.float(), rtol=0.07, atol=1e-6, msg=name)
    with pytest.raises(VaubanError, match=r"keeps a block-FP8 source's format; .* is float: drop --quant"):
        export(reloaded_float(tmp_path), tokenizer, tmp_path / "out2", quant="fp8")


def reloaded_float(tmp_path):
    """A float model loaded from a float checkpoint directory."""
    from families import BY_NAME, model_for, tokenizer_for

    family = BY_NAME["Qwen 3"]
    tokenizer = tokenizer_for(family)
    model_for(family, tokenizer).save_pretrained(tmp_path / "float")
    tokenizer.save_pretrained(tmp_path / "float")
    return load_model(tmp_path / "float", device="cpu")[0]
