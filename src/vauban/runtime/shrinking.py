"""Greedy decoding that drops finished rows: the CPU (and MPS) loop of :mod:`vauban.runtime.generating`.

``model.generate`` computes every row of a batch until the last row stops: a refusal that ends
in 12 tokens keeps costing a full row of every later step (on the demo model, 40 % of the
bundled evaluation prompts are refused that early, the rest answer for 128 tokens). Here, a row
that emits a stop token leaves the batch, and its keys and values leave transformers' own
``DynamicCache`` with it (``batch_select_indices``), so each step computes only the rows still
answering.

Each step is the computation ``generate`` does for those rows: the same ``DynamicCache``, the
same 2-D attention mask grown by one column a step, the same position ids (the mask's running
count), float32 logits and their argmax. Only the number of rows in a step differs, which the
per-row arithmetic does not see; the tests compare the tokens with ``generate``'s. Used where
that holds: the model's generation config adds no logits processor (a repetition penalty, banned
words, ...), every cache layer is plain keys and values, and no hook reads the batch on the host.
Speed: ``benchmarks/shrinking_demo.py`` (``benchmarks/results/shrinking_demo_cpu.json``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from ..model.arch import hf
from .batching import cache_argument

# Generation-config fields that do not change which token greedy decoding picks (sampling
# knobs are ignored with ``do_sample=False``); any other field set on the model's own config
# may add a logits processor, and sends generation through ``generate``.
NEUTRAL_FIELDS = frozenset(
    {
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "decoder_start_token_id",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "typical_p",
        "epsilon_cutoff",
        "eta_cutoff",
        "max_length",
        "max_new_tokens",
        "use_cache",
        "cache_implementation",
        "output_attentions",
        "output_hidden_states",
        "output_scores",
        "output_logits",
        "return_dict_in_generate",
        "length_penalty",
        "transformers_version",
        "_from_model_config",
    }
)
# ... and fields that are neutral at these values (model configs often spell the default out)
NEUTRAL_VALUES = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "num_beams": 1, "min_length": 0}
_ANY = object()  # equal to no value


def supported(model: nn.Module) -> bool:
    """Whether :func:`greedy` gives ``generate``'s tokens for ``model``: its generation config
    sets only :data:`NEUTRAL_FIELDS` (or :data:`NEUTRAL_VALUES`), and every cache layer is a
    plain (or sliding-window) key and value layer, whose rows ``batch_select_indices`` selects."""
    config = getattr(model, "generation_config", None)
    fields = config.to_diff_dict() if config is not None else {}
    if any(k not in NEUTRAL_FIELDS and NEUTRAL_VALUES.get(k, _ANY) != v for k, v in fields.items()):
        return False
    try:
        cache = DynamicCache(config=hf(model).config)
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    return bool(cache.layers) and all(
        type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in cache.layers
    )


@torch.inference_mode()
def greedy(
    model: nn.Module,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    max_tokens: int,
    stops: Sequence[int],
    pad: int,
) -> torch.Tensor:
    """``(rows, max_tokens)`` greedy continuations of left-padded ``input_ids``, each row up to
    and including its first stop token and ``pad`` after it, as ``generate`` gives them."""
    device = input_ids.device
    out = torch.full((input_ids.shape[0], max_tokens), pad, dtype=torch.long, device=device)
    stop_ids = torch.tensor(sorted(set(stops)) or [-1], device=device)
    cache = DynamicCache(config=hf(model).config)
    name = cache_argument(model)
    alive = torch.arange(input_ids.shape[0], device=device)  # the input row of each batch row
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    ids = input_ids
    for step in range(max_tokens):
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{name: cache},
        ).logits[:, -1]
        token = logits.to(torch.float32).argmax(-1)
        out[alive, step] = token
        going = ~torch.isin(token, stop_ids)
        if not bool(going.all()):
            if not bool(going.any()):
                break
            keep = going.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            alive, token, mask, positions = alive[keep], token[keep], mask[keep], positions[keep]
        ids = token[:, None]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        positions = positions[:, -1:] + 1
    return out
