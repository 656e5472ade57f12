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
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .activations import model_device
from .batching import batch_size_for, left_pad, progress, sorted_batches
from .cutting import active_cuts, original_weights
from .errors import VaubanError
from .formatting import Formatting
from .generate import check_max_tokens, generate
from .judge import Judge, get_judge, run_judge
from .prompts import (
    Prompts,
    bundled_records,
    check_tokenizer,
    encode_chat,
    load_pairs,
    load_prompts,
    pad_id,
)
from .reasoning import THINK_OPEN, split_reasoning, thinking_prefix
from .results import Completion, EvalResult

DEFAULT_EVAL_PROMPTS = 20


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


def completions(
    model: nn.Module, tokenizer: Any, prompts: Sequence[str], *, max_tokens: int, batch_size: int | None,
    judge: str | Judge | None = None,
    formatting: Formatting | None = None, prompt_set: str | None = "eval",
) -> tuple[Completion, ...]:
    """Greedy answers to ``prompts``, each with ``judge``'s verdict (default: markers) on its
    reply; a thinking model's thoughts are kept and judged apart (:func:`judged`)."""
    answers = generate(model, tokenizer, prompts, max_tokens=max_tokens, batch_size=batch_size,
                       formatting=formatting, prompt_set=prompt_set)
    return judged(get_judge(judge), prompts, answers)


def judged(judge: Judge, prompts: Sequence[str], answers: Sequence[str]) -> tuple[Completion, ...]:
    """Completions of ``answers`` (in :mod:`vauban.reasoning`'s form): the judge sees each reply;
    the thoughts of a thinking model are kept and judged apart, in one more batch. An answer cut
    off while thinking has an empty reply, which the judge decides on like any other (the
    markers call it a refusal): give the model a larger ``thinking_tokens`` budget."""
    parts = [split_reasoning(a) for a in answers]
    verdicts = run_judge(judge, prompts, [reply for _, reply in parts])
    thought = [a.lstrip().startswith(THINK_OPEN) for a in answers]
    rows = [i for i, (thoughts, _) in enumerate(parts) if thought[i] and thoughts]
    on_thoughts = dict(zip(rows, run_judge(judge, [prompts[i] for i in rows], [parts[i][0] for i in rows]),
                           strict=True)) if rows else {}

    def on_thought(i: int) -> bool | None:
        return on_thoughts[i].refusal if i in on_thoughts else False if thought[i] else None

    return tuple(
        Completion(p, reply, v.refusal, v.score, v.reason, v.late,
                   thinking=thoughts if thought[i] else None, thinking_refused=on_thought(i))
        for i, (p, (thoughts, reply), v) in enumerate(zip(prompts, parts, verdicts, strict=True))
    )


def encode_pairs(
    tokenizer: Any, pairs: Sequence[tuple[str, str] | tuple[str, str, str]], answer_tokens: int,
    formatting: Formatting | None = None, prompt_set: str | None = "reference",
) -> list[tuple[list[int], int]]:
    """Token ids of the chat-formatted prompt + the answer's first ``answer_tokens`` tokens,
    and that answer length. A third item in a pair is text the model wrote before the answer
    (a thinking model's thoughts, :func:`vauban.reasoning.thinking_prefix`), forced but not
    scored; without one, a thinking model's answer follows an empty think block."""
    heads = encode_chat(tokenizer, [pair[0] for pair in pairs], formatting, prompt_set)
    empty = thinking_prefix(tokenizer, "", formatting)

    def forced(pair: tuple[str, ...]) -> list[int]:
        text = pair[2] if len(pair) > 2 else empty
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    heads = [head + forced(pair) for head, pair in zip(heads, pairs, strict=True)]
    tails = [tokenizer(pair[1], add_special_tokens=False)["input_ids"][:answer_tokens] for pair in pairs]
    return [(head + list(tail), len(tail)) for head, tail in zip(heads, tails, strict=True)]


def answer_logprobs(
    model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, keep: int
) -> torch.Tensor:
    """Log-probabilities (float32) of the distributions predicting the last ``keep`` tokens."""
    logits = model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep + 1,
        use_cache=False,
    ).logits
    return torch.log_softmax(logits[:, -(keep + 1) : -1].float(), dim=-1)


@dataclass(frozen=True)
class AnswerScores:
    perplexity_before: float
    perplexity_after: float
    kl: float
    first_token_kl: float


@torch.inference_mode()
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

    Each batch holds vocabulary-sized log-probabilities at every answer position (three copies
    at the peak: one side's, the other's logits and their log-softmax), which sets the batch
    size against free memory (:func:`vauban.batching.batch_size_for`); with one model and a
    cut, each batch also costs an undo and a re-apply of the cut, so the batches are as large
    as memory allows. Only the first ``answer_tokens`` tokens of each answer are scored:
    the cost is a full forward pass per side, and the opening of an answer carries most of the
    signal (and all of the first-token KL).
    """
    check_tokenizer(pair.modified, tokenizer)
    encoded = encode_pairs(tokenizer, pairs, answer_tokens, formatting)
    device = model_device(pair.modified)
    nll = {True: 0.0, False: 0.0}
    kl_sum = first_sum = 0.0
    n_tokens = 0
    if batch_size is None:
        longest = max(len(x) for x, _ in encoded)
        keep = max(n for _, n in encoded)
        batch_size = batch_size_for(pair.modified, longest, len(encoded), logit_positions=keep + 1,
                                    logit_copies=3, saturate=not pair.same)
    for batch in progress(sorted_batches([len(x) for x, _ in encoded], batch_size), "kl", show_progress):
        seqs = [encoded[i][0] for i in batch]
        lengths = torch.tensor([encoded[i][1] for i in batch], device=device)
        keep = int(lengths.max())
        ids, mask, positions = left_pad(seqs, pad_id(tokenizer), device)
        targets = ids[:, -keep:]
        valid = torch.arange(keep, device=device).unsqueeze(0) >= (keep - lengths).unsqueeze(1)
        logp = {}
        for original in (True, False):
            with pair.side(original) as model:
                logp[original] = answer_logprobs(model, ids, mask, positions, keep)
            token_lp = logp[original].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            nll[original] -= float(token_lp[valid].sum())
        # p·(log p - log q) in place (the same bits as out of place): two vocabulary-sized
        # tensors alive instead of five
        diff = logp.pop(False).neg_().add_(logp[True])
        kl = diff.mul_(logp.pop(True).exp_()).sum(-1)  # (batch, keep)
        kl_sum += float(kl[valid].sum())
        first = keep - lengths  # index of each row's first answer position
        first_sum += float(kl.gather(1, first.unsqueeze(1)).sum())
        n_tokens += int(valid.sum())
    return AnswerScores(
        perplexity_before=math.exp(nll[True] / n_tokens),
        perplexity_after=math.exp(nll[False] / n_tokens),
        kl=kl_sum / n_tokens,
        first_token_kl=first_sum / len(encoded),
    )


def evaluate(
    original: nn.Module,
    modified: nn.Module,
    tokenizer: Any,
    prompts: Prompts | None = None,
    *,
    reference: str | Sequence[tuple[str, str]] = "reference",
    max_tokens: int = 64,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    judge: str | Judge | None = None,
    formatting: Formatting | None = None,
) -> EvalResult:
    """Compare ``original`` and ``modified`` (see the module docstring).

    ``prompts=None`` uses the first 20 bundled evaluation prompts; ``reference`` is the set of
    harmless (prompt, answer) pairs for perplexity and KL; ``judge`` counts the refusals (a spec
    such as ``"chat:demo"``, a :class:`vauban.judge.Judge`, or ``None`` for the markers).
    ``formatting``: how prompts are formatted (:mod:`vauban.formatting`); use the formatting
    the direction was measured with. Thinking models are judged on their replies, with
    ``max_tokens`` reply tokens after their thoughts; the thoughts' own refusals are reported
    apart (``thinking_refusal_before/after``).
    """
    check_max_tokens(max_tokens)
    judge = get_judge(judge)
    pair = Pair(original, modified)
    harmful = default_eval_prompts() if prompts is None else load_prompts(prompts, what="eval prompts")
    sides = {}
    for is_original in (True, False):
        with pair.side(is_original) as model:
            sides[is_original] = completions(
                model, tokenizer, harmful, max_tokens=max_tokens, batch_size=batch_size, judge=judge,
                formatting=formatting,
            )
    ref_pairs = load_pairs(reference)
    scores = answer_scores(pair, tokenizer, ref_pairs, show_progress=show_progress, formatting=formatting)

    def rate(items: tuple[Completion, ...]) -> float:
        return sum(c.refused for c in items) / len(items)

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
        judge=judge.spec,
    )
