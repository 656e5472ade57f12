"""Batched greedy generation: the one place vauban turns prompts into answers.

Greedy decoding makes every comparison (before/after a cut, steered/unsteered) deterministic.
Batches are length-sorted and left-padded; transformers' ``generate`` handles the KV cache and
derives positions from the attention mask, and stops each row at any of the model's
end-of-turn tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig

from .activations import model_device
from .batching import default_batch_size, left_pad, progress, sorted_batches
from .errors import VaubanError
from .prompts import check_tokenizer, encode_chat, pad_id

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
    ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
    return sorted(ids)


def check_max_tokens(max_tokens: int) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
        raise VaubanError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    return max_tokens


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
) -> list[str]:
    """Greedy answers to chat-formatted ``prompts``, in input order."""
    check_max_tokens(max_tokens)
    check_tokenizer(model, tokenizer)
    device = model_device(model)
    ids = encode_chat(tokenizer, prompts)
    pad = pad_id(tokenizer)
    stops = stop_token_ids(model, tokenizer)
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_tokens,
        eos_token_id=stops,
        pad_token_id=pad,
    )
    answers: list[str] = [""] * len(ids)
    batches = sorted_batches([len(x) for x in ids], batch_size or default_batch_size(device))
    for batch in progress(batches, desc, show_progress):
        input_ids, mask, _ = left_pad([ids[i] for i in batch], pad, device)
        out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
        for row, index in enumerate(batch):
            answers[index] = decode_answer(tokenizer, out[row, input_ids.shape[1] :].tolist(), stops)
    return answers


def decode_answer(tokenizer: Any, new_tokens: list[int], stops: Sequence[int]) -> str:
    """Text of the generated tokens up to the first stop token."""
    end = next((i for i, t in enumerate(new_tokens) if t in stops), len(new_tokens))
    return tokenizer.decode(new_tokens[:end], skip_special_tokens=True).strip()
