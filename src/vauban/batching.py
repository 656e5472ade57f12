"""One batching policy for every forward pass: length-sorted, left-padded, masked.

Sorting by length keeps padding (wasted compute) small; left padding puts every prompt's last
token at position -1, which is where activations are read and where generation continues;
position ids follow the attention mask so absolute-position models (GPT-2) see the same
positions as they would unpadded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm


def default_batch_size(device: torch.device) -> int:
    """Prompts per forward pass. Greedy decoding is bound by reading the weights once per step,
    so larger batches amortize that read (on the demo model, 2 CPU cores: 20 prompts x 64
    tokens take 80 s in batches of 8, 32 s in one batch)."""
    return 32 if device.type == "cpu" else 64


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


QUIET = False  # set by the CLI's --quiet: no progress bars anywhere


def progress(batches: list[list[int]], desc: str, show: bool | None) -> Iterator[list[int]]:
    """A progress bar over batches; ``show=None`` shows it only on a terminal and for >1 batch."""
    disable = (None if len(batches) > 1 else True) if show is None else not show
    disable = True if QUIET else disable
    yield from tqdm(batches, desc=desc, unit="batch", disable=disable, leave=False)
