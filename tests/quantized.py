"""Tiny quantized checkpoints with the real quantization configs of released models, written from a
tiny float model of tests/families.py: block FP8 (DeepSeek V3 / Qwen3 FP8: float8_e4m3fn weights,
one float32 ``weight_scale_inv`` per 128x128 block) and MXFP4 (gpt-oss: the experts as FP4 E2M1
nibbles in blocks of 32 sharing one power-of-two scale byte). The float model they came from is the
reference the dequantized weights are compared with."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from families import BY_NAME, model_for, tokenizer_for

FP8_CONFIG = {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "activation_scheme": "dynamic",
    "weight_block_size": [128, 128],
}
MXFP4_CONFIG = {
    "quant_method": "mxfp4",
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
}
FP4 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
BLOCK = 128


def fp8_blocks(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(float8_e4m3fn weight, float32 scale_inv per 128x128 block)``, as DeepSeek V3 stores them."""
    rows, cols = weight.shape
    padded = torch.zeros(-(-rows // BLOCK) * BLOCK, -(-cols // BLOCK) * BLOCK)
    padded[:rows, :cols] = weight
    blocks = padded.reshape(padded.shape[0] // BLOCK, BLOCK, padded.shape[1] // BLOCK, BLOCK)
    scale = blocks.abs().amax(dim=(1, 3)).clamp_min(1e-12) / 448.0  # e4m3's largest value
    quantized = (blocks / scale[:, None, :, None]).reshape(padded.shape)[:rows, :cols]
    return quantized.to(torch.float8_e4m3fn), scale.float()


def mxfp4_blocks(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(blocks, scales)`` of an ``(experts, rows, k)`` tensor: blocks ``(experts, rows, k/32, 16)``
    uint8 (two E2M1 values a byte, low nibble first), scales ``(experts, rows, k/32)`` biased by 127."""
    experts, rows, k = weight.shape
    groups = weight.reshape(experts, rows, k // 32, 32)
    exponent = torch.ceil(torch.log2(groups.abs().amax(-1).clamp_min(1e-30) / 6.0)).clamp(-127, 127)
    index = ((groups / torch.exp2(exponent)[..., None])[..., None] - FP4).abs().argmin(-1).to(torch.uint8)
    return index[..., 0::2] | (index[..., 1::2] << 4), (exponent + 127).to(torch.uint8)


def _save(model: nn.Module, tokenizer, where: Path, tensors: dict[str, torch.Tensor], quant: dict) -> Path:
    model.save_pretrained(where)
    tokenizer.save_pretrained(where)
    save_file(tensors, where / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((where / "config.json").read_text())
    (where / "config.json").write_text(json.dumps({**config, "quantization_config": quant}, indent=1))
    return where


def fp8_checkpoint(where: Path) -> tuple[Path, nn.Module]:
    """A block-FP8 Qwen 3 (hidden 128: one block wide) at ``where``, and its float reference."""
    family = BY_NAME["Qwen 3"]
    family = replace(
        family, config={**family.config, "hidden_size": 128, "intermediate_size": 256, "head_dim": 32}
    )
    tokenizer = tokenizer_for(family)
    model = model_for(family, tokenizer)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        if value.dim() == 2 and ".layers." in name and "norm" not in name:
            tensors[name], tensors[f"{name}_scale_inv"] = fp8_blocks(value)
        else:
            tensors[name] = value.contiguous()
    return _save(model, tokenizer, where, tensors, FP8_CONFIG), model


def mxfp4_checkpoint(where: Path) -> tuple[Path, nn.Module]:
    """A gpt-oss whose experts are MXFP4 at ``where`` (as released), and its float reference."""
    family = BY_NAME["GPT-OSS"]
    tokenizer = tokenizer_for(family)
    model = model_for(family, tokenizer)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):  # stored (experts, out, in)
            blocks = mxfp4_blocks(value.transpose(1, 2).contiguous())
            tensors[f"{name}_blocks"], tensors[f"{name}_scales"] = blocks
        else:
            tensors[name] = value.contiguous()
    return _save(model, tokenizer, where, tensors, MXFP4_CONFIG), model


def relative_error(loaded: nn.Module, reference: nn.Module, which: str = "") -> float:
    """Largest relative Frobenius error of the weights whose name contains ``which``."""
    ref = {n: p.detach() for n, p in reference.named_parameters()}
    return max(
        float((p.float() - ref[n].float()).norm() / ref[n].float().norm())
        for n, p in loaded.named_parameters()
        if which in n and p.dim() >= 2 and n in ref
    )


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")
