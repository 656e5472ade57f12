"""The inputs of every residual writer on a prompt set: the rows least-squares methods fit on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..model import arch
from ..runtime.activations import model_device
from ..runtime.batching import common_prefix, left_pad, sorted_batches
from ..text.formatting import Formatting
from ..text.prompts import encode_chat, pad_id

MAX_ROWS = 1024  # token rows kept per writer and prompt set (a random subsample beyond)


def writer_module(model: nn.Module, writer: arch.ResidualWriter) -> nn.Module:
    """The linear module whose input is what ``writer``'s weight multiplies."""
    return model.get_submodule(writer.name)


@torch.inference_mode()
def writer_inputs(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    writers: Sequence[arch.ResidualWriter],
    *,
    formatting: Formatting | None = None,
    prompt_set: str | None = None,
    batch_size: int = 16,
    max_rows: int = MAX_ROWS,
    seed: int = 0,
    last: int | None = None,
) -> dict[str, torch.Tensor]:
    """Writer name → ``(rows, in)`` float32 inputs at every token of the chat-formatted prompts
    after their shared template opening (which is the same for every prompt), or only at each
    prompt's ``last`` tokens (the template's closing ones, where the answer is decided), at most
    ``max_rows`` of them (a seeded random subsample)."""
    ids = encode_chat(tokenizer, prompts, formatting, prompt_set)
    skip = min(common_prefix(ids), min(len(x) for x in ids) - 1)
    device = model_device(model)
    kept: dict[str, list[torch.Tensor]] = {w.name: [] for w in writers}
    state: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Any:
        def hook(_module: nn.Module, args: Any) -> None:
            x = args[0]
            kept[name].append(x[state["mask"]].float().cpu())

        return hook

    handles = [writer_module(model, w).register_forward_pre_hook(hook_for(w.name)) for w in writers]
    try:
        for batch in sorted_batches([len(x) for x in ids], batch_size):
            input_ids, mask, positions = left_pad([ids[i] for i in batch], pad_id(tokenizer), device)
            state["mask"] = mask.bool() & (positions >= skip)
            if last is not None:  # left-padded: every prompt ends at the last column
                state["mask"][:, : max(0, mask.shape[1] - last)] = False
            arch.decoder(model)(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False
            )
    finally:
        for handle in handles:
            handle.remove()
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, parts in kept.items():
        rows = torch.cat(parts)
        if rows.shape[0] > max_rows:
            rows = rows[torch.randperm(rows.shape[0], generator=generator)[:max_rows]]
        out[name] = rows
    return out
