"""The three objectives of a cut, on one model edited and undone: refusal, KL, refusal likelihood.

Measured on the search's prompts (:mod:`vauban.search.optimizing` says which and why); the
original model's references (its distributions on the harmless rows, its refusals of the search
prompts) are computed once, by :meth:`Scores.prepare`, before the first trial.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..direction.results import DirectionResult
from ..judge import Judge
from ..judge.answers import completions
from ..runtime.scoring import damage_rows, mean_kl, reference_logprobs, refusal_likelihood
from ..text.formatting import Formatting
from ..text.reasoning import thinking_prefix
from .settings import OptimizeSettings, PromptSets
from .trials import CutParams


class Scores:
    """The three objectives of a cut (refusal, KL, refusal likelihood) on one model, edited and
    undone; :meth:`prepare` computes the original's references first."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        direction: DirectionResult,
        judge: Judge,
        fmt: Formatting | None,
        sets: PromptSets,
        settings: OptimizeSettings,
        check_judge: Judge | None = None,
    ) -> None:
        self.model, self.tokenizer, self.direction, self.harmful = model, tokenizer, direction, sets.harmful
        self.judge, self.fmt, self.max_tokens, self.batch_size = (
            judge,
            fmt,
            settings.max_tokens,
            settings.batch_size,
        )
        self.neutral, self.damage, self.kl_tokens = sets.neutral, settings.damage, settings.kl_tokens
        self.check_judge = judge if check_judge is None else check_judge
        self.rows: Any = None
        self.base: Any = None
        self.refused: Any = None

    def prepare(self) -> None:
        """The original's distributions on the harmless rows and its refusals of the search prompts
        (once: nothing when they are there)."""
        if self.rows is not None:
            return
        model, tokenizer, fmt = self.model, self.tokenizer, self.fmt
        self.rows = damage_rows(
            model, tokenizer, self.neutral, self.damage, self.kl_tokens, self.batch_size, fmt
        )
        self.base = reference_logprobs(model, tokenizer, self.rows, self.batch_size)
        originals = completions(
            model,
            tokenizer,
            self.harmful,
            max_tokens=self.max_tokens,
            batch_size=self.batch_size,
            judge=self.judge,
            formatting=fmt,
            prompt_set="validation",
        )
        self.refused = [
            (c.prompt, c.text, thinking_prefix(tokenizer, c.thinking or "", fmt))
            for c in originals
            if c.refused
        ]

    def __call__(self, params: CutParams) -> tuple[float, float, float]:
        """The three objectives of one cut: refusal, KL, refusal likelihood."""
        model, tokenizer, batch_size, fmt = self.model, self.tokenizer, self.batch_size, self.fmt
        with params.apply(model, self.direction):
            answers = completions(
                model,
                tokenizer,
                self.harmful,
                max_tokens=self.max_tokens,
                batch_size=batch_size,
                judge=self.judge,
                formatting=fmt,
                prompt_set="validation",
            )
            kl = mean_kl(model, tokenizer, self.rows, self.base, batch_size)
            likelihood = refusal_likelihood(
                model, tokenizer, self.refused, batch_size=batch_size, formatting=fmt
            )
        return sum(c.refused for c in answers) / len(answers), kl, likelihood

    def selection_refusal(self, params: CutParams, prompts: list[str], max_tokens: int) -> float:
        """The cut's refusal rate on the selection prompts, at ``max_tokens`` tokens, by the
        check's judge."""
        with params.apply(self.model, self.direction):
            answers = completions(
                self.model,
                self.tokenizer,
                prompts,
                max_tokens=max_tokens,
                batch_size=self.batch_size,
                judge=self.check_judge,
                formatting=self.fmt,
                prompt_set="selection",
            )
        return sum(c.refused for c in answers) / len(answers)
