"""The previous implementations of the paths ``benchmarks/gpu.py`` times, kept for its ablation
rows: the same run measures what each optimization bought.

- :func:`old_static_greedy`: the static-cache loop before the fast decode path (transformers'
  ``StaticCache``, the model's own attention, eager layers, one CUDA graph per call);
- :func:`old_last_token_residuals`: capture in batches of 64 prompts, each copied to the host
  (a wait for the GPU) before the next is launched.

Copied from vauban at commit 601a55b; not part of the package.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import StaticCache

from vauban.model import arch
from vauban.runtime.activations import _Enough, model_device
from vauban.runtime.batching import left_pad, sorted_batches
from vauban.text.prompts import encode_chat, pad_id


@torch.inference_mode()
def old_last_token_residuals(
    model: nn.Module, tokenizer: Any, prompts: Sequence[str], batch_size: int = 64
) -> torch.Tensor:
    blocks = arch.decoder_layers(model)
    wanted = list(range(len(blocks)))
    device = model_device(model)
    ids = encode_chat(tokenizer, prompts)
    out = torch.empty(len(ids), len(wanted), arch.d_model(model), dtype=torch.float32)
    captured: dict[int, torch.Tensor] = {}
    last = max(wanted)

    def hook_for(layer: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            captured[layer] = arch.layer_hidden(output)[:, -1, :].float().to(device)
            if layer == last:
                raise _Enough

        return hook

    handles = [blocks[i].register_forward_hook(hook_for(i)) for i in set(wanted)]
    try:
        for batch in sorted_batches([len(x) for x in ids], batch_size):
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


@torch.inference_mode()
def old_static_greedy(
    model: nn.Module,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    max_tokens: int,
    stops: Sequence[int],
    pad: int,
    *,
    graph: bool | None = None,
) -> torch.Tensor:
    """``(batch, max_tokens)`` greedy continuations of left-padded ``input_ids``.

    Cache column ``j`` holds the token fed at step ``j``; a row attends to the columns where it
    had real tokens, so left padding never leaks in. Rows that stopped get ``pad`` afterwards,
    as in ``generate``. ``graph`` (default: on CUDA without forward hooks) replays the decode
    step as a CUDA graph; the tokens are the same either way.
    """
    rows, width = input_ids.shape
    device = input_ids.device
    dtype = next(model.parameters()).dtype
    if graph is None:
        graph = device.type == "cuda"
    length = width + max_tokens
    cache = StaticCache(config=model.config, max_cache_len=length)
    keys = torch.zeros(rows, length, dtype=torch.bool, device=device)
    keys[:, :width] = mask.bool()
    # prefill: causal over the prompt, pads excluded; a pad row attends to itself so it stays
    # finite (its values are never attended to by real rows)
    column = torch.arange(length, device=device)
    allowed = (column[None, :] <= torch.arange(width, device=device)[:, None]) & keys[:, None, :]
    allowed |= column[None, None, :] == torch.arange(width, device=device)[None, :, None]
    lowest = torch.finfo(dtype).min
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids,
        attention_mask=_additive(allowed[:, None], lowest, dtype),
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits
    stop_ids = torch.tensor(sorted(set(stops)) or [-1], device=device)
    state = _DecodeState(
        token=logits[:, -1].argmax(-1, keepdim=True),
        position=positions[:, -1:] + 1,
        keys=keys,
        column=torch.tensor([width], device=device),
        out=torch.full((rows, max_tokens), pad, dtype=torch.long, device=device),
        done=torch.zeros(rows, dtype=torch.bool, device=device),
    )
    state.record(0, stop_ids, pad)

    def step() -> None:
        state.keys.index_fill_(1, state.column, True)
        logits = model(
            input_ids=state.token,
            attention_mask=_additive(state.keys[:, None, None, :], lowest, dtype),
            position_ids=state.position,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits
        state.token.copy_(logits[:, -1].argmax(-1, keepdim=True))
        state.position.add_(1)
        state.column.add_(1)
        state.record(state.column - width, stop_ids, pad)

    replay = None
    for _ in range(1, max_tokens):
        if bool(state.done.all()):
            break
        if replay is not None:
            replay()
        elif graph:
            replay = _step_then_capture(step)
        else:
            step()
    return state.out


def _additive(allowed: torch.Tensor, lowest: float, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as the additive float mask that both eager and SDPA attention accept."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, lowest)


class _DecodeState:
    """The tensors a decode step reads and writes in place (fixed addresses for graph replay)."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.__dict__.update(tensors)

    def record(self, index: torch.Tensor | int, stop_ids: torch.Tensor, pad: int) -> None:
        """Store this step's tokens (``pad`` for rows already stopped) and mark new stops."""
        token = self.token.squeeze(-1).masked_fill(self.done, pad)
        at = torch.as_tensor(index, device=token.device).reshape(1)
        self.out.index_copy_(1, at, token[:, None])
        self.done |= (token[:, None] == stop_ids).any(-1)


def _step_then_capture(step: Any) -> Any:
    """Run ``step`` for real on a side stream (the warm-up CUDA graphs need), then capture it.

    Capture only records, so a model whose forward cannot be captured (a host sync somewhere)
    loses nothing but speed: the loop goes on with the eager step.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    cuda_graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(cuda_graph):
            step()
    except RuntimeError as err:
        warnings.warn(f"decode step not capturable as a CUDA graph, running it eagerly: {err}", stacklevel=3)
        return step
    return cuda_graph.replay
