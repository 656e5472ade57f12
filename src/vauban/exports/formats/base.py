"""What every export format is given, and what several of them share.

An :class:`ExportJob` is the model as it is in memory (its cut applied), its tokenizer, where it
came from (:class:`~vauban.model.loading.ModelSource`) and what was asked for (``quant``, ``dtype``).
The weights' dtype follows the source unless asked otherwise: a bf16 or fp16 checkpoint exports
in its own dtype (vauban computes the edit in float32 and casts once, here), a GGUF or an MLX
quantized source in float16 (the precision their block scales are stored in, and llama.cpp's
default float type), a model built in memory in its current dtype.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...core.errors import VaubanError
from ...edit.cutting import Cut, active_cuts
from ...model.arch import hf
from ...model.loading import ModelSource, clear_quantizer, resolve_dtype, source_of

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
# GGUF general.file_type: 0 all F32, 1 mostly F16, 32 mostly BF16; anything else is quantized
_GGUF_FILE_DTYPES = {0: torch.float32, 1: torch.float16, 32: torch.bfloat16}


@dataclass(frozen=True)
class ExportJob:
    """One export: the model (cut applied), tokenizer, source, and the options asked for."""

    model: nn.Module
    tokenizer: Any
    source: ModelSource | None = None
    quant: str | None = None
    dtype: torch.dtype | None = None
    name: str = "model"  # the export directory's name, for files named after it (GGUF)

    @classmethod
    def of(
        cls,
        model: nn.Module,
        tokenizer: Any,
        *,
        quant: str | None = None,
        dtype: str | torch.dtype | None = None,
        name: str = "model",
    ) -> ExportJob:
        explicit = None if dtype is None else resolve_dtype(dtype, torch.device("cpu"))
        if explicit is not None and explicit not in DTYPE_NAMES:
            raise VaubanError(f"export dtype {dtype!r} is not one of {sorted(DTYPE_NAMES.values())}")
        return cls(model, tokenizer, source_of(model), quant, explicit, name)

    def float_dtype(self) -> torch.dtype:
        """The dtype float weights are written in: asked for, else the source's, else the model's."""
        if self.dtype is not None:
            return self.dtype
        from_source = source_dtype(self.source)
        if from_source is not None:
            return from_source
        return next(self.model.parameters()).dtype

    def single_cut(self, what: str) -> Cut:
        """The one cut applied to the model: formats that redo the edit elsewhere need it."""
        cuts = active_cuts(self.model)
        if len(cuts) != 1:
            raise VaubanError(
                f"a {what} export redoes the model's cut, so exactly one cut must be applied "
                f"(found {len(cuts)}); export inside `with vauban.cut(...)`"
            )
        return cuts[0]


def source_dtype(source: ModelSource | None) -> torch.dtype | None:
    """The dtype the source checkpoint stores its float weights in (see the module docstring)."""
    if source is None:
        return None
    kind = source.kind.removeprefix("hub/")
    if kind == "demo":
        return torch.float16
    if source.origin is None:
        return None
    origin = Path(source.origin)
    if kind == "gguf":
        return _gguf_dtype(origin)
    if kind == "mlx":
        return torch.float16
    config = _read_json(origin / "config.json")
    name = config.get("dtype") or config.get("torch_dtype")
    if not isinstance(name, str) and isinstance(config.get("text_config"), dict):
        name = config["text_config"].get("dtype") or config["text_config"].get("torch_dtype")
    try:
        found = resolve_dtype(name, torch.device("cpu")) if isinstance(name, str) else None
    except VaubanError:
        return None
    return found if found in DTYPE_NAMES else None


def _gguf_dtype(path: Path) -> torch.dtype:
    import gguf

    field = gguf.GGUFReader(path).fields.get("general.file_type")
    file_type = int(field.contents()) if field is not None else -1
    return _GGUF_FILE_DTYPES.get(file_type, torch.float16)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_transformers(model: nn.Module, tokenizer: Any, folder: Path, dtype: torch.dtype) -> None:
    """A transformers directory of ``model`` with float weights in ``dtype``, sharded the way
    ``save_pretrained`` shards, plus the legacy RoPE keys mlx_lm reads.

    The in-memory model is not touched: a cast copy of its state dict is written (cast once,
    from the float32 the edit was computed in).
    """
    clear_quantizer(model)
    hf(model).config.architectures = [type(model).__name__]
    state = None
    if any(p.dtype != dtype and p.is_floating_point() for p in model.parameters()):
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    hf(model).save_pretrained(folder, state_dict=state)
    tokenizer.save_pretrained(folder)
    config_file = folder / "config.json"
    config = mlx_compatible_config(json.loads(config_file.read_text()))
    config["dtype"] = DTYPE_NAMES.get(dtype, config.get("dtype"))  # save_pretrained names the model's
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def mlx_compatible_config(config: dict[str, Any]) -> dict[str, Any]:
    """Add the pre-v5 RoPE keys (``rope_theta``, ``rope_scaling``, ``rope_local_base_freq``)
    that mlx_lm reads; transformers 5 writes them only inside ``rope_parameters``."""
    params = config.get("rope_parameters")
    if not isinstance(params, dict):
        return config
    out = dict(config)
    per_type = all(isinstance(v, dict) for v in params.values())
    main = params.get("full_attention", {}) if per_type else params
    if "rope_theta" in main:
        out.setdefault("rope_theta", main["rope_theta"])
    if main.get("rope_type", "default") != "default":
        out.setdefault("rope_scaling", {k: v for k, v in main.items() if k != "rope_theta"})
    if per_type and "rope_theta" in params.get("sliding_attention", {}):
        out.setdefault("rope_local_base_freq", params["sliding_attention"]["rope_theta"])
    return out


def need(module: str, extra: str) -> Any:
    """Import an optional dependency, or raise the one-line error naming the extra
    (:func:`vauban.core.extras.require`)."""
    from ...core.extras import require

    return require(module, extra, "this export format")
