"""MLX checkpoints and models, read without needing MLX itself where possible.

Two jobs: turn an mlx-community quantized directory (affine per-group quantization: packed
``weight`` plus ``scales`` and ``biases``) back into plain float tensors with Hugging Face
names, and turn a model returned by ``mlx_lm.load`` into a transformers model, so every vauban
function accepts either (the tutorial probes a model loaded with ``mlx_lm.load``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from ..core.errors import VaubanError
from ..core.progress import progress_off

QUANT_KEYS = ("quantization", "quantization_config")


def is_mlx_quantized_dir(path: Path) -> bool:
    """An MLX quantized checkpoint: its config says ``quantization`` with ``bits``/``group_size``."""
    config_file = path / "config.json"
    if not config_file.is_file():
        return False
    config = json.loads(config_file.read_text())
    quant = config.get("quantization")
    return isinstance(quant, dict) and "group_size" in quant and "bits" in quant


def dequantize_affine(
    packed: np.ndarray, scales: np.ndarray, biases: np.ndarray, group_size: int
) -> torch.Tensor:
    """Undo MLX affine quantization: ``w = scale * q + bias`` per group of ``group_size`` inputs.

    MLX packs the ``bits``-wide integers of each row as one little-endian bit stream in uint32
    words, for every width (2, 3, 4, 5, 6, 8), so unpacking the bit stream covers them all. The
    width is not stored next to the tensor; it follows from the shapes.
    """
    words = packed.shape[-1]
    lead = packed.shape[:-1]
    n_groups = scales.shape[-1]
    in_features = n_groups * group_size
    bits, rest = divmod(words * 32, in_features)
    if rest or bits not in (2, 3, 4, 5, 6, 8):
        raise VaubanError(
            f"MLX tensor of packed shape {packed.shape} does not match group_size={group_size} "
            f"and scales {scales.shape}; the checkpoint's config does not describe its weights"
        )
    flat = packed.reshape(-1, words)
    out = np.empty((flat.shape[0], in_features), dtype=np.float32)
    place = (1 << np.arange(bits, dtype=np.uint32)).astype(np.uint32)
    s = scales.reshape(-1, n_groups, 1).astype(np.float32)
    b = biases.reshape(-1, n_groups, 1).astype(np.float32)
    step = max(1, (1 << 22) // in_features)  # bound the temporary bit array to a few MB
    for start in range(0, flat.shape[0], step):
        chunk = flat[start : start + step].astype("<u4").view(np.uint8)
        bit_array = np.unpackbits(chunk, axis=-1, bitorder="little")
        q = (bit_array.reshape(chunk.shape[0], in_features, bits) * place).sum(-1, dtype=np.uint32)
        q = q.reshape(chunk.shape[0], n_groups, group_size).astype(np.float32)
        out[start : start + step] = (q * s[start : start + step] + b[start : start + step]).reshape(
            chunk.shape[0], in_features
        )
    return torch.from_numpy(out.reshape(*lead, in_features))


def _group_size_for(quant: dict[str, Any], module: str) -> int:
    """mlx_lm may override quantization per module: ``{"model.layers.0.mlp": {"bits": 8, ...}}``."""
    override = quant.get(module)
    if isinstance(override, dict) and "group_size" in override:
        return int(override["group_size"])
    return int(quant["group_size"])


def read_quantized_dir(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config (quantization entries removed) and float32 state dict of an MLX quantized dir."""
    config = json.loads((path / "config.json").read_text())
    quant = config["quantization"]
    mode = quant.get("mode", "affine")
    if mode != "affine":
        raise VaubanError(
            f"{path}: MLX quantization mode {mode!r} is not supported (only 'affine'); "
            "use an affine-quantized or unquantized checkpoint"
        )
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise VaubanError(f"{path}: no .safetensors weight files found")
    raw: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                raw[key] = handle.get_tensor(key)
    state: dict[str, torch.Tensor] = {}
    disable = True if progress_off() else None  # None: a bar on terminals only
    for key, tensor in tqdm(raw.items(), desc="dequantize", unit="tensor", leave=False, disable=disable):
        if key.endswith((".scales", ".biases")):
            continue
        module = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and f"{module}.scales" in raw:
            state[key] = dequantize_affine(
                tensor.numpy(),
                raw[f"{module}.scales"].float().numpy(),
                raw[f"{module}.biases"].float().numpy(),
                _group_size_for(quant, module),
            )
        else:
            state[key] = tensor.float()
    for key in QUANT_KEYS:
        config.pop(key, None)
    return config, state


def is_mlx_model(model: object) -> bool:
    """A model object from ``mlx_lm.load`` (an ``mlx.nn.Module``), detected without importing MLX."""
    return any(c.__module__.startswith("mlx.") for c in type(model).__mro__)


def mlx_model_to_torch(model: Any, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """Rebuild an ``mlx_lm`` model as a transformers model with identical float weights.

    mlx_lm keeps Hugging Face parameter names and its ``ModelArgs`` mirror the HF config fields, so
    the conversion is a config rebuild plus a weight copy; a strict key/shape check turns any
    mismatch into a clear error instead of a silently different model.
    """
    import dataclasses

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    args = getattr(model, "args", None)
    if args is None or not dataclasses.is_dataclass(args) or isinstance(args, type):
        raise VaubanError("this MLX model has no ModelArgs; load the directory with vauban instead")
    fields = {k: v for k, v in dataclasses.asdict(args).items() if v is not None}
    kind = fields.pop("model_type")
    try:
        config = AutoConfig.for_model(kind, **fields)
    except ValueError as err:
        raise VaubanError(f"MLX model type {kind!r} has no transformers equivalent: {err}") from None
    # every weight is loaded below: drawing random ones first took most of the conversion
    # (~0.5B values: 15 to 100 s on 2 CPU cores)
    with no_init_weights():
        torch_model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    # typed as a list or a dict; a list of (name, array) without destination=
    flat: list[tuple[str, Any]] = tree_flatten(model.parameters())  # type: ignore[assignment]
    weights = {k: torch.from_numpy(np.array(v.astype(mx.float32))) for k, v in flat}
    if any(k.endswith(".scales") for k in weights):
        raise VaubanError("this MLX model is quantized; load its directory with quick.load instead")
    expected = torch_model.state_dict()
    tied = "lm_head.weight" if getattr(config, "tie_word_embeddings", False) else None
    missing = [k for k in expected if k not in weights and k != tied]
    bad = [k for k, v in weights.items() if k in expected and expected[k].shape != v.shape]
    if missing or bad:
        raise VaubanError(
            f"MLX {kind!r} model does not map onto transformers' layout "
            f"(missing {missing[:3]}, shape mismatch {bad[:3]}); load its directory with quick.load"
        )
    torch_model.load_state_dict({k: v for k, v in weights.items() if k in expected}, strict=False)
    torch_model.tie_weights()  # a tied head is the embedding: nothing is left uninitialized
    return torch_model.to(device).eval()
