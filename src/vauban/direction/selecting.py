"""Choose the refusal direction by what removing it does, not by how it looks.

:func:`vauban.direction.measuring.measure` gives one candidate direction per layer ``l`` (the
difference in means ``u_l``). Which one to cut? Its geometric score (cosine separation) is a
proxy; the quantity that matters is the effect of the cut. So, as Arditi et al. (2024, §2.3 and
appendix C) do, candidates are *ablated* and measured, with forward passes only:

- **refusal score** ``r_l``: the mean probability that the model, cut along ``u_l`` (the same
  weight edit an export gets: every attention and MLP writer orthogonalized), still opens its
  answer with the original model's own refusal, teacher-forced over its first ``tokens`` tokens
  (:func:`vauban.runtime.scoring.refusal_likelihood`), on *held-back* harmful prompts the original
  refuses. Arditi et al. score the log-odds of a few hand-picked refusal tokens at the first
  position; the model's own refusal text generalizes those tokens to any model and language,
  and covers an answer that starts neutrally and refuses a few tokens later;
- **damage** ``k_l``: the first-token KL(original ‖ cut) on held-back harmless prompts.

The chosen layer is ``argmin r_l`` over candidates with ``k_l ≤ max_kl`` (ties: lower KL),
and among all candidates the lowest-KL one when none passes.

Which candidates: layers in ``[first, last)`` of the depth (defaults ``0.2`` and ``0.8``) —
the last fifth is excluded, as Arditi et al. do, because a direction read off just before the
unembedding encodes the next token more than the decision to refuse, and cutting it there
scores well on refusal by wrecking the output; the first fifth because directions that early
still encode the prompts' surface (their words, not yet the request). Of those, only the
``top`` (3) with the best geometric score *and their neighbours* are cut: the geometry is a
good proxy for *where* the direction lives, but not for *which* of the nearby layers cuts
best, and the neighbours cover that (what this looked like on the demo model:
docs/benchmarks.md, "Layer selection"). A full scan is ``layers=layer_range(L)``.

Which prompts: a quarter of each prompt set given to ``measure``, at most :data:`MAX_HELD`,
is held back for this (the direction is the mean difference over the rest), so the choice is
made on prompts the direction was not measured on, and on none that ``evaluate`` reports on
(the bundled eval prompts) or that ``optimize`` searches and checks on (eval prompts 20-99).
With the bundled sets: directions from harmful/harmless prompts 0-103, selection on 104-127.

Cost: one short greedy answer of the original per held-back harmful prompt (to learn its
refusals), then per candidate one weight edit (undone bit-exactly) and one prefill of each
held-back prompt, whose shared chat-template opening is run once per batch
(:func:`vauban.runtime.batching.last_logits`). Measured seconds: docs/benchmarks.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core.errors import VaubanError

if TYPE_CHECKING:  # torch is imported on first use, so settings can be checked without it
    from torch import nn

    from .results import DirectionResult, LayerEffect

SELECT_MODES = ("effect", "geometry")
HOLD_BACK = 0.25  # share of each prompt set kept for the selection
MAX_HELD = 24  # held-back prompts per set at most (the cost of each candidate grows with them)
TOP = 3  # geometric best layers whose neighbourhoods are cut
MIN_PROMPTS = 8  # below this many harmful prompts nothing is held back: geometric choice
MAX_KL = 0.2  # first-token KL above which a candidate is not acceptable (see measure docstring)
FIRST, LAST = 0.2, 0.8  # candidate layers: [FIRST·L, LAST·L)
ANSWER_TOKENS = 16  # the original's answers judged to find its refusals
REFUSAL_TOKENS = 8  # of which this many are teacher-forced


def check_select(select: Any) -> str:
    if select not in SELECT_MODES:
        raise VaubanError(f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}")
    return str(select)


def split(
    prompts: Sequence[str], share: float = HOLD_BACK, most: int = MAX_HELD
) -> tuple[list[str], list[str]]:
    """``(measured, held back)``: the last ``share`` of ``prompts`` (at least one, at most
    ``most``) is held back."""
    held = min(max(1, round(len(prompts) * share)), most)
    return list(prompts[:-held]), list(prompts[-held:])


def layer_range(num_layers: int, first: float = FIRST, last: float = LAST) -> list[int]:
    """Layers ``i`` with ``first·L ≤ i < ⌊last·L⌋``; never empty (the middle layer when the
    range is)."""
    layers = [i for i in range(num_layers) if first * num_layers <= i < int(last * num_layers)]
    return layers or [num_layers // 2]


def candidate_layers(
    scores: Sequence[float], top: int = TOP, first: float = FIRST, last: float = LAST
) -> list[int]:
    """The layers to cut: within :func:`layer_range`, the ``top`` best-scoring ones and their
    neighbours (see the module docstring), in order."""
    allowed = layer_range(len(scores), first, last)
    best = sorted(allowed, key=lambda i: -scores[i])[:top]
    return sorted({j for i in best for j in (i - 1, i, i + 1)} & set(allowed))


def layer_effects(
    model: nn.Module,
    tokenizer: Any,
    direction: DirectionResult,
    refusals: Sequence[tuple[str, str]],
    harmless: Sequence[str],
    layers: Sequence[int],
    *,
    tokens: int = REFUSAL_TOKENS,
    batch_size: int | None = None,
    log: Any = None,
    cutting: Any = None,
) -> tuple[LayerEffect, ...]:
    """Refusal score and first-token KL of cutting each of ``layers``' directions (see the
    module docstring); ``refusals`` pairs held-back harmful prompts with the original's own
    refusals of them. The model ends unchanged. ``cutting(model, direction)``: the cut as a
    context manager (default :func:`vauban.edit.cutting.cut`; a model run one layer at a time
    cuts each layer as it is read, :mod:`vauban.direction.streamed`)."""
    from ..edit.cutting import cut
    from ..runtime.scoring import first_token_logprobs, kl_divergence, refusal_likelihood
    from .results import LayerEffect

    cut = cutting or cut

    directions = direction.layer_directions()
    fmt = direction.formatting  # the prompts are formatted as they were for the measurement
    base = first_token_logprobs(model, tokenizer, harmless, batch_size, fmt)
    effects = []
    for layer in layers:
        with cut(model, directions[layer]):
            kl = kl_divergence(base, first_token_logprobs(model, tokenizer, harmless, batch_size, fmt))
            score = refusal_likelihood(model, tokenizer, refusals, tokens, batch_size, fmt)
        effects.append(LayerEffect(layer, score, kl))
        if log is not None:
            log(f"layer {layer}: refusal score {score:.3e}, first-token KL {kl:.4f}")
    return tuple(effects)


def choose(effects: Sequence[LayerEffect], max_kl: float = MAX_KL) -> LayerEffect:
    """The lowest refusal score among candidates with KL ≤ ``max_kl`` (ties: lower KL, then
    lower layer); the lowest-KL candidate when none is acceptable."""
    if not effects:
        raise VaubanError("no candidate layers to choose from")
    acceptable = [e for e in effects if e.kl <= max_kl]
    if not acceptable:
        return min(effects, key=lambda e: (e.kl, e.layer))
    return min(acceptable, key=lambda e: (e.refusal, e.kl, e.layer))


def original_refusals(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int | None = None,
    formatting: Any = None,
) -> list[tuple[str, str]]:
    """``(prompt, answer)`` for the prompts the original model refuses (short greedy answers,
    the default judge)."""
    from ..judge.answers import completions

    answers = completions(
        model,
        tokenizer,
        prompts,
        max_tokens=ANSWER_TOKENS,
        batch_size=batch_size,
        formatting=formatting,
        prompt_set="harmful",
    )
    return [(a.prompt, a.text) for a in answers if a.refused]


def select_by_effect(
    model: nn.Module,
    tokenizer: Any,
    direction: DirectionResult,
    refusals: Sequence[tuple[str, str]],
    harmless: Sequence[str],
    *,
    max_kl: float = MAX_KL,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    log: Any = None,
    cutting: Any = None,
) -> DirectionResult:
    """``direction`` moved to the candidate layer whose cut works best (:func:`choose`) against
    ``refusals`` (held-back harmful prompts with the original's refusals, see
    :func:`original_refusals`) and ``harmless`` prompts, every candidate's effect recorded;
    unchanged (the geometric choice, with a warning) when there are no refusals to remove."""
    if isinstance(max_kl, bool) or not isinstance(max_kl, (int, float)) or not max_kl > 0:
        raise VaubanError(f"max_kl must be a positive number, got {max_kl!r}")
    if not refusals:
        warnings.warn(
            "the model refuses none of the held-back harmful prompts, so no cut can be "
            "measured by its effect; the direction is chosen by geometry",
            stacklevel=3,
        )
        return direction
    candidates = candidate_layers(direction.cosine_scores) if layers is None else list(layers)
    effects = layer_effects(
        model,
        tokenizer,
        direction,
        refusals,
        harmless,
        candidates,
        batch_size=batch_size,
        log=log,
        cutting=cutting,
    )
    best = choose(effects, max_kl)
    return direction.at_layer(best.layer, selection="effect", effects=effects, max_kl=float(max_kl))
