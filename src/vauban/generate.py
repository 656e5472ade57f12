"""Batched greedy generation: the one place vauban turns prompts into answers.

Greedy decoding makes every comparison (before/after a cut, steered/unsteered) deterministic.
Batches are length-sorted and left-padded, and each row stops at any of the model's end-of-turn
tokens. Two loops produce the same tokens:

- on CPU/MPS, and for models the fast loop does not cover, transformers' ``generate``;
- on one CUDA device, :func:`static_greedy`: a static KV cache and a fixed-shape decode step
  (one token per row, an explicit 4-D mask over the cache columns), replayed as one CUDA graph.
  ``generate`` spends most of each decode step in Python and kernel launches (an 8B model on an
  H100 needs ~5 ms to read its weights, ``generate`` takes ~30 ms a step); a replayed graph
  costs one launch. All prompts go in one batch when their cache fits in free memory, since a
  step costs about the same for 1 or 100 rows. With forward hooks installed (steering, a user's
  probes) the same loop runs without the graph, so hooks see every step as usual.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, StaticCache, StoppingCriteriaList
from transformers.cache_utils import StaticLayer

from .activations import model_device
from .batching import batch_size_for, default_batch_size, left_pad, progress, sorted_batches
from .errors import VaubanError
from .formatting import Formatting
from .prompts import check_tokenizer, encode_chat, pad_id
from .reasoning import Decoder, budget, stop_markers

# End-of-turn markers of common chat templates; whichever exist in a vocabulary also stop.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


def stop_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """Every token id that ends an answer: config EOS ids, the tokenizer's, and chat markers."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    stop, never = stop_markers(tokenizer)  # <|end|> ends GPT-OSS's analysis, not its answer
    ids.update(vocab[t] for t in (*_END_OF_TURN, *stop) if t in vocab and t not in never)
    ids.difference_update(vocab[t] for t in never if t in vocab)
    return sorted(ids)


def check_max_tokens(max_tokens: int) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
        raise VaubanError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    return max_tokens


def greedy_config(model: nn.Module, tokenizer: Any, max_tokens: int) -> GenerationConfig:
    """Greedy decoding that stops at any end-of-turn token (for ``model.generate``)."""
    return GenerationConfig(do_sample=False, max_new_tokens=max_tokens,
                            eos_token_id=stop_token_ids(model, tokenizer), pad_token_id=pad_id(tokenizer))


@torch.inference_mode()
def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_tokens: int = 64,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    desc: str = "generate",
    formatting: Formatting | None = None,
    prompt_set: str | None = None,
) -> list[str]:
    """Greedy answers to chat-formatted ``prompts``, in input order.

    ``formatting`` / ``prompt_set``: how prompts are formatted (:mod:`vauban.formatting`). A
    thinking model gets its thinking budget on top of ``max_tokens``, which counts the reply's
    tokens; answers come in :mod:`vauban.reasoning`'s form (``<think>…</think>reply``).
    """
    check_max_tokens(max_tokens)
    check_tokenizer(model, tokenizer)
    device = model_device(model)
    ids = encode_chat(tokenizer, prompts, formatting, prompt_set)
    pad = pad_id(tokenizer)
    stops = stop_token_ids(model, tokenizer)
    decoder = Decoder.make(tokenizer, formatting, stops, max_tokens)
    new_tokens = max_tokens + budget(tokenizer, formatting)
    config = greedy_config(model, tokenizer, new_tokens)
    answers: list[str] = [""] * len(ids)
    fast = device.type == "cuda" and fast_loop_ok(model)
    if batch_size is None:
        longest = max((len(x) for x in ids), default=0) + new_tokens
        # the static cache is allocated once for the whole batch: size it from free memory
        batch_size = (batch_size_for(model, longest, len(ids), cache=True, saturate=False) if fast
                      else default_batch_size(device))
    batches = sorted_batches([len(x) for x in ids], batch_size)
    for batch in progress(batches, desc, show_progress):
        input_ids, mask, _ = left_pad([ids[i] for i in batch], pad, device)
        if fast:
            new = static_greedy(model, input_ids, mask, new_tokens, stops, pad).tolist()
        else:
            budget_ = decoder.stopping(input_ids.shape[1]) if new_tokens > max_tokens else None
            out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config,
                                 stopping_criteria=StoppingCriteriaList([budget_] if budget_ else []))
            new = out[:, input_ids.shape[1] :].tolist()
        for row, index in enumerate(batch):
            answers[index] = decoder(new[row])
    return answers


def fast_loop_ok(model: nn.Module) -> bool:
    """Whether :func:`static_greedy` reproduces ``generate`` for this model: every layer keeps a
    full static cache (no sliding windows, whose ring buffers break the column = position
    layout of the explicit mask) and the weights sit on one device."""
    if len({p.device for p in model.parameters()}) != 1:
        return False
    try:
        cache = StaticCache(config=model.config, max_cache_len=1)
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    return all(type(layer) is StaticLayer for layer in cache.layers)


def _has_hooks(model: nn.Module) -> bool:
    """Forward hooks other than transformers' own output recorders (installed for good on the
    first ``output_hidden_states=True`` call, inert unless a call asks for outputs)."""
    hooks = (h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))
    return any(not getattr(h, "__module__", "").startswith("transformers.") for h in hooks)


@torch.inference_mode()
def static_greedy(
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
        graph = device.type == "cuda" and not _has_hooks(model)
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
        input_ids=input_ids, attention_mask=_additive(allowed[:, None], lowest, dtype),
        position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1,
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
            input_ids=state.token, attention_mask=_additive(state.keys[:, None, None, :], lowest, dtype),
            position_ids=state.position, cache=cache, use_cache=True, logits_to_keep=1,
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
