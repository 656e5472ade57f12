"""Probe prompts: how strongly each layer's residual points along the direction.

The projection is the raw dot product ``h_l · d`` of the last-token residual after layer ``l``
with the unit direction, in the residual stream's own units, so a cut that removes ``d`` from the
stream drives it to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.errors import VaubanError
from ..edit.vectors import unit_vector
from ..model import arch
from ..model.loading import model_label
from ..runtime.activations import last_token_residuals
from ..text.formatting import Formatting, formatting_for
from ..text.prompts import load_prompts
from .results import BorderlineResult, DirectionResult, ProbeResult


def projections(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    direction: DirectionResult | torch.Tensor,
    *,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    formatting: Formatting | None = None,
    prompt_set: str | None = "probe",
) -> torch.Tensor:
    """``(len(prompts), num_layers)`` projections of each prompt's residuals onto ``direction``.

    Prompts are formatted with ``formatting``, else with the direction's own (the formatting it
    was measured with), else with the family defaults (:mod:`vauban.text.formatting`).
    """
    vec = unit_vector(direction, arch.d_model(model))
    residuals = last_token_residuals(
        model,
        tokenizer,
        prompts,
        batch_size=batch_size,
        show_progress=show_progress,
        desc="probe",
        formatting=formatting_for(direction, formatting),
        prompt_set=prompt_set,
    )
    return residuals @ vec


def probe(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    direction: DirectionResult | torch.Tensor,
    *,
    formatting: Formatting | None = None,
) -> ProbeResult:
    """Per-layer projection of one prompt onto the direction (formatted as :func:`projections` says)."""
    (text,) = load_prompts([prompt], what="prompt")
    values = projections(model, tokenizer, [text], direction, formatting=formatting)[0]
    layer = direction.layer_index if isinstance(direction, DirectionResult) else int(values.argmax())
    return ProbeResult(
        prompt=text,
        projections=tuple(float(v) for v in values),
        layer_index=layer,
        model_path=model_label(model),
    )


def borderline(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    direction: DirectionResult,
    *,
    formatting: Formatting | None = None,
) -> BorderlineResult:
    """Place a prompt between the harmful and harmless patterns measured with ``direction``.

    The harmful and harmless curves are the per-layer mean projections of the measurement sets
    (kept in the DirectionResult); ``position`` at the direction's layer is 0 on the harmless
    mean and 1 on the harmful mean.
    """
    result = probe(model, tokenizer, prompt, direction, formatting=formatting)
    if direction.harmful_means is None or direction.harmless_means is None:
        raise VaubanError("this DirectionResult has no per-layer means; measure it again")
    d = direction.direction.double()
    harmful = tuple(float(x) for x in direction.harmful_means @ d)
    harmless = tuple(float(x) for x in direction.harmless_means @ d)
    return BorderlineResult(result, harmful, harmless)
