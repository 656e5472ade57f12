"""Cut a safetensors checkpoint on disk, one tensor at a time, for models bigger than memory.

The in-memory cut (:mod:`vauban.edit.cutting`) needs the whole model loaded. Here the checkpoint stays
on disk: every shard is copied byte for byte (the kernel's file copy, no tensor in memory),
then each residual-writing tensor is read alone, edited with the same arithmetic as
:func:`vauban.cut` and written back over its own bytes. The header, names, dtypes and shapes do
not change, so the copy stays a valid shard and the index stays right; peak memory is the
largest *edited* tensor plus a few times one matrix of it (its float32 working copies; a fused
MoE expert tensor is edited in place, expert by expert), never the model.

Which tensors to edit comes from :func:`vauban.model.checkpoint.checkpoint_writers`: the writers the
in-memory cut finds on the model (built from the config on the meta device), traced to their
checkpoint tensors by transformers' own loading renames (hub names, experts stored one tensor
each, transposed expert tensors, multimodal prefixes). Post-norm gains (Gemma 2/3, OLMo 2) are read
from the checkpoint and passed through the family's own norm module, built alone from the
config on the meta device, exactly as :func:`vauban.model.arch.norm_gain` does on a loaded model.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig

from ..core.atomic import building_dir
from ..core.errors import VaubanError, check_alpha
from ..direction.results import DirectionResult
from ..edit.cutting import Direction, LayerWeights, layer_bases, layer_weights, writer_basis
from ..edit.editing import FLOAT_DTYPES, edited
from ..model import arch, block_fp8
from ..model.checkpoint import WriterTensor, checkpoint_writers
from ..model.loading import model_class
from .exporting import DIRECTION_FILE, check_output_dir, versions
from .verifying import RECORD_FILE, check_weights, file_hashes

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def weight_files(src: Path) -> list[Path]:
    """The safetensors shards of a model directory (from its index, or the single file)."""
    index = src / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        shards = sorted({src / name for name in weight_map.values()})
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise VaubanError(f"{index} names missing shards {missing}; download the whole checkpoint")
        return shards
    if (src / SINGLE_FILE).is_file():
        return [src / SINGLE_FILE]
    raise VaubanError(
        f"{src} has no {SINGLE_FILE} or {INDEX_FILE}; a streamed cut needs safetensors weights "
        "(load and export the model with vauban first)"
    )


def tensor_table(path: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """``(data start, {name: {"dtype", "shape", "data_offsets"}})`` from a safetensors header
    (8-byte little-endian length, then JSON; offsets are relative to the data start)."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return 8 + length, header


def _meta_model(src: Path) -> nn.Module:
    """The architecture without weights, for its family, shape and norm modules."""
    config = AutoConfig.from_pretrained(src, local_files_only=True)
    with torch.device("meta"):
        return model_class(config).from_config(config)


def _post_norm(skeleton: nn.Module, tensor: WriterTensor, weight: torch.Tensor) -> nn.Module:
    """``tensor``'s post-norm, that layer's norm module built alone on the CPU with ``weight``."""
    norm = arch.decoder_layers(skeleton)[tensor.layer].get_submodule(str(tensor.post_norm))
    norm = norm.to_empty(device="cpu")
    norm.load_state_dict({"weight": weight}, assign=True)
    return norm


def _overwrite(dst: Path, start: int, info: dict[str, Any], tensor: torch.Tensor) -> None:
    begin, end = info["data_offsets"]
    data = tensor.view(torch.uint8).reshape(-1).numpy()
    if data.nbytes != end - begin:
        raise VaubanError(f"{dst.name}: edited tensor has {data.nbytes} bytes, header says {end - begin}")
    with dst.open("r+b") as f:
        f.seek(start + begin)
        f.write(data.data)


def _read(path: Path, name: str) -> torch.Tensor:
    """One tensor, with its file mapped only while it is read."""
    with safe_open(path, framework="pt") as f:
        return f.get_tensor(name)


def _quantization(skeleton: nn.Module, source: Path) -> tuple[tuple[int, int] | None, bool]:
    """The checkpoint's FP8 block and whether its scales are powers of two (``ue8m0``); ``(None,
    False)`` for a float checkpoint; a one-line error for a quantization the stream cannot edit."""
    quantization = getattr(arch.hf(skeleton).config, "quantization_config", None)
    if quantization is not None and not isinstance(quantization, dict):
        quantization = quantization.to_dict()
    block = block_fp8.block_size(quantization)
    if quantization and block is None:
        raise VaubanError(
            f"{source} is quantized ({quantization.get('quant_method')}): the streamed cut edits float and "
            "block-FP8 checkpoints only; cut it in memory instead (vauban abliterate loads it as float)"
        )
    return block, bool(quantization and quantization.get("scale_fmt") == "ue8m0")


@dataclass
class CheckpointCopy:
    """A copy of a checkpoint being edited in place: its folder, each source shard's header, and
    where every tensor is."""

    folder: Path
    tables: dict[Path, tuple[int, dict[str, dict[str, Any]]]]
    where: dict[str, Path]

    def read(self, name: str) -> torch.Tensor:
        return _read(self.where[name], name)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        shard = self.where[name]
        start, table = self.tables[shard]
        _overwrite(self.folder / shard.name, start, table[name], tensor)


def _cut_tensor(
    copy: CheckpointCopy,
    name: str,
    axis: int,
    basis: torch.Tensor,
    alpha: float,
    norm_preserving: bool,
    fp8: Any,
) -> float | None:
    """Cut tensor ``name`` of the copy in its own dtype. A block-FP8 weight (``fp8``: its block and
    ``ue8m0``) is dequantized, cut in float32 and quantized again with fresh block scales: returns
    that re-quantization's relative error against the float cut (``None`` for a float tensor)."""
    w = copy.read(name)
    if w.dtype in FLOAT_DTYPES:
        copy.write(name, edited(w, axis, basis, alpha, norm_preserving, inplace=True))
        return None
    scales = block_fp8.scale_name(name)
    if fp8[0] is None or w.dtype != block_fp8.FP8 or scales not in copy.where:
        raise VaubanError(
            f"{name} has {w.dtype} weights and cannot be cut on disk; load the model with vauban "
            "(dequantized) and cut it in memory (vauban abliterate)"
        )
    scale = copy.read(scales)
    cut_float = edited(
        block_fp8.dequantize(w, scale, fp8[0]), axis, basis, alpha, norm_preserving, inplace=True
    )
    q, new_scale = block_fp8.quantize(cut_float, fp8[0], scale.dtype, ue8m0=fp8[1])
    copy.write(name, q)
    copy.write(scales, new_scale)
    back = block_fp8.dequantize(q, new_scale, fp8[0])
    return float((back - cut_float).norm() / cut_float.norm().clamp_min(1e-30))


def _writer_basis(
    skeleton: nn.Module, target: WriterTensor, basis: torch.Tensor, where: dict[str, Path]
) -> torch.Tensor:
    """The layer's basis as this writer removes it: through its post-norm's gain when it has one
    (:func:`vauban.edit.cutting.writer_basis`, the norm's weight read from the checkpoint)."""
    if target.post_norm_weight is None:
        return basis
    gain_weight = _read(where[target.post_norm_weight], target.post_norm_weight)
    return writer_basis(basis, _post_norm(skeleton, target, gain_weight), torch.device("cpu"))


def stream_export(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    direction: Direction | str | os.PathLike[str],
    *,
    alpha: float = 1.0,
    layers: Sequence[int] | None = None,
    attention: LayerWeights | None = None,
    mlp: LayerWeights | None = None,
    norm_preserving: bool = False,
    embeddings: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write ``dst``: the safetensors model directory ``src`` with the direction cut out.

    Same result as loading ``src``, :func:`vauban.cut` with the same arguments, and exporting,
    tensor for tensor, in the checkpoint's own dtype (the same arithmetic; a float32 matmul may
    round one element in the last bit differently where its summation order follows another
    memory layout); but only one tensor is in memory at a time. A block-FP8 weight is
    dequantized, cut and quantized again with fresh block scales (:mod:`vauban.model.block_fp8`).
    ``direction`` is anything :func:`vauban.cut` takes, or the path of a saved direction. Every
    other file of ``src`` (config, tokenizer, generation config, index) is copied; ``dst`` gets
    a ``vauban.json`` record with every file's sha256, and appears atomically when complete.
    """
    source = Path(src).expanduser()
    if not source.is_dir():
        raise VaubanError(f"{source} is not a model directory; give a local safetensors checkpoint")
    out = check_output_dir(dst, overwrite)
    if out.absolute() == source.absolute():
        raise VaubanError("the cut must go to a new directory; choose a DST other than SRC")
    if isinstance(direction, (str, os.PathLike)):
        direction = DirectionResult.load(direction)
    shards = weight_files(source)
    skeleton = _meta_model(source)
    n, d = arch.num_layers(skeleton), arch.d_model(skeleton)
    bases = layer_bases(direction, d, n)
    alpha = check_alpha(alpha)
    strength = {"attention": layer_weights(attention, n, "attention"), "mlp": layer_weights(mlp, n, "MLP")}
    tables = {shard: tensor_table(shard) for shard in shards}
    where = {name: shard for shard, (_, table) in tables.items() for name in table}
    shapes = {name: info["shape"] for _, table in tables.values() for name, info in table.items()}
    fp8 = _quantization(skeleton, source)
    targets = checkpoint_writers(skeleton, shapes, layers, embeddings=embeddings and alpha != 0.0)
    with building_dir(out, overwrite=overwrite) as tmp:
        for item in sorted(source.iterdir()):
            if item.is_file() and item.name not in (RECORD_FILE, DIRECTION_FILE):
                shutil.copyfile(item, tmp / item.name)  # shards too: edited in place below
        copy, count, errors = CheckpointCopy(tmp, tables, where), 0, []
        for target in targets:
            a = alpha if target.kind == "embedding" else alpha * strength[target.kind][target.layer]
            if a == 0.0:
                continue
            basis = _writer_basis(skeleton, target, bases[target.layer], where)
            error = _cut_tensor(copy, target.name, target.axis, basis, a, norm_preserving, fp8)
            errors += [] if error is None else [error]
            count += 1
        check_weights(tmp)
        if isinstance(direction, DirectionResult):
            direction.save(tmp / DIRECTION_FILE)
        record = _record(
            source,
            direction,
            tmp,
            alpha=alpha,
            layers=list(range(n)) if layers is None else [int(i) for i in layers],
            embeddings=embeddings,
            subspace_rank=int(bases.shape[1]),
            attention_weights=list(strength["attention"]),
            mlp_weights=list(strength["mlp"]),
            norm_preserving=norm_preserving,
            edited_tensors=count,
            **_fp8_record(errors),
        )
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out


def _fp8_record(errors: list[float]) -> dict[str, Any]:
    """What the record says of the block-FP8 weights written again (none: nothing)."""
    if not errors:
        return {}
    return {"fp8_requantized_tensors": len(errors), "fp8_requantization_error_max": max(errors)}


def _record(source: Path, direction: Direction, folder: Path, **cut: Any) -> dict[str, Any]:
    """The ``vauban.json`` of a streamed cut: where it came from, the cut's settings, every file's
    sha256."""
    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "source": str(source),
        "method": "directional ablation (weight orthogonalization), streamed from disk",
        **cut,
        "direction": direction.record() if isinstance(direction, DirectionResult) else None,
        "files": file_hashes(folder),
    }
