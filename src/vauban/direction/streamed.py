"""Measure the refusal direction of a checkpoint bigger than memory, one decoder layer at a time.

The checkpoint is run through :func:`vauban.model.layerwise.layerwise`: one decoder layer's
weights in memory at a time, read from the safetensors files just before the layer runs. The
measurement is :func:`vauban.direction.measuring.measure` itself, with each prompt set as one
batch (so a pass over the prompts reads every layer once, and what memory holds are the prompts'
activations): the residual stream of every prompt after every layer, the cosine separation, and
by default the selection by effect, whose cuts are applied to each layer as it is read (a
one-layer :func:`vauban.edit.cutting.cut`: the same arithmetic as the whole-model cut, layer by
layer). The direction is then exported with :func:`vauban.exports.streaming.stream_export`,
tensor by tensor.

Passes: one per prompt set for the residuals; with the selection by effect, one greedy answer
of ``ANSWER_TOKENS`` tokens of the held-back harmful prompts (a pass per token, with the KV
cache in memory), then per candidate layer one pass over the held-back harmless prompts and one
over the refusals. Each pass reads the checkpoint once: from the page cache when it fits in
RAM, from the disk when it does not.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from ..edit.cutting import Direction, cut
from ..model.layerwise import Layerwise, layerwise
from ..text.formatting import Formatting
from ..text.prompts import Prompts
from .measuring import measure
from .results import DirectionResult

ONE_BATCH = 1 << 30  # prompts per batch: every prompt set is one forward pass


def streamed_cutting(model: Layerwise) -> Any:
    """``cutting(model, direction)`` for the selection: every layer read inside the block is cut."""

    def cutting(_model: Any, direction: Direction) -> Any:
        return model.editing(lambda m, layer: cut(m, direction, layers=[layer]))

    return cutting


def measure_streamed(
    src: str | os.PathLike[str],
    tokenizer: Any = None,
    harmful: Prompts = "harmful",
    harmless: Prompts = "harmless",
    *,
    layer: int | None = None,
    select: str = "effect",
    max_kl: float | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    formatting: Formatting | None = None,
    show_progress: bool | None = None,
) -> DirectionResult:
    """:func:`vauban.direction.measuring.measure` of the checkpoint in folder ``src`` (config.json,
    safetensors weights, the tokenizer unless given), one decoder layer in memory at a time;
    ``batch_size`` prompts per pass (default: each prompt set in one pass, each layer read once
    per pass). ``dtype``: the compute dtype (default: the checkpoint's)."""
    from transformers import AutoTokenizer

    model = layerwise(os.fspath(src), dtype)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    result = measure(
        model.model,
        tokenizer,
        harmful,
        harmless,
        layer=layer,
        select=select,
        max_kl=max_kl,
        batch_size=batch_size or ONE_BATCH,
        show_progress=show_progress,
        formatting=formatting,
        cutting=streamed_cutting(model),
    )
    return dataclasses.replace(result, model_path=os.fspath(src))
