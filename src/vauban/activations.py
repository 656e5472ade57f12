"""Read the residual stream at the last prompt token after every decoder layer.

Forward hooks on the decoder layers (not ``output_hidden_states``, whose last entry already has
the final norm applied), run on the decoder alone so no vocabulary-sized logits are computed,
stopping as soon as the deepest requested layer has run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from . import arch
from .batching import default_batch_size, left_pad, progress, sorted_batches
from .formatting import Formatting
from .prompts import check_tokenizer, encode_chat, pad_id


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
) -> torch.Tensor:
    """Float32 tensor ``(len(prompts), len(layers), d_model)`` on the CPU.

    ``layers`` defaults to every decoder layer; entry ``[i, j]`` is the residual stream after
    layer ``layers[j]`` at the last token of the chat-formatted prompt ``i`` (formatted with
    ``formatting``, and the system prompt of ``prompt_set``: see :mod:`vauban.formatting`).
    """
    check_tokenizer(model, tokenizer)
    blocks = arch.decoder_layers(model)
    wanted = list(range(len(blocks))) if layers is None else list(layers)
    device = model_device(model)
    ids = encode_chat(tokenizer, prompts, formatting, prompt_set)
    out = torch.empty(len(ids), len(wanted), arch.d_model(model), dtype=torch.float32)
    captured: dict[int, torch.Tensor] = {}
    last = max(wanted)

    def hook_for(layer: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            # layers of a model split over devices (device_map) answer on their own device
            captured[layer] = arch.layer_hidden(output)[:, -1, :].float().to(device)
            if layer == last:
                raise _Enough

        return hook

    handles = [blocks[i].register_forward_hook(hook_for(i)) for i in set(wanted)]
    try:
        batches = sorted_batches([len(x) for x in ids], batch_size or default_batch_size(device))
        for batch in progress(batches, desc, show_progress):
            input_ids, mask, positions = left_pad([ids[i] for i in batch], pad_id(tokenizer), device)
            with contextlib.suppress(_Enough):
                arch.decoder(model)(
                    input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False
                )
            out[batch] = torch.stack([captured[layer] for layer in wanted], dim=1).cpu()
            captured.clear()
    finally:
        for handle in handles:
            handle.remove()
    return out
