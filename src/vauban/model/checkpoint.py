"""Which tensors of a checkpoint on disk hold a model's residual writers, by transformers' own
key conversion.

A checkpoint is saved under its hub names, which are not always the loaded model's parameter
names: Mixtral's experts are ``block_sparse_moe.experts.3.w2.weight`` on disk and one fused
``mlp.experts.down_proj`` in memory, Nemotron-H's layers sit under ``backbone.``, Mistral 3's
language model under ``language_model.model.``, Qwen3-VL-MoE's experts are stored transposed.
transformers renames and converts them while loading (``conversion_mapping``); here the same
rules run on the names alone (no tensor is read), so the streamed cut
(:func:`vauban.exports.streaming.stream_export`) edits exactly the tensors that become the
writers :func:`vauban.model.arch.residual_writers` finds on the loaded model, along the axis they
have on disk. A conversion that mixes the residual axis of a writer (none in transformers 5.24's
families) is refused with the tensor's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.errors import VaubanError
from . import arch


@dataclass(frozen=True)
class WriterTensor:
    """One residual-writing tensor of a checkpoint on disk (a whole writer, or one expert of a
    fused one), with its residual axis as stored.

    ``post_norm`` is the post-norm's path inside the decoder layer (to build the module) and
    ``post_norm_weight`` its gain tensor's checkpoint name, for Gemma 2/3 and OLMo 2.
    """

    name: str
    layer: int
    axis: int
    kind: str
    post_norm: str | None = None
    post_norm_weight: str | None = None


Sources = dict[str, list[tuple[str, tuple[Any, ...]]]]


def sources(skeleton: nn.Module, names: Sequence[str]) -> Sources:
    """``{model parameter name: [(checkpoint tensor name, conversion operations)]}``: the renaming
    and conversion transformers' loader applies to ``names`` for this model (an empty tuple of
    operations: the tensor is the parameter, renamed at most)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(arch.hf(skeleton))
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    by_pattern = {p: c for c in converters for p in c.source_patterns}
    meta = skeleton.state_dict()
    prefix = arch.hf(skeleton).base_model_prefix
    out: Sources = {}
    for original in sorted(names):
        key, pattern = rename_source_key(original, renamings, converters, prefix, meta)
        if key not in meta and original in meta:  # as the loader does: the name was right already
            key, pattern = rename_source_key(original, [], [], prefix, meta)
        if key in meta:
            ops = tuple(by_pattern[pattern].operations) if pattern is not None else ()
            out.setdefault(key, []).append((original, ops))
    return out


def _stored_axis(
    axis: int, param: torch.Tensor, ops: tuple[Any, ...], shape: Sequence[int], name: str
) -> int:
    """The residual axis of checkpoint tensor ``name`` (of ``shape``), given the parameter's
    ``axis`` and the operations that turn such tensors into it (undone from the last)."""
    ndim, at = param.dim(), axis % param.dim()
    for op in reversed(ops):
        kind = type(op).__name__
        dim = getattr(op, "dim", 0) % max(ndim, 1)
        if kind == "MergeModulelist" and dim != at:  # stacked pieces: one axis fewer
            ndim, at = ndim - 1, at - (at > dim)
        elif kind == "Concatenate" and dim != at:  # pieces joined along another axis
            pass
        elif kind == "Transpose":
            pair = (op.dim0 % ndim, op.dim1 % ndim)
            if not (op.check_dims and tuple(shape) == tuple(param.shape)) and at in pair:
                at = pair[1] if at == pair[0] else pair[0]
        else:
            raise VaubanError(
                f"{name}: transformers loads it through {kind}, which mixes its residual axis or is not "
                "known to vauban, so it cannot be cut on disk; cut it in memory (vauban abliterate)"
            )
    if ndim != len(shape):
        raise VaubanError(
            f"{name} has shape {list(shape)}, expected {ndim} axes; the checkpoint does not match its config"
        )
    return at - ndim


def _names(skeleton: nn.Module) -> dict[int, list[str]]:
    """Every name of each parameter (a tied one has several)."""
    out: dict[int, list[str]] = {}
    for name, param in skeleton.named_parameters(remove_duplicate=False):
        out.setdefault(id(param), []).append(name)
    return out


def _tensors(
    param: torch.Tensor,
    names: dict[int, list[str]],
    found: Sources,
    shapes: Mapping[str, Sequence[int]],
    what: str,
) -> list[tuple[str, tuple[Any, ...]]]:
    """The checkpoint tensors that hold ``param`` (one, or its pieces; a tied parameter saved
    under each of its names counts each copy), or an error naming it."""
    per_name = {name: found[name] for name in names[id(param)] if name in found}
    sizes = [sum(math.prod(shapes[s]) for s, _ in got) for got in per_name.values()]
    if not per_name or any(size != param.numel() for size in sizes):
        stored = sorted(s for got in per_name.values() for s, _ in got)
        raise VaubanError(
            f"the checkpoint has no tensor of {param.numel()} values for {names[id(param)][0]} ({what}), "
            f"found {stored or 'none'}; it does not match its config.json"
        )
    return [hit for got in per_name.values() for hit in got]


def checkpoint_writers(
    skeleton: nn.Module,
    shapes: Mapping[str, Sequence[int]],
    layers: Sequence[int] | None = None,
    *,
    embeddings: bool = False,
) -> list[WriterTensor]:
    """The checkpoint tensors (``{name: shape}``) that become the residual writers of
    ``skeleton`` (the model built on the meta device from the checkpoint's config), each with
    its residual axis on disk: weights and biases, one entry per stored expert of a fused
    tensor. ``embeddings=True`` adds the embedding tables (kind ``"embedding"``)."""
    found = sources(skeleton, list(shapes))
    names = _names(skeleton)
    blocks = arch.decoder_layers(skeleton)
    out: list[WriterTensor] = []
    for w in arch.residual_writers(skeleton, None if layers is None else [int(i) for i in layers]):
        norm_path = norm_name = None
        if w.post_norm is not None:
            norm_path = next(n for n, m in blocks[w.layer].named_modules() if m is w.post_norm)
            norm_weight = getattr(w.post_norm, "weight", None)
            if not isinstance(norm_weight, nn.Parameter):
                raise VaubanError(f"{w.name}: its post-norm has no weight to read from the checkpoint")
            (norm_name, ops), *_ = _tensors(norm_weight, names, found, shapes, f"the post-norm of {w.name}")
            if ops:
                raise VaubanError(f"{norm_name}: a converted post-norm gain cannot be read by name")
        for param, axis in ((w.weight, w.axis), (w.bias, -1)):
            if param is None:
                continue
            for name, ops in _tensors(param, names, found, shapes, f"a writer of layer {w.layer}"):
                at = _stored_axis(axis, param, ops, shapes[name], name)
                out.append(WriterTensor(name, w.layer, at, w.kind, norm_path, norm_name))
    if embeddings:
        for table in arch.embeddings(skeleton):
            for name, ops in _tensors(table.weight, names, found, shapes, "an embedding table"):
                out.append(
                    WriterTensor(
                        name, 0, _stored_axis(-1, table.weight, ops, shapes[name], name), "embedding"
                    )
                )
    return out
