"""The tutorial's exercises as calls that return data: alpha sweeps for cutting and steering,
and comparisons of directions measured from different prompt sets.

An alpha sweep needs one model in memory: each alpha is a reversible cut, evaluated against
the original obtained by undoing it, and the original's answers are generated once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.errors import check_alpha
from ..direction.results import DirectionResult
from ..edit.cutting import cut
from ..edit.vectors import unit_vector
from ..judge import Judge, get_judge
from ..judge.answers import completions
from ..methods.steering import SteerResult, steer
from ..runtime.generating import check_max_tokens
from ..text.formatting import Formatting, formatting_for
from ..text.prompts import Prompts, load_pairs, load_prompts
from .evaluating import DEFAULT_MAX_TOKENS, Pair, answer_scores, default_eval_prompts
from .results import percent


@dataclass(frozen=True)
class SweepRow:
    """One alpha of an alpha sweep (the modified side; the original is in the sweep)."""

    alpha: float
    refusal: float
    perplexity: float
    kl: float
    first_token_kl: float


@dataclass(frozen=True)
class AlphaSweep:
    """Cut at several alphas, evaluated against the same original; ``judge`` counted the refusals."""

    refusal_before: float
    perplexity_before: float
    rows: tuple[SweepRow, ...]
    n_prompts: int
    judge: str = "markers"

    def table(self) -> str:
        lines = [
            "alpha  refusal  perplexity  kl      first_token_kl",
            f"  0    {percent(self.refusal_before):>7}  {self.perplexity_before:10.2f}  {0.0:.4f}  {0.0:.4f}",
        ]
        lines += [
            f"{r.alpha:5.2f}  {percent(r.refusal):>7}  {r.perplexity:10.2f}  {r.kl:.4f}  "
            f"{r.first_token_kl:.4f}"
            for r in self.rows
        ]
        return "\n".join(lines)

    def summary(self) -> str:
        cells = ", ".join(f"α={r.alpha:g}: {percent(r.refusal)}/{r.perplexity:.2f}" for r in self.rows)
        return (
            f"AlphaSweep: refusal/perplexity before {percent(self.refusal_before)}/"
            f"{self.perplexity_before:.2f}; {cells}; prompts={self.n_prompts}"
        )


@dataclass(frozen=True)
class SteerSweep:
    """One prompt steered at several alphas."""

    results: tuple[SteerResult, ...]

    @property
    def first_compliant_alpha(self) -> float | None:
        """The smallest alpha whose answer is not a refusal (None if all refuse)."""
        return next((r.alpha for r in sorted(self.results, key=lambda r: r.alpha) if not r.refused), None)

    def summary(self) -> str:
        cells = ", ".join(f"α={r.alpha:g}: {'refused' if r.refused else 'answered'}" for r in self.results)
        return f"SteerSweep: {cells}; first compliant alpha={self.first_compliant_alpha}"


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
    before = completions(
        model,
        tokenizer,
        harmful,
        max_tokens=max_tokens,
        batch_size=batch_size,
        judge=judge,
        formatting=formatting,
    )
    rows = []
    perplexity_before = float("nan")
    for alpha in alphas:
        with cut(model, direction, alpha=alpha):
            after = completions(
                model,
                tokenizer,
                harmful,
                max_tokens=max_tokens,
                batch_size=batch_size,
                judge=judge,
                formatting=formatting,
            )
            scores = answer_scores(
                Pair(model, model), tokenizer, pairs, batch_size=batch_size, formatting=formatting
            )
        perplexity_before = scores.perplexity_before
        rows.append(
            SweepRow(
                alpha,
                sum(c.refused for c in after) / len(after),
                scores.perplexity_after,
                scores.kl,
                scores.first_token_kl,
            )
        )
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
    return SteerSweep(
        tuple(
            steer(
                model,
                tokenizer,
                prompt,
                direction,
                a,
                max_tokens=max_tokens,
                judge=judge,
                formatting=formatting,
            )
            for a in alphas
        )
    )


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
