"""Run a safetensors checkpoint bigger than memory, one decoder layer at a time.

:func:`layerwise` builds the model's architecture with no weights in its decoder layers (meta
tensors, through accelerate's ``init_empty_weights``; buffers such as rotary frequencies are
real), loads everything outside them (embeddings, final norm, LM head) from the checkpoint, and
hooks every decoder layer: just before it runs its weights are read from the safetensors files
(memory-mapped, one tensor at a time) and right after it ran they are dropped again. Any code
that runs the model (a forward, ``generate``) then runs it unchanged with one layer's weights in
memory at a time; what it keeps are activations. A forward over many prompts reads every layer
once, so callers batch as much as fits (:func:`vauban.direction.streamed.measure_streamed` runs
each prompt set as one batch).

``edits``: functions ``(model, layer)`` run right after a layer's weights are read, returning an
object with ``undo()`` (or ``None``), e.g. a one-layer :func:`vauban.edit.cutting.cut`: the model
as it would be with that edit applied to every layer, which is what a cut measured by its
effect needs (see :mod:`vauban.direction.streamed`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from ..core.errors import VaubanError
from . import arch

Edit = Callable[[nn.Module, int], Any]


def _where(src: Path) -> dict[str, Path]:
    """Every tensor name of the checkpoint and its shard (from the index, or the single file)."""
    index = src / "model.safetensors.index.json"
    if index.is_file():
        return {name: src / shard for name, shard in json.loads(index.read_text())["weight_map"].items()}
    single = src / "model.safetensors"
    if not single.is_file():
        raise VaubanError(
            f"{src} has no model.safetensors or model.safetensors.index.json; running "
            "one layer at a time needs safetensors weights (export the model with vauban)"
        )
    with safe_open(single, framework="pt") as f:
        return dict.fromkeys(f.keys(), single)


class Layerwise:
    """A model whose decoder layers hold weights only while they run (see the module docstring)."""

    def __init__(self, src: str | Path, dtype: torch.dtype | None = None) -> None:
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        self.src = Path(src)
        self.where = _where(self.src)
        config = AutoConfig.from_pretrained(self.src, local_files_only=True)
        stored = getattr(config, "dtype", None) or torch.float32
        dtype = dtype or (getattr(torch, stored) if isinstance(stored, str) else stored)
        with init_empty_weights(include_buffers=False):
            self.model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        self.model.eval()
        self.dtype = dtype
        self.blocks = arch.decoder_layers(self.model)
        names = {id(m): n for n, m in self.model.named_modules()}
        self.prefixes = [names[id(b)] + "." for b in self.blocks]
        self.edits: list[Edit] = []
        self.loaded: dict[int, list[Any]] = {}  # layer -> its edits, undone when it is dropped
        self.reads = 0  # layers read so far (each read is one layer's weights from the files)
        self.read_seconds = 0.0  # spent reading them
        self._load_rest()
        for i, block in enumerate(self.blocks):
            block.register_forward_pre_hook(lambda _m, _a, i=i: self._load(i))
            block.register_forward_hook(lambda _m, _a, _o, i=i: self._drop(i))

    def _tensor(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = name if name in self.where else self._tied(name)
        with safe_open(self.where[key], framework="pt") as f:
            value = f.get_tensor(key)
        return value.to(like.dtype)

    def _tied(self, name: str) -> str:
        """The stored name of a tied weight (the LM head saved as the embeddings)."""
        if name.endswith("lm_head.weight") and getattr(self.model.config, "tie_word_embeddings", False):
            embed = self.model.get_input_embeddings()
            names = {id(p): n for n, p in self.model.named_parameters(remove_duplicate=False)}
            stored = names[id(embed.weight)]
            if stored in self.where:
                return stored
        raise VaubanError(f"{self.src} has no tensor {name}; the checkpoint does not match its config.json")

    def _set(self, name: str, value: torch.Tensor | None) -> None:
        from accelerate.utils import set_module_tensor_to_device

        if value is None:
            set_module_tensor_to_device(self.model, name, "meta")
        else:
            set_module_tensor_to_device(self.model, name, "cpu", value=value)

    def _load_rest(self) -> None:
        """Everything outside the decoder layers, kept (embeddings, final norm, LM head)."""
        for name, param in self.model.named_parameters():
            if not name.startswith(tuple(self.prefixes)) and param.device.type == "meta":
                self._set(name, self._tensor(name, param))

    def _load(self, layer: int) -> None:
        for other in list(self.loaded):  # a pass stopped early (an exception) left its last layer
            self._drop(other)
        started = time.perf_counter()
        prefix = self.prefixes[layer]
        for name, param in self.blocks[layer].named_parameters():
            self._set(prefix + name, self._tensor(prefix + name, param))
        self.reads, self.read_seconds = self.reads + 1, self.read_seconds + time.perf_counter() - started
        self.loaded[layer] = [edit(self.model, layer) for edit in self.edits]

    def _drop(self, layer: int) -> None:
        for applied in reversed(self.loaded.pop(layer, [])):
            if applied is not None:
                applied.undo()
        prefix = self.prefixes[layer]
        for name, _ in self.blocks[layer].named_parameters():
            self._set(prefix + name, None)

    @contextlib.contextmanager
    def editing(self, edit: Edit) -> Iterator[None]:
        """Every layer read inside this block gets ``edit`` (see the module docstring)."""
        self.edits.append(edit)
        try:
            yield
        finally:
            self.edits.remove(edit)
            for layer in list(self.loaded):
                self._drop(layer)


def layerwise(src: str | Path, dtype: torch.dtype | None = None) -> Layerwise:
    """The checkpoint at ``src`` (a folder with config.json and safetensors weights) as a
    :class:`Layerwise` model: one decoder layer's weights in memory at a time."""
    return Layerwise(src, dtype)
