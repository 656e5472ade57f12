"""Batched greedy generation: the one place vauban turns prompts into answers.

Greedy decoding makes every comparison (before/after a cut, steered/unsteered) deterministic.
Batches are length-sorted and left-padded, and each row stops at any of the model's end-of-turn
tokens. Two loops produce the same tokens:

- on CPU/MPS, :func:`vauban.runtime.shrinking.greedy`: ``generate``'s step on the rows still
  answering (a row that stopped leaves the batch and its KV cache), where it gives ``generate``'s
  tokens (:func:`vauban.runtime.shrinking.supported`, no thinking budget, no host-side hooks);
  otherwise, and for models the fast loop does not cover, transformers' ``generate``;
- on one CUDA device, :func:`static_greedy` (:mod:`vauban.runtime.fast_decode`): static KV buffers, a
  fixed-shape decode step (one token per row, an explicit 4-D mask over the cache columns)
  through compiled decoder layers, replayed as one CUDA graph. ``generate`` spends most of each
  decode step in Python and kernel launches (an 8B model on an H200 needs ~3.6 ms to read its
  weights, ``generate`` takes ~25 ms a step); a replayed graph costs one launch. All prompts go
  in one batch when their cache fits in free memory, since a step costs about the same for 1 or
  100 rows. Forward hooks that need to see every step on the host (a user's probes, recording
  steering) turn the graph off; steering's own hooks are pure tensor work and stay in it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, StaticCache, StoppingCriteriaList
from transformers.cache_utils import StaticLayer

from ..core.errors import VaubanError, check_int
from ..model.arch import generator, hf
from ..text.formatting import Formatting
from ..text.prompts import check_tokenizer, encode_chat, pad_id
from ..text.reasoning import Decoder, budget, stop_markers
from . import fast_decode, shrinking
from .activations import model_device
from .batching import batch_size_for, left_pad, progress, sorted_batches
from .engines import engine_for

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


def decode_answer(
    tokenizer: Any, tokens: Sequence[int], stops: Sequence[int], formatting: Formatting | None = None
) -> str:
    """The answer text of one row of new token ids from any runtime (transformers, llama.cpp,
    mlx_lm): up to the first stop token, in :mod:`vauban.text.reasoning`'s form, as :func:`generate`
    gives it."""
    return Decoder.make(tokenizer, formatting, stops, max(len(tokens), 1))(tokens)


def check_max_tokens(max_tokens: int) -> int:
    return check_int("max_tokens", max_tokens, 1)


def greedy_config(model: nn.Module, tokenizer: Any, max_tokens: int) -> GenerationConfig:
    """Greedy decoding that stops at any end-of-turn token (for ``model.generate``)."""
    return GenerationConfig(
        do_sample=False,
        max_new_tokens=max_tokens,
        eos_token_id=stop_token_ids(model, tokenizer),
        pad_token_id=pad_id(tokenizer),
    )


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
    compile: bool = False,
) -> list[str]:
    """Greedy answers to chat-formatted ``prompts``, in input order.

    ``formatting`` / ``prompt_set``: how prompts are formatted (:mod:`vauban.text.formatting`). A
    thinking model gets its thinking budget on top of ``max_tokens``, which counts the reply's
    tokens; answers come in :mod:`vauban.text.reasoning`'s form (``<think>…</think>reply``).
    ``compile=True``: the faster, not bit-identical CUDA loop (see :func:`static_greedy`).
    """
    check_max_tokens(max_tokens)
    decoder = Decoder.make(tokenizer, formatting, stop_token_ids(model, tokenizer), max_tokens)
    tokens = generate_tokens(
        model,
        tokenizer,
        prompts,
        max_tokens=max_tokens,
        batch_size=batch_size,
        show_progress=show_progress,
        desc=desc,
        formatting=formatting,
        prompt_set=prompt_set,
        decoder=decoder,
        compile=compile,
    )
    return [decoder(t) for t in tokens]


@torch.inference_mode()
def generate_tokens(
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
    decoder: Decoder | None = None,
    compile: bool = False,
) -> list[list[int]]:
    """The new token ids of each greedy answer, in input order: ``max_tokens`` per answer (plus a
    thinking model's budget), the first stop token included and padding after it. Greedy
    decoding makes a prefix of these the answer a shorter ``max_tokens`` would have given (for a
    model that does not think), so one pass serves every answer length
    (``reasoning.Decoder.make(tokenizer, formatting, stops, n)`` reads the first ``n``)."""
    check_max_tokens(max_tokens)
    check_tokenizer(model, tokenizer)
    device = model_device(model)
    ids = encode_chat(tokenizer, prompts, formatting, prompt_set)
    pad = pad_id(tokenizer)
    stops = stop_token_ids(model, tokenizer)
    decoder = decoder or Decoder.make(tokenizer, formatting, stops, max_tokens)
    new_tokens = max_tokens + budget(tokenizer, formatting)
    engine = engine_for(model)
    if engine is not None:  # vLLM (runtime.engines.attach), in step with the model's weights
        return [(a + [pad] * new_tokens)[:new_tokens] for a in engine.generate(ids, new_tokens, stops)]
    config = greedy_config(model, tokenizer, new_tokens)
    answers: list[list[int]] = [[] for _ in ids]
    fast = device.type == "cuda" and fast_loop_ok(model)
    shrink = not fast and new_tokens == max_tokens and shrinking_ok(model)
    if batch_size is None:
        longest = max((len(x) for x in ids), default=0) + new_tokens
        # a decoding step feeds one token per row: batches are bounded by memory (and the static
        # cache, allocated once for the whole batch, is sized from it too)
        batch_size = batch_size_for(model, longest, len(ids), cache=True, saturate=not fast)
    batches = sorted_batches([len(x) for x in ids], batch_size)
    for batch in progress(batches, desc, show_progress):
        input_ids, mask, _ = left_pad([ids[i] for i in batch], pad, device)
        if fast:
            new = static_greedy(model, input_ids, mask, new_tokens, stops, pad, compile=compile).tolist()
        elif shrink:
            new = shrinking.greedy(model, input_ids, mask, new_tokens, stops, pad).tolist()
        else:
            budget_ = decoder.stopping(input_ids.shape[1]) if new_tokens > max_tokens else None
            out = generator(model).generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([budget_] if budget_ else []),
            )
            new = out[:, input_ids.shape[1] :].tolist()
        for row, index in enumerate(batch):
            answers[index] = new[row]
    return answers


def fast_loop_ok(model: nn.Module) -> bool:
    """Whether :func:`static_greedy` reproduces ``generate`` for this model: greedy decoding is
    the plain argmax (:func:`vauban.runtime.shrinking.plain_argmax`: no logits processor from
    the generation config), every layer keeps a full static cache (no sliding windows, whose
    ring buffers break the column = position layout of the explicit mask) and the weights sit
    on one device."""
    if not shrinking.plain_argmax(model) or len({p.device for p in model.parameters()}) != 1:
        return False
    try:
        cache = StaticCache(config=hf(model).config, max_cache_len=1)
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    return all(type(layer) is StaticLayer for layer in cache.layers)


def shrinking_ok(model: nn.Module) -> bool:
    """Whether the CPU/MPS loop that drops finished rows (:mod:`vauban.runtime.shrinking`) gives
    ``generate``'s tokens: a supported model, and no hook that reads the batch on the host (pure
    tensor hooks, such as steering's, see each row alike however many rows a step has)."""
    return model_device(model).type != "cuda" and shrinking.supported(model) and not _has_hooks(model)


def _has_hooks(model: nn.Module) -> bool:
    """Forward hooks other than transformers' own output recorders (installed for good on the
    first ``output_hidden_states=True`` call, inert unless a call asks for outputs).

    Reads torch's private ``_forward_hooks`` / ``_forward_pre_hooks`` dictionaries (read-only):
    torch has no public way to list a module's hooks, and a user's hook must not be skipped by
    a replayed CUDA graph. With :func:`hook_ids`, the only private torch attributes vauban's
    code reads."""
    hooks = (h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))
    return any(not (getattr(h, "__module__", "").startswith("transformers.") or graph_safe(h)) for h in hooks)


def hook_ids(model: nn.Module) -> tuple[int, ...]:
    """The handle ids of every forward hook and pre-hook on ``model``'s modules and of torch's
    global module hooks, in order: ids are never reused, so two equal tuples mean the same
    hooks (read from the same private dictionaries as :func:`_has_hooks`)."""
    from torch.nn.modules import module as torch_module

    global_hooks = (torch_module._global_forward_hooks, torch_module._global_forward_pre_hooks)
    per_module = (d for m in model.modules() for d in (m._forward_hooks, m._forward_pre_hooks))
    return tuple(key for hooks in (*global_hooks, *per_module) for key in hooks)


def graph_safe(hook: Any) -> bool:
    """Whether a hook is pure tensor work that a replayed CUDA graph may stand in for (marked by
    :func:`mark_graph_safe`): such hooks do not turn the graph off."""
    return bool(getattr(hook, GRAPH_SAFE, False))


GRAPH_SAFE = "_vauban_graph_safe"


def mark_graph_safe(hook: Any) -> Any:
    """Declare that ``hook`` only does tensor work on the device (no host reads, no Python-side
    records), so replaying its kernels from a CUDA graph is the same as calling it."""
    setattr(hook, GRAPH_SAFE, True)
    return hook


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
    compile: fast_decode.Compile = False,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """``(batch, max_tokens)`` greedy continuations of left-padded ``input_ids``.

    Rows that stopped get ``pad`` afterwards, as in ``generate``. ``graph`` (default: on CUDA
    unless a forward hook needs to see every step) replays the decode step as a CUDA graph; the
    tokens are the same either way. :mod:`vauban.runtime.fast_decode` explains the loop.

    ``compile=True`` (CUDA with Triton) runs the decoder layers through ``torch.compile`` and
    prefills in length-sorted chunks of :data:`vauban.runtime.fast_decode.PREFILL_TOKENS` tokens
    (``chunk_tokens`` sets another size, also without compiling): faster, but fused kernels and
    other matrix shapes round differently, so in bfloat16 a near-tie between two tokens can go
    the other way and an answer part from ``generate``'s (see benchmarks/results/gpu_NOTES.md).
    ``compile`` may also name another ``torch.compile`` backend. A model the loop cannot run
    (attention outside transformers' interface, or a generation config that adds a logits
    processor) is generated by ``model.generate``; a model the compiler cannot compile runs
    uncompiled, with a warning.
    """
    device = input_ids.device
    if graph is None:
        graph = device.type == "cuda" and not _has_hooks(model)
    if compile and not isinstance(compile, str) and not callable(compile):
        compile = fast_decode.can_compile(device)
    if chunk_tokens is None:
        chunk_tokens = fast_decode.PREFILL_TOKENS if compile else 2**62  # one chunk: generate's shapes
    run = functools.partial(
        fast_decode.greedy,
        model,
        input_ids,
        mask,
        max_tokens,
        stops,
        pad,
        graph=graph,
        chunk_tokens=chunk_tokens,
    )
    try:
        try:
            return run(compile=compile)
        except (fast_decode.Unsupported, VaubanError, torch.OutOfMemoryError):
            raise
        except Exception as err:
            if not compile:
                raise
            warnings.warn(f"torch.compile failed on this model, generating uncompiled: {err}", stacklevel=3)
            return run(compile=False)
    except fast_decode.Unsupported:
        config = GenerationConfig(
            do_sample=False, max_new_tokens=max_tokens, eos_token_id=list(stops) or None, pad_token_id=pad
        )
        out = generator(model).generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
        new = out[:, input_ids.shape[1] :]
        return torch.nn.functional.pad(new, (0, max_tokens - new.shape[1]), value=pad)
