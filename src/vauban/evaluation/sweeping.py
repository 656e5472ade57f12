"""The tutorial's exercises as calls that return data: alpha sweeps for cutting and steering,
and comparisons of directions measured from different prompt sets.

An alpha sweep needs one model in memory: each alpha is a reversible cut, evaluated against
the original obtained by undoing it, and the original's answers are generated once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..edit.cutting import cut
from .evaluating import DEFAULT_MAX_TOKENS, Pair, answer_scores, completions, default_eval_prompts
from ..text.formatting import Formatting, formatting_for
from ..runtime.generating import check_max_tokens
from ..judge import Judge, get_judge
from ..text.prompts import Prompts, load_pairs, load_prompts
from .sweeping import AlphaSweep, SteerSweep, SweepRow
from ..direction.results import DirectionResult
from ..core.errors import check_alpha
from ..edit.vectors import unit_vector
from ..methods.steering import steer


def alpha_sweep(
    model: nn.Module,
    tokenizer: Any,
    direction: DirectionResult | torch.Tensor,
    alphas: Sequence[float] = (0.5, 1.0, 2.0),
    *,
    prompts: Prompts | None = None,
    reference: str | Sequence[tuple[str, str]] = "reference",
    max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int | None = None,
    judge: str | Judge | None = None,
    formatting: Formatting | None = None,
) -> AlphaSweep:
    """Cut at each alpha, evaluate refusal/perplexity/KL against the uncut model, undo;
    ``judge`` counts the refusals (default: markers); prompts are formatted with ``formatting``
    over the direction's own."""
    formatting = formatting_for(direction, formatting)
    alphas = [check_alpha(a) for a in alphas]
    check_max_tokens(max_tokens)
    judge = get_judge(judge)
    harmful = default_eval_prompts() if prompts is None else load_prompts(prompts, what="eval prompts")
    pairs = load_pairs(reference)
    before = completions(model, tokenizer, harmful, max_tokens=max_tokens, batch_size=batch_size, judge=judge,
                         formatting=formatting)
    rows = []
    perplexity_before = float("nan")
    for alpha in alphas:
        with cut(model, direction, alpha=alpha):
            after = completions(model, tokenizer, harmful, max_tokens=max_tokens, batch_size=batch_size,
                                judge=judge, formatting=formatting)
            scores = answer_scores(Pair(model, model), tokenizer, pairs, batch_size=batch_size,
                                   formatting=formatting)
        perplexity_before = scores.perplexity_before
        rows.append(SweepRow(alpha, sum(c.refused for c in after) / len(after),
                             scores.perplexity_after, scores.kl, scores.first_token_kl))
    return AlphaSweep(
        refusal_before=sum(c.refused for c in before) / len(before),
        perplexity_before=perplexity_before,
        rows=tuple(rows),
        n_prompts=len(harmful),
        judge=judge.spec,
    )


def steer_sweep(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    direction: DirectionResult | torch.Tensor,
    alphas: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    *,
    max_tokens: int = 100,
    judge: str | Judge | None = None,
    formatting: Formatting | None = None,
) -> SteerSweep:
    """Steer one prompt at each alpha: where does the model first comply, where does it break?"""
    judge = get_judge(judge)
    return SteerSweep(tuple(
        steer(model, tokenizer, prompt, direction, a, max_tokens=max_tokens, judge=judge,
              formatting=formatting) for a in alphas
    ))


def direction_similarity(a: DirectionResult, b: DirectionResult) -> dict[str, Any]:
    """How alike two measured directions are (e.g. default vs domain-specific prompt sets).

    ``cosine`` compares the two chosen directions; ``per_layer`` compares the directions of
    every layer, which tells whether the sets disagree everywhere or only in layer choice.
    """
    cosine = float(unit_vector(a, a.d_model) @ unit_vector(b, a.d_model))
    per_layer = (a.layer_directions() * b.layer_directions()).sum(-1)
    return {
        "cosine": cosine,
        "layers": (a.layer_index, b.layer_index),
        "per_layer": [float(x) for x in per_layer],
    }
