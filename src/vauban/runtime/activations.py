"""Read the residual stream at the last prompt token (or its mean over the prompt's tokens) after
every decoder layer.

Forward hooks on the decoder layers (not ``output_hidden_states``, whose last entry already has
the final norm applied), run on the decoder alone so no vocabulary-sized logits are computed,
stopping as soon as the deepest requested layer has run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.errors import VaubanError
from ..model import arch
from ..text.formatting import Formatting
from ..text.prompts import check_tokenizer, encode_chat, pad_id
from .batching import (
    after_opening,
    cache_argument,
    forward_tokens,
    free_memory,
    progress,
    shared_opening,
    sorted_batches,
    token_batches,
)
from .fast_decode import can_compile, compiled_layers

POOLINGS = ("last", "mean")
MASK = -1  # where the batch's attention mask waits for the hooks that pool over tokens


class _Enough(Exception):
    """Raised inside a hook to end a forward pass once every wanted layer was read."""


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def last_token_residuals(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    desc: str = "activations",
    formatting: Formatting | None = None,
    prompt_set: str | None = None,
    compile: bool = False,
    pooling: str = "last",
) -> torch.Tensor:
    """Float32 tensor ``(len(prompts), len(layers), d_model)`` on the CPU.

    ``layers`` defaults to every decoder layer; entry ``[i, j]`` is the residual stream after
    layer ``layers[j]`` at the last token of the chat-formatted prompt ``i`` (formatted with
    ``formatting``, and the system prompt of ``prompt_set``: see :mod:`vauban.text.formatting`).
    Prompts go in length-sorted batches of about :func:`vauban.runtime.batching.forward_tokens` padded
    tokens, or of ``batch_size`` prompts when given. ``compile=True`` runs the decoder layers
    through ``torch.compile`` (CUDA with Triton; fused elementwise work, last-bit differences
    in the residuals; worth its compilation only for thousands of prompts). ``pooling="mean"``
    reads the mean over the formatted prompt's tokens (padding excepted) instead of the last.
    """
    if pooling not in POOLINGS:
        raise VaubanError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    check_tokenizer(model, tokenizer)
    blocks = arch.decoder_layers(model)
    wanted = list(range(len(blocks))) if layers is None else list(layers)
    device = model_device(model)
    ids = encode_chat(tokenizer, prompts, formatting, prompt_set)
    captured: dict[int, torch.Tensor] = {}
    last = max(wanted)

    def hook_for(layer: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            # layers of a model split over devices (device_map) answer on their own device
            hidden = arch.layer_hidden(output)
            if pooling == "mean":
                mask = captured[MASK].to(hidden.device, hidden.dtype)[..., None]
                captured[layer] = ((hidden * mask).sum(1) / mask.sum(1)).to(device)
            else:
                captured[layer] = hidden[:, -1, :].to(device)
            if layer == last:
                raise _Enough

        return hook

    if not ids:
        return torch.empty(0, len(wanted), arch.d_model(model))
    handles = [blocks[i].register_forward_hook(hook_for(i)) for i in set(wanted)]
    lengths = [len(x) for x in ids]
    if batch_size is None:
        batches = token_batches(lengths, forward_tokens(model, max(lengths, default=1), len(ids)))
    else:
        batches = sorted_batches(lengths, batch_size)
    if compile:
        compile = can_compile(device)
    try:
        with compiled_layers(model, compile):
            out = _capture(
                model, tokenizer, ids, batches, captured, wanted, desc, show_progress, pooling == "last"
            )
    finally:
        for handle in handles:
            handle.remove()
    return out.cpu().float()


def _capture(
    model: nn.Module,
    tokenizer: Any,
    ids: list[list[int]],
    batches: list[list[int]],
    captured: dict[int, torch.Tensor],
    wanted: list[int],
    desc: str,
    show_progress: bool | None,
    share: bool,
) -> torch.Tensor:
    """The residuals, kept on the device until the end in the residual stream's own dtype (nothing
    is rounded; a 16-bit model's are half the bytes to copy): a copy to the host per batch would
    wait for that batch, leaving the GPU idle while the host launches the next one. With
    ``share`` (last-token pooling), each batch's shared chat opening runs once
    (:func:`vauban.runtime.batching.shared_opening`; the residuals agree to float rounding)."""
    device = model_device(model)
    out = torch.empty(0)

    def run(**inputs: Any) -> None:
        with contextlib.suppress(_Enough):
            arch.decoder(model)(**inputs)

    for batch in progress(batches, desc, show_progress):
        seqs = [ids[i] for i in batch]
        most, span = min(map(len, seqs)) - 1, max(map(len, seqs))
        cache, shared = shared_opening(model, seqs, most, span, run) if share else (None, 0)
        input_ids, mask, positions = after_opening(seqs, shared, pad_id(tokenizer), device)
        captured[MASK] = mask
        caching = {} if cache is None else {cache_argument(model): cache}
        run(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=cache is not None,
            **caching,
        )
        rows = torch.stack([captured[layer] for layer in wanted], dim=1)
        if out.numel() == 0:
            shape = (len(ids), *rows.shape[1:])
            out = torch.empty(shape, dtype=rows.dtype, device=device if _fits(shape, device) else "cpu")
        out.index_copy_(0, torch.tensor(batch, device=out.device), rows.to(out.device))
        captured.clear()
    return out


def _fits(shape: tuple[int, ...], device: torch.device) -> bool:
    """Whether the results may wait on an accelerator: at most a tenth of its free memory."""
    if device.type == "cpu":
        return True
    return math.prod(shape) * 4 <= free_memory(device) // 10
