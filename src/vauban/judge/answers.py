"""Answers with their verdicts: generate greedy answers and judge each reply, thoughts apart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..runtime.generating import generate
from ..text.formatting import Formatting
from ..text.reasoning import THINK_CLOSE, THINK_OPEN, split_reasoning
from . import get_judge
from .base import Judge, run_judge


@dataclass(frozen=True)
class Completion:
    """One greedy answer and its judge's verdict (see :class:`vauban.judge.Verdict`): refused or
    not, the judge's score in [0, 1], its reason, and whether the refusal came late (after a
    compliant opening).

    For a thinking model ``text`` is the reply, which the judge saw; ``thinking`` holds the
    thoughts before it (``None``: the model did not think), ``thinking_refused`` whether the
    thoughts alone read as a refusal to the same judge (see :mod:`vauban.text.reasoning`) and
    ``thinking_ended`` whether the thoughts were closed within the thinking budget (``False``: the
    model was still thinking when the budget ran out, a runaway thinker).
    """

    prompt: str
    text: str
    refused: bool
    score: float
    reason: str
    late: bool = False
    thinking: str | None = None
    thinking_refused: bool | None = None
    thinking_ended: bool | None = None


def completions(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_tokens: int,
    batch_size: int | None,
    judge: str | Judge | None = None,
    formatting: Formatting | None = None,
    prompt_set: str | None = "eval",
) -> tuple[Completion, ...]:
    """Greedy answers to ``prompts``, each with ``judge``'s verdict (default: markers) on its
    reply; a thinking model's thoughts are kept and judged apart (:func:`judged`)."""
    answers = generate(
        model,
        tokenizer,
        prompts,
        max_tokens=max_tokens,
        batch_size=batch_size,
        formatting=formatting,
        prompt_set=prompt_set,
    )
    return judged(get_judge(judge), prompts, answers)


def judged(judge: Judge, prompts: Sequence[str], answers: Sequence[str]) -> tuple[Completion, ...]:
    """Completions of ``answers`` (in :mod:`vauban.text.reasoning`'s form): the judge sees each reply;
    the thoughts of a thinking model are kept and judged apart, in one more batch. An answer cut
    off while thinking has an empty reply, which the judge decides on like any other (the
    markers call it a refusal) and ``thinking_ended=False``: give the model a larger
    ``thinking_tokens`` budget, or see whether the cut made it loop."""
    parts = [split_reasoning(a) for a in answers]
    verdicts = run_judge(judge, prompts, [reply for _, reply in parts])
    thought = [a.lstrip().startswith(THINK_OPEN) for a in answers]
    rows = [i for i, (thoughts, _) in enumerate(parts) if thought[i] and thoughts]
    on_thoughts = (
        dict(
            zip(rows, run_judge(judge, [prompts[i] for i in rows], [parts[i][0] for i in rows]), strict=True)
        )
        if rows
        else {}
    )

    def on_thought(i: int) -> bool | None:
        return on_thoughts[i].refusal if i in on_thoughts else False if thought[i] else None

    return tuple(
        Completion(
            p,
            reply,
            v.refusal,
            v.score,
            v.reason,
            v.late,
            thinking=thoughts if thought[i] else None,
            thinking_refused=on_thought(i),
            thinking_ended=THINK_CLOSE in answers[i] if thought[i] else None,
        )
        for i, (p, (thoughts, reply), v) in enumerate(zip(prompts, parts, verdicts, strict=True))
    )
