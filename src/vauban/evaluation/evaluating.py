"""Measure what a cut changed: refusals on harmful prompts, capability on harmless answers.

- Refusal rate: greedy answers to the harmful evaluation prompts (disjoint from the measurement
  sets), judged by a refusal judge (:mod:`vauban.judge`; ``judge=``, default ``markers``).
- Perplexity: of the harmless reference answers, teacher-forced after the chat-formatted
  prompt, scored on the answer tokens only.
- KL(original ‖ modified): between next-token distributions at every answer position of the
  reference set (and, separately, at the first answer position only).

When ``original`` and ``modified`` are the same model object with a reversible cut applied, the
original side is obtained by undoing the cut (bit-exact) and re-applying it, batch by batch, so
one copy of the model is enough.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..capability import Capability, CapabilityScore
from ..core.errors import VaubanError, check_int
from ..edit.cutting import active_cuts, original_weights
from ..judge import Judge, get_judge
from ..judge.answers import Completion, completions
from ..runtime.activations import model_device
from ..runtime.batching import batch_size_for, progress
from ..runtime.generating import check_max_tokens
from ..runtime.scoring import (
    Divergence,
    Forced,
    batches,
    forced_text,
    k_rows,
    kl_rows_,
    logprobs,
    plan,
    token_logprobs,
)
from ..text.formatting import Formatting
from ..text.prompts import Prompts, bundled_records, check_tokenizer, load_pairs, load_prompts, pad_id
from .results import EvalResult

DEFAULT_EVAL_PROMPTS = 20
DEFAULT_SAFE_PROMPTS = 16
# Answer tokens judged by default, and k of the k-token KL: chosen from the demo model's length
# study (benchmarks/length_study.py, benchmarks/results/length_study.json).
DEFAULT_MAX_TOKENS = 128
DEFAULT_KL_TOKENS = 16


def default_eval_prompts(n: int = DEFAULT_EVAL_PROMPTS) -> list[str]:
    """The first ``n`` bundled evaluation prompts (ordered so any prefix spans all categories)."""
    return [r["prompt"] for r in bundled_records("eval_harmful")[:n]]


@dataclass(frozen=True)
class Pair:
    """The two sides of a comparison; one model object with active cuts serves as both."""

    original: nn.Module
    modified: nn.Module

    def __post_init__(self) -> None:
        if self.same and not active_cuts(self.original):
            raise VaubanError(
                "original and modified are the same model with no cut applied; apply a cut "
                "(vauban.cut) or pass two different models"
            )

    @property
    def same(self) -> bool:
        return self.original is self.modified

    @contextlib.contextmanager
    def side(self, original: bool) -> Iterator[nn.Module]:
        if original and self.same:
            with original_weights(self.original) as model:
                yield model
        else:
            yield self.original if original else self.modified


def default_safe_prompts(n: int = DEFAULT_SAFE_PROMPTS) -> list[str]:
    """The first ``n`` bundled safe-but-scary prompts (``over_refusal``: 8 categories, interleaved,
    so any prefix of a multiple of 8 spans them all)."""
    return [r["prompt"] for r in bundled_records("over_refusal")[:n]]


def load_safe_prompts(source: Prompts) -> list[str]:
    """Safe prompts from a list, a bundled set name or a file; a ``.csv`` with a ``label`` column
    (XSTest's ``xstest_prompts.csv``) keeps only its rows labelled ``safe``."""
    path = Path(str(source)).expanduser() if isinstance(source, (str, os.PathLike)) else None
    if path is not None and path.suffix.lower() == ".csv" and path.is_file():
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        if rows and "label" in rows[0] and "prompt" in rows[0]:
            return load_prompts(
                [r["prompt"] for r in rows if r["label"].strip() == "safe"], what=f"safe prompts of {path}"
            )
    return load_prompts(source, what="safe prompts")


def both_sides(
    pair: Pair,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_tokens: int,
    batch_size: int | None,
    judge: Any,
    formatting: Formatting | None = None,
) -> dict[bool, tuple[Completion, ...]]:
    """Judged answers of the original (``True``) and the modified model (``False``), generated
    once per side: every metric that reads answers (refusal, late refusal, over-refusal) reads
    these."""
    out = {}
    for is_original in (True, False):
        with pair.side(is_original) as model:
            out[is_original] = completions(
                model,
                tokenizer,
                prompts,
                max_tokens=max_tokens,
                batch_size=batch_size,
                judge=judge,
                formatting=formatting,
            )
    return out


def capability_scores(
    pair: Pair,
    tokenizer: Any,
    checks: Sequence[Capability],
    batch_size: int | None,
) -> dict[bool, tuple[CapabilityScore, ...]]:
    """Every capability check on both sides (see :mod:`vauban.capability`)."""
    out: dict[bool, list[CapabilityScore]] = {True: [], False: []}
    for check in checks:
        for is_original in (True, False):
            with pair.side(is_original) as model:
                out[is_original].extend(check.run(model, tokenizer, batch_size=batch_size))
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class AnswerScores:
    perplexity_before: float
    perplexity_after: float
    kl: float
    first_token_kl: float


@torch.inference_mode()
def pair_divergence(
    pair: Pair,
    tokenizer: Any,
    rows: Forced,
    *,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    desc: str = "kl",
) -> Divergence:
    """KL(original ‖ modified) and both sides' answer log-likelihoods on teacher-forced ``rows``
    (see :mod:`vauban.runtime.scoring`), one batch of both sides at a time.

    Each batch holds vocabulary-sized log-probabilities at every scored position (three copies
    at the peak: one side's, the other's logits and their log-softmax), which sets the batch
    size against free memory (:func:`vauban.runtime.batching.batch_size_for`); with one model and a
    cut, each batch also costs an undo and a re-apply of the cut, so the batches are as large
    as memory allows.
    """
    check_tokenizer(pair.modified, tokenizer)
    device = model_device(pair.modified)
    if batch_size is None:
        longest = max(len(x) for x in rows.inputs)
        batch_size = batch_size_for(
            pair.modified,
            longest,
            len(rows),
            logit_positions=max(rows.lengths),
            logit_copies=3,
            saturate=not pair.same,
        )
    nll = {True: 0.0, False: 0.0}
    kl_sum = first_sum = 0.0
    n_positions = 0
    parts = list(batches(rows, plan(pair.modified, rows, batch_size), pad_id(tokenizer), device))
    for batch in progress(parts, desc, show_progress):
        valid = batch.valid
        logp = {}
        for original in (True, False):
            with pair.side(original) as model:
                logp[original] = logprobs(model, batch)
            nll[original] -= float(token_logprobs(logp[original], batch).sum())
        kl = kl_rows_(logp.pop(True), logp.pop(False))  # (rows, keep)
        kl_sum += float(kl[valid].sum())
        first = batch.keep - batch.lengths  # index of each row's first scored position
        first_sum += float(kl.gather(1, first.unsqueeze(1)).sum())
        n_positions += int(valid.sum())
    return Divergence(kl_sum, first_sum, nll[True], nll[False], n_positions, len(rows))


def answer_scores(
    pair: Pair,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int | None = None,
    answer_tokens: int = 64,
    show_progress: bool | None = None,
    formatting: Formatting | None = None,
) -> AnswerScores:
    """Perplexities of both sides and KL(original ‖ modified) on the reference answers.

    Only the first ``answer_tokens`` tokens of each answer are scored: the cost is a full
    forward pass per side, and the opening of an answer carries most of the signal (and all of
    the first-token KL).
    """
    rows = forced_text(tokenizer, pairs, answer_tokens, formatting=formatting)
    d = pair_divergence(pair, tokenizer, rows, batch_size=batch_size, show_progress=show_progress)
    return AnswerScores(
        perplexity_before=math.exp(d.nll_original / d.positions),
        perplexity_after=math.exp(d.nll_modified / d.positions),
        kl=d.mean_kl,
        first_token_kl=d.first_token_kl,
    )


def k_token_kl(
    pair: Pair,
    tokenizer: Any,
    prompts: Sequence[str],
    tokens: int,
    *,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    formatting: Formatting | None = None,
) -> float:
    """KL(original ‖ modified) over the first ``tokens`` tokens of the original's own greedy
    answers to ``prompts`` (see :mod:`vauban.runtime.scoring`)."""
    with pair.side(True) as model:
        rows = k_rows(
            model, tokenizer, prompts, tokens, batch_size, formatting=formatting, prompt_set="reference"
        )
    return pair_divergence(
        pair, tokenizer, rows, batch_size=batch_size, show_progress=show_progress, desc="k-token kl"
    ).mean_kl


class Laps:
    """Seconds per named part of a run: ``lap(name)`` records the time since the last lap (or since
    the object was made) under ``name`` in ``seconds``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._clock, 1)
        self._clock = now


def _answer_sets(
    pair: Pair, tokenizer: Any, harmful: list[str], safe: list[str], **answers: Any
) -> tuple[dict[bool, tuple[Completion, ...]], dict[bool, tuple[Completion, ...]]]:
    """Each side's judged answers to the harmful and to the safe prompts (side ``True``: the
    original), generated as one set per side: each decoding step reads the weights once, so one
    batch of both pays that once (runtime.batching.batch_size_for; the gain on its own is not
    measured: on 2 CPU cores 36 rows x 128 tokens took ~130 s a side, compute mattering too)."""
    answered = both_sides(pair, tokenizer, [*harmful, *safe], **answers)
    return (
        {side: done[: len(harmful)] for side, done in answered.items()},
        {side: done[len(harmful) :] for side, done in answered.items()},
    )


def evaluate(
    original: nn.Module,
    modified: nn.Module,
    tokenizer: Any,
    prompts: Prompts | None = None,
    *,
    reference: str | Sequence[tuple[str, str]] = "reference",
    max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    judge: str | Judge | None = None,
    safe: Prompts | bool | None = None,
    kl_tokens: int = DEFAULT_KL_TOKENS,
    capability: Sequence[Capability] = (),
    formatting: Formatting | None = None,
) -> EvalResult:
    """Compare ``original`` and ``modified`` (see the module docstring).

    ``prompts=None`` uses the first 20 bundled evaluation prompts; ``reference`` is the set of
    harmless (prompt, answer) pairs for perplexity and KL. ``judge``: a judge spec or object
    (a spec such as ``"chat:demo"``, a :class:`vauban.judge.Judge`, or ``None`` for the
    markers). ``safe``: safe-but-scary prompts for the over-refusal rate (``None``: the first 16
    bundled ``over_refusal`` prompts; ``False``: skip; XSTest's ``xstest_prompts.csv`` keeps its
    250 safe rows). ``kl_tokens``: k of the k-token KL on the reference prompts (0: skip).
    ``capability``: checks from :mod:`vauban.capability` run on both sides. ``seconds`` in the
    result says what each part cost. ``formatting``: how prompts are formatted
    (:mod:`vauban.text.formatting`); use the formatting the direction was measured with. Thinking
    models are judged on their replies, with ``max_tokens`` reply tokens after their thoughts;
    the thoughts' own refusals are reported apart (``thinking_refusal_before/after``), and so is
    the share of answers still thinking when the budget ran out (``thinking_unfinished_before/after``).
    """
    check_max_tokens(max_tokens)
    judge = get_judge(judge)
    kl_tokens = check_int("kl_tokens", kl_tokens, 0)
    pair = Pair(original, modified)
    harmful = default_eval_prompts() if prompts is None else load_prompts(prompts, what="eval prompts")
    safe_prompts = (
        [] if safe is False else default_safe_prompts() if safe in (None, True) else load_safe_prompts(safe)  # type: ignore[arg-type]
    )
    ref_pairs = load_pairs(reference)
    lap = Laps()
    generation = {
        "max_tokens": max_tokens,
        "batch_size": batch_size,
        "judge": judge,
        "formatting": formatting,
    }
    sides, safe_sides = _answer_sets(pair, tokenizer, harmful, safe_prompts, **generation)
    lap("answers")
    scoring: dict[str, Any] = {
        "batch_size": batch_size,
        "show_progress": show_progress,
        "formatting": formatting,
    }
    scores = answer_scores(pair, tokenizer, ref_pairs, **scoring)
    lap("kl_perplexity")
    k_kl = (
        k_token_kl(pair, tokenizer, [p for p, *_ in ref_pairs], kl_tokens, **scoring) if kl_tokens else None
    )
    lap("k_token_kl")
    checks = capability_scores(pair, tokenizer, capability, batch_size)
    seconds = lap.seconds
    for score in (*checks[True], *checks[False]):
        seconds[f"capability/{score.name}"] = seconds.get(f"capability/{score.name}", 0.0) + score.seconds
    return EvalResult(
        refusal_before=rate(sides[True]),
        refusal_after=rate(sides[False]),
        perplexity_before=scores.perplexity_before,
        perplexity_after=scores.perplexity_after,
        kl=scores.kl,
        first_token_kl=scores.first_token_kl,
        n_prompts=len(harmful),
        n_reference=len(ref_pairs),
        before=sides[True],
        after=sides[False],
        max_tokens=max_tokens,
        judge=judge.spec,
        late_before=rate(sides[True], late=True),
        late_after=rate(sides[False], late=True),
        over_refusal_before=rate(safe_sides[True]) if safe_prompts else None,
        over_refusal_after=rate(safe_sides[False]) if safe_prompts else None,
        n_safe=len(safe_prompts),
        safe_before=safe_sides[True],
        safe_after=safe_sides[False],
        k_token_kl=k_kl,
        kl_tokens=kl_tokens,
        capability_before=checks[True],
        capability_after=checks[False],
        seconds=seconds,
    )


def rate(items: Sequence[Completion], *, late: bool = False) -> float:
    """Share of ``items`` refused (``late``: refused late)."""
    return sum(c.late if late else c.refused for c in items) / max(len(items), 1)
