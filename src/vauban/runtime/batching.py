"""One batching policy for every forward pass: length-sorted, left-padded, masked.

Sorting by length keeps padding (wasted compute) small; left padding puts every prompt's last
token at position -1, which is where activations are read and where generation continues;
position ids follow the attention mask so absolute-position models (GPT-2) see the same
positions as they would unpadded.

Batch sizes come from arithmetic, not from trying and catching out-of-memory errors: what one
sequence adds to a forward pass (one layer's activations, attention scores, KV cache, vocabulary
logits) from the model's config, against the memory free on its device right now; and no more
tokens per batch than the device needs to keep its matrix units busy, since every extra row of
a length-sorted batch adds padding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psutil
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.progress import progress_off
from ..model.arch import hf

# Tokens per forward pass that keep a device's matrix units busy: past this, a bigger batch is
# no faster per token, only more padded. Demo model on 2 shared CPU cores, 64 prompts of ~45
# tokens: batches of 8 took 160 s, of 32 (1,440 tokens) 115 s, of 64 (2,900 tokens) 140 s. A
# GPU needs tens of thousands of tokens.
SATURATING_TOKENS = {"cpu": 2048, "mps": 8192}
GPU_SATURATING_TOKENS = 65536
MEMORY_SHARE = 0.5  # of the free memory a batch may plan to use (allocator slack, other tensors)
T = TypeVar("T")


def free_memory(device: torch.device) -> int:
    """Bytes that new tensors on ``device`` can take now: the CUDA driver's free memory, Apple's
    recommended working set minus what MPS holds, or the system's available RAM on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class Shape:
    """The sizes a batch's memory depends on, read once from a model's (text) config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    itemsize: int

    @classmethod
    def of(cls, model: nn.Module) -> Shape:
        config = hf(model).config.get_text_config(decoder=True)

        def first(*names: str, default: int = 0) -> int:
            return next((int(v) for n in names if (v := getattr(config, n, None))), default)

        hidden = first("hidden_size", "n_embd", "d_model")
        heads = first("num_attention_heads", "n_head", default=1)
        # MoE: each token runs through its top-k experts' MLPs (plus a shared one, if any)
        experts = first("num_experts_per_tok", "moe_topk", default=1)
        moe = first("moe_intermediate_size") * experts + first("shared_expert_intermediate_size")
        return cls(
            layers=first("num_hidden_layers", "n_layer", default=1),
            hidden=hidden,
            intermediate=moe or first("intermediate_size", "n_inner", default=4 * hidden),
            heads=heads,
            kv_heads=first("num_key_value_heads", default=heads),
            head_dim=first("head_dim", default=hidden // heads),
            vocab=first("vocab_size"),
            itemsize=next(model.parameters()).element_size(),
        )

    def sequence_bytes(
        self, tokens: int, *, cache: bool = False, logit_positions: int = 0, logit_copies: int = 1
    ) -> int:
        """Peak bytes one sequence of ``tokens`` adds to a forward pass.

        Layers run one after another, so activations are one layer's working set (the residual
        stream and norm/attention outputs, ~6 × hidden, and the MLP's gate, up and product,
        3 × intermediate, per token) plus the attention probabilities where a kernel
        materializes them (heads × tokens², float32). A KV cache (generation) keeps every
        layer's keys and values; logits are float32 vocabulary rows, ``logit_copies`` of them
        alive at once (log-softmax, the two sides of a KL, ...).
        """
        activations = tokens * (6 * self.hidden + 3 * self.intermediate) * self.itemsize
        scores = self.heads * tokens * tokens * 4
        kv = tokens * 2 * self.layers * self.kv_heads * self.head_dim * self.itemsize if cache else 0
        logits = logit_positions * self.vocab * 4 * logit_copies
        return activations + scores + kv + logits


def batch_size_for(
    model: nn.Module,
    tokens: int,
    sequences: int,
    *,
    cache: bool = False,
    logit_positions: int = 0,
    logit_copies: int = 1,
    free: int | None = None,
    saturate: bool = True,
) -> int:
    """Sequences of up to ``tokens`` tokens per forward pass: as many as fit in half the free
    memory (``free`` overrides the measurement), at least 1 and at most ``sequences``.

    With ``saturate``, also no more than the device needs to be busy (:data:`SATURATING_TOKENS`;
    a decoding step with a ``cache`` feeds one token per sequence, so generation batches are
    bounded by memory alone: greedy decoding reads the weights once per step whatever the batch,
    and on the demo model, 2 CPU cores, 20 prompts x 64 tokens take 80 s in batches of 8, 32 s
    in one). Pass ``saturate=False`` where every batch carries a fixed cost of its own, such as
    undoing and re-applying a cut. See :meth:`Shape.sequence_bytes` for the other arguments.
    The one batch-size policy: every forward pass of vauban that is not given a batch size asks
    this function.
    """
    device = next(model.parameters()).device
    per_sequence = Shape.of(model).sequence_bytes(
        tokens, cache=cache, logit_positions=logit_positions, logit_copies=logit_copies
    )
    budget = (free_memory(device) if free is None else free) * MEMORY_SHARE
    fits = int(budget // max(per_sequence, 1))
    if saturate:
        busy_tokens = SATURATING_TOKENS.get(device.type, GPU_SATURATING_TOKENS)
        fits = min(fits, busy_tokens // (1 if cache else max(tokens, 1)))
    return max(1, min(sequences, fits))


def token_batches(lengths: Sequence[int], tokens: int) -> list[list[int]]:
    """Indices grouped longest first into batches of at most ``tokens`` padded tokens (at least
    one sequence each): every batch is as large as the budget allows and, since its rows are
    neighbours in length, padded little (256 prompts of 72 to 140 tokens in batches of 4,096
    tokens: 5 % padding; in batches of 64 prompts: 11 %)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * max(lengths[batches[-1][0]], 1) <= tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def forward_tokens(model: nn.Module, longest: int, sequences: int) -> int:
    """Padded tokens per forward pass without a KV cache or logits (residual capture): enough
    to keep the device's matrix units busy (:data:`FORWARD_TOKENS`), no more than fit in memory."""
    device = next(model.parameters()).device
    busy = FORWARD_TOKENS.get(device.type, SATURATING_TOKENS.get(device.type, GPU_SATURATING_TOKENS))
    fits = batch_size_for(model, longest, sequences, saturate=False) * max(longest, 1)
    return max(1, min(busy, fits))


# Tokens per capture batch: on a GPU, matrix products of 8,192 rows run near the bf16 peak while
# the length-sorted batches stay short of padding (benchmarks/results/gpu_NOTES.md).
FORWARD_TOKENS = {"cuda": 8192}


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks early)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)`` for a batch of token id lists."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest opening that every sequence of ``seqs`` shares."""
    first, shortest = seqs[0], min(len(s) for s in seqs)
    for i in range(shortest):
        if any(s[i] != first[i] for s in seqs):
            return i
    return shortest


MIN_OPENING = 8  # tokens a shared opening needs before running it once pays for the extra call


def last_logits(model: nn.Module, seqs: Sequence[Sequence[int]], keep: int, pad_id: int) -> torch.Tensor:
    """``(rows, keep, vocab)`` logits at the last ``keep`` positions of each sequence, as one
    left-padded forward pass gives them, with their shared opening run once.

    Chat-formatted prompts open alike (the template's system block and the user header: 24 of
    the demo model's ~45 tokens per bundled prompt). That opening ``p`` is run once, as one row,
    its keys and values repeated for every row, and only the rest is run per row
    (:func:`shared_opening`, :func:`after_opening`). Each token still attends to exactly what it
    would in the unshared pass; the logits agree to float rounding (1.5e-5 in log-probability
    on the demo model, float32). Differentiable: under autograd the opening is part of the
    graph, run once per call.
    """
    device = next(model.parameters()).device
    most = min(len(s) for s in seqs) - keep
    cache, shared = shared_opening(model, seqs, most, max(len(s) for s in seqs))
    ids, mask, positions = after_opening(seqs, shared, pad_id, device)
    caching = {} if cache is None else {cache_argument(model): cache}
    return model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        logits_to_keep=keep,
        use_cache=cache is not None,
        **caching,
    ).logits[:, -keep:]


def shared_opening(
    model: nn.Module,
    seqs: Sequence[Sequence[int]],
    most: int,
    span: int,
    run: Callable[..., Any] | None = None,
) -> tuple[Any, int]:
    """``(cache, p)``: a ``DynamicCache`` holding ``model``'s keys and values of the first ``p``
    tokens, which every sequence of ``seqs`` shares (at most ``most``), run once as one row by
    ``run`` (default: ``model``, one position of logits) and repeated for every row; or
    ``(None, 0)`` where sharing does not apply: one row, an opening under :data:`MIN_OPENING`
    tokens, or a layer that is not plain keys and values (a layer with a recurrent state, which
    a pad would enter, or a sliding window shorter than ``span`` columns: the pads between
    opening and remainder would push the opening out of the window)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    shared = min(common_prefix(seqs), most) if len(seqs) > 1 else 0
    if shared < MIN_OPENING:
        return None, 0
    cache = DynamicCache(config=hf(model).config)
    if not all(
        type(layer) is DynamicLayer
        or (type(layer) is DynamicSlidingWindowLayer and span <= layer.sliding_window)
        for layer in cache.layers
    ):
        return None, 0
    device = next(model.parameters()).device
    run = functools.partial(model, logits_to_keep=1) if run is None else run
    run(
        input_ids=torch.tensor([list(seqs[0][:shared])], device=device),
        position_ids=torch.arange(shared, device=device)[None],
        use_cache=True,
        **{cache_argument(model): cache},
    )
    cache.batch_repeat_interleave(len(seqs))
    return cache, shared


def after_opening(
    seqs: Sequence[Sequence[int]], shared: int, pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)`` of the rest of each sequence after its
    first ``shared`` tokens, left-padded, the mask covering the opening's columns too and the
    positions continuing at ``shared`` (:func:`left_pad`'s for ``shared`` 0)."""
    ids, mask, positions = left_pad([s[shared:] for s in seqs], pad_id, device)
    mask = torch.cat([mask.new_ones(len(seqs), shared), mask], dim=1)
    return ids, mask, positions + shared


def cache_argument(model: nn.Module) -> str:
    """``cache`` (transformers 5.2x), or ``past_key_values`` where the model's forward takes that."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    return "past_key_values" if "past_key_values" in parameters and "cache" not in parameters else "cache"


def progress(batches: Sequence[T], desc: str, show: bool | None) -> Iterator[T]:
    """A progress bar over batches; ``show=None`` shows it only on a terminal and for >1 batch."""
    disable = (None if len(batches) > 1 else True) if show is None else not show
    disable = True if progress_off() else disable
    yield from tqdm(batches, desc=desc, unit="batch", disable=disable, leave=False)


def duration(seconds: float) -> str:
    """``12m05s``: how long a long run (optimization, refinement) still takes."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"
