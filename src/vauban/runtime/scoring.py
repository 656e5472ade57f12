"""KL(original ‖ cut) and teacher-forced log-probabilities: the one implementation.

Every damage number vauban computes is built here: ``evaluate``'s KL and perplexity on the
reference answers, ``optimize``'s damage objective (first-token or k-token KL), ``refine``'s
differentiable KL, and the refusal likelihood.

**Teacher forcing.** A row is a chat-formatted prompt ``x`` and an answer ``a₁…aₙ`` whose
tokens are fed to the model instead of its own. The distributions of interest are the model's
next-token distributions *before* each answer token, ``P(· | x, a₁…a_{t-1})`` for ``t = 1…n``:
one forward pass over ``x a₁…a_{n-1}`` gives all of them as its last ``n`` positions (the last
answer token is never fed, since nothing is predicted from it). ``n = 1`` with no answer is the
first-token distribution ``P(· | x)``, a single prefill.

**KL.** For distributions ``p`` (original) and ``q`` (cut) over the vocabulary,

    KL(p ‖ q) = Σ_v p(v) · (log p(v) − log q(v)),

zero exactly when the two agree, and large where the original was confident about a token the
cut model no longer predicts. It is computed from log-probabilities (``log_softmax`` in float32)
so ``p(v) → 0`` terms vanish without ``0 · log 0`` trouble. Summed over positions and divided by
the number of positions, it is the mean per-token KL:

- *first-token KL*: ``n = 1``; what other tools publish, one prefill per prompt;
- *k-token KL*: the first ``k`` tokens of the **original model's own greedy answer** (its stop
  token included when it stops sooner), teacher-forced into both models. The first-token KL only
  sees the opening word; a cut that keeps the opening and derails the next sentence shows here.
  Forcing the original's answer (not the cut model's) keeps both sides on the same text and makes
  the number an expectation under the original's own behaviour, as KL(original ‖ ·) should be.
- on the bundled *reference answers* (human-written), over their first 64 tokens: ``evaluate``'s
  ``kl``, with the perplexity ``exp(−mean log q(aₜ))`` from the same pass.

Position ``t = 1`` of a k-token row is its first-token distribution, so the k-token KL of
``k = 1`` is the first-token KL.

**The joint loss** of the gradient fits (``refine``'s per-writer weights, the ``learned``
method's direction): KL and refusal likelihood as ratios to a reference point's values (the
plain cut's), combined by a smooth maximum ``τ⁻¹ log Σ exp(τ·rᵢ)`` (:func:`loss`), so the step
lowers whichever is worse relative to where it started; :func:`loss_gradient` is its chain rule
and :func:`mean_and_grad` the batched backward passes that feed it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..text.formatting import Formatting
from ..text.prompts import encode_chat, pad_id
from ..text.reasoning import thinking_prefix
from .activations import model_device
from .batching import batch_size_for, forward_tokens, last_logits, left_pad, sorted_batches, token_batches


def kl_rows(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) of each distribution (last dimension: the vocabulary) from log-probabilities."""
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def kl_rows_(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """:func:`kl_rows` computed in place in ``q_log`` (which it overwrites) and ``p_log`` (too):
    the same bits with two vocabulary-sized tensors alive instead of five."""
    diff = q_log.neg_().add_(p_log)
    return diff.mul_(p_log.exp_()).sum(-1)


def kl_divergence(p_log: torch.Tensor, q_log: torch.Tensor) -> float:
    """Mean KL(p ‖ q) over rows of log-probabilities."""
    return float(kl_rows(p_log, q_log).mean())


@dataclass(frozen=True)
class Forced:
    """Rows to teacher-force: each prompt's token ids and the answer tokens after it.

    ``lengths[i]`` distributions are scored in row ``i`` (those before each answer token, or the
    first-token distribution alone when the answer is empty)."""

    prompts: tuple[tuple[int, ...], ...]
    answers: tuple[tuple[int, ...], ...]

    @property
    def lengths(self) -> list[int]:
        return [max(len(a), 1) for a in self.answers]

    @property
    def inputs(self) -> list[list[int]]:
        """What each row feeds: the prompt and all but the last answer token."""
        return [[*p, *a[:-1]] for p, a in zip(self.prompts, self.answers, strict=True)]

    def __len__(self) -> int:
        return len(self.prompts)


def forced(
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[Sequence[int]] | None = None,
    tokens: int | None = None,
    *,
    formatting: Formatting | None = None,
    prompt_set: str | None = None,
    prefixes: Sequence[str] | None = None,
) -> Forced:
    """Rows of chat-formatted ``prompts`` (``formatting``, :mod:`vauban.text.formatting`) with ``answers``
    (token ids, the first ``tokens`` of each); no answers: first-token rows. Each prompt is
    followed by its prefix, text the model wrote before the answer and that is forced but not
    scored: ``prefixes[i]``, or by default an empty think block for a thinking model (where its
    reply starts, :func:`vauban.text.reasoning.thinking_prefix`), nothing for others."""
    heads = encode_chat(tokenizer, prompts, formatting, prompt_set)
    empty = thinking_prefix(tokenizer, "", formatting)
    texts = prefixes if prefixes is not None else [empty] * len(heads)
    heads = [
        h + (tokenizer(t, add_special_tokens=False)["input_ids"] if t else [])
        for h, t in zip(heads, texts, strict=True)
    ]
    tails = answers if answers is not None else [()] * len(heads)
    return Forced(tuple(tuple(h) for h in heads), tuple(tuple(a[:tokens]) for a in tails))


def forced_text(
    tokenizer: Any,
    pairs: Sequence[tuple[str, ...]],
    tokens: int,
    *,
    formatting: Formatting | None = None,
    prompt_set: str | None = "reference",
) -> Forced:
    """Rows of (prompt, answer text[, prefix]) tuples, the answers tokenized and cut to ``tokens``
    tokens; a third item is the text the model wrote before the answer (a thinking model's
    thoughts, :func:`vauban.text.reasoning.thinking_prefix`), forced but not scored."""
    answers = [tokenizer(p[1], add_special_tokens=False)["input_ids"][:tokens] for p in pairs]
    empty = thinking_prefix(tokenizer, "", formatting)
    prefixes = [p[2] if len(p) > 2 else empty for p in pairs]
    return forced(
        tokenizer,
        [p[0] for p in pairs],
        answers,
        formatting=formatting,
        prompt_set=prompt_set,
        prefixes=prefixes,
    )


@dataclass(frozen=True)
class Batch:
    """One left-padded batch of forced rows; the scored positions are the last ``keep``."""

    rows: list[int]
    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    lengths: torch.Tensor  # distributions scored per row (right-aligned within ``keep``)
    targets: torch.Tensor  # (rows, keep) the answer tokens scored (0 where not valid)
    seqs: tuple[tuple[int, ...], ...] = ()  # the rows unpadded (for the shared-opening pass)
    pad: int = 0

    @property
    def keep(self) -> int:
        return int(self.lengths.max())

    @property
    def valid(self) -> torch.Tensor:
        """``(rows, keep)``: which of the last ``keep`` positions are this row's answer positions."""
        keep = self.keep
        return torch.arange(keep, device=self.ids.device).unsqueeze(0) >= (keep - self.lengths).unsqueeze(1)


def plan(model: nn.Module, rows: Forced, batch_size: int | None = None) -> list[list[int]]:
    """Length-sorted batches of ``rows``: ``batch_size`` rows each, or by default as many padded
    tokens as keep the device busy (:func:`vauban.runtime.batching.forward_tokens`) and as fit in memory
    with their vocabulary-sized log-probabilities (two copies alive)."""
    widths = [len(x) for x in rows.inputs]
    if batch_size is not None:
        return sorted_batches(widths, batch_size)
    longest = max(widths, default=1)
    fits = batch_size_for(
        model,
        longest,
        len(rows),
        logit_positions=max(rows.lengths, default=1),
        logit_copies=2,
        saturate=False,
    )
    return token_batches(widths, min(forward_tokens(model, longest, len(rows)), fits * max(longest, 1)))


def batches(rows: Forced, plan: list[list[int]], pad: int, device: torch.device) -> Iterator[Batch]:
    """The batches of ``plan`` (lists of row indices), left-padded (see :mod:`vauban.runtime.batching`)."""
    inputs, lengths = rows.inputs, rows.lengths
    for batch in plan:
        ids, mask, positions = left_pad([inputs[i] for i in batch], pad, device)
        n = torch.tensor([lengths[i] for i in batch], device=device)
        keep = int(n.max())
        targets = torch.zeros(len(batch), keep, dtype=torch.long)
        for r, i in enumerate(batch):
            answer = rows.answers[i]
            if answer:
                targets[r, keep - len(answer) :] = torch.tensor(answer)
        seqs = tuple(tuple(inputs[i]) for i in batch)
        yield Batch(batch, ids, mask, positions, n, targets.to(device), seqs, pad)


def logprobs(model: nn.Module, batch: Batch) -> torch.Tensor:
    """``(rows, keep, vocab)`` float32 log-probabilities at the batch's scored positions, the
    rows' shared chat opening run once (:func:`vauban.runtime.batching.last_logits`); differentiable
    unless run under ``torch.inference_mode``."""
    keep = batch.keep
    if batch.seqs:
        logits = last_logits(model, batch.seqs, keep, batch.pad)
    else:
        logits = model(
            input_ids=batch.ids,
            attention_mask=batch.mask,
            position_ids=batch.positions,
            logits_to_keep=keep,
            use_cache=False,
        ).logits[:, -keep:]
    return torch.log_softmax(logits.float(), dim=-1)


def token_logprobs(logp: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``(rows, keep)`` log-probability of each forced answer token, 0 at invalid positions."""
    picked = logp.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(~batch.valid, 0.0)


def logprob_batches(
    model: nn.Module, tokenizer: Any, rows: Forced, batch_size: int | None = None
) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Each batch of ``rows`` with ``model``'s log-probabilities at its scored positions."""
    device = model_device(model)
    for batch in batches(rows, plan(model, rows, batch_size), pad_id(tokenizer), device):
        yield batch, logprobs(model, batch)


@torch.inference_mode()
def reference_logprobs(
    model: nn.Module, tokenizer: Any, rows: Forced, batch_size: int | None = None
) -> list[torch.Tensor]:
    """Per row, ``(lengths[i], vocab)`` float32 log-probabilities on the CPU: the original's side
    of a KL computed many times against cut models (one device-to-host copy per batch)."""
    out: list[torch.Tensor | None] = [None] * len(rows)
    for batch, logp in logprob_batches(model, tokenizer, rows, batch_size):
        logp, keep = logp.cpu(), batch.keep
        for r, i in enumerate(batch.rows):
            out[i] = logp[r, keep - int(batch.lengths[r]) :]
    return out  # type: ignore[return-value]


def kl_batches(
    model: nn.Module,
    tokenizer: Any,
    rows: Forced,
    base: Sequence[torch.Tensor],
    batch_size: int | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(positions, summed KL(base ‖ model))`` per batch, differentiable in ``model`` unless run
    under ``torch.inference_mode``; ``base[i]`` is row ``i``'s ``(lengths[i], vocab)`` (or, for
    first-token rows, ``(vocab,)``) original log-probabilities."""
    for batch, logp in logprob_batches(model, tokenizer, rows, batch_size):
        keep, total = batch.keep, logp.new_zeros(())
        for r, i in enumerate(batch.rows):
            n = int(batch.lengths[r])
            p = base[i].to(logp.device).reshape(n, -1)
            total = total + kl_rows(p, logp[r, keep - n :]).sum()
        yield int(batch.lengths.sum()), total


@torch.inference_mode()
def mean_kl(
    model: nn.Module,
    tokenizer: Any,
    rows: Forced,
    base: Sequence[torch.Tensor],
    batch_size: int | None = None,
) -> float:
    """KL(base ‖ model) averaged over every scored position of ``rows``."""
    total, count = 0.0, 0
    for n, part in kl_batches(model, tokenizer, rows, base, batch_size):
        total, count = total + float(part), count + n
    return total / max(count, 1)


@torch.inference_mode()
def greedy_answers(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    tokens: int,
    batch_size: int | None = None,
    *,
    formatting: Formatting | None = None,
    prompt_set: str | None = None,
) -> list[list[int]]:
    """The first ``tokens`` token ids of ``model``'s greedy answer to each prompt, up to and
    including its stop token: the answers a k-token KL forces (a thinking model's are its first
    ``tokens`` generated tokens, thoughts included: forced with no prefix, see :func:`k_rows`)."""
    from .generating import generate_tokens, stop_token_ids

    stops = set(stop_token_ids(model, tokenizer))
    out = []
    for row in generate_tokens(
        model,
        tokenizer,
        prompts,
        max_tokens=tokens,
        batch_size=batch_size,
        formatting=formatting,
        prompt_set=prompt_set,
    ):
        end = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        out.append(list(row[:end]))
    return out


@dataclass(frozen=True)
class Divergence:
    """Sums over the scored positions of a set of rows, for both sides of a comparison."""

    kl: float  # summed KL over every scored position
    first: float  # summed KL at each row's first scored position
    nll_original: float  # summed −log p(answer token), original side
    nll_modified: float
    positions: int
    rows: int

    @property
    def mean_kl(self) -> float:
        return self.kl / max(self.positions, 1)

    @property
    def first_token_kl(self) -> float:
        return self.first / max(self.rows, 1)


@torch.inference_mode()
def first_token_logprobs(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int | None = None,
    formatting: Formatting | None = None,
) -> torch.Tensor:
    """``(len(prompts), vocab)`` float32 log-probabilities of each answer's first token (a
    thinking model's first reply token, after an empty think block)."""
    rows = forced(tokenizer, prompts, formatting=formatting, prompt_set="harmless")
    return torch.stack(reference_logprobs(model, tokenizer, rows, batch_size)).squeeze(1)


DAMAGES = ("first_token", "k_tokens")


def k_rows(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    tokens: int,
    batch_size: int | None = None,
    *,
    formatting: Formatting | None = None,
    prompt_set: str | None = None,
) -> Forced:
    """k-token rows: ``prompts`` with ``model``'s own first ``tokens`` greedy tokens, forced right
    after the prompt (a thinking model's thoughts are part of what it wrote)."""
    answers = greedy_answers(
        model, tokenizer, prompts, tokens, batch_size, formatting=formatting, prompt_set=prompt_set
    )
    return forced(
        tokenizer,
        prompts,
        answers,
        formatting=formatting,
        prompt_set=prompt_set,
        prefixes=[""] * len(prompts),
    )


def damage_rows(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    damage: str,
    kl_tokens: int,
    batch_size: int | None = None,
    formatting: Formatting | None = None,
) -> Forced:
    """The teacher-forced rows ``optimize``'s damage objective scores: ``first_token`` one prefill
    per prompt; ``k_tokens`` the first ``kl_tokens`` tokens of the original model's own greedy
    answers (generated once, here, so ``model`` must be uncut)."""
    if damage == "first_token":
        return forced(tokenizer, prompts, formatting=formatting, prompt_set="harmless")
    return k_rows(
        model, tokenizer, prompts, kl_tokens, batch_size, formatting=formatting, prompt_set="harmless"
    )


def likelihood_batches(
    model: nn.Module,
    tokenizer: Any,
    refusals: Sequence[tuple[str, ...]],
    tokens: int = 8,
    batch_size: int | None = None,
    formatting: Formatting | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(rows, summed probability of opening with the given refusal)`` per batch: each prompt's
    answer is teacher-forced with the first ``tokens`` tokens of its refusal, after the thoughts
    the original wrote before it (a third item, see :func:`forced_text`), if
    any. Empty refusals (the original stopped at once) have nothing to force and are left out."""
    spoken = [r for r in refusals if r[1]]
    if not spoken:
        return
    rows = forced_text(tokenizer, spoken, tokens, formatting=formatting, prompt_set="validation")
    kept = [i for i, a in enumerate(rows.answers) if a]
    rows = Forced(tuple(rows.prompts[i] for i in kept), tuple(rows.answers[i] for i in kept))
    size = batch_size or batch_size_for(
        model,
        max((len(x) for x in rows.inputs), default=1),
        len(rows),
        logit_positions=tokens + 1,
        logit_copies=2,
    )
    for batch, logp in logprob_batches(model, tokenizer, rows, size):
        yield len(batch.rows), token_logprobs(logp, batch).sum(-1).exp().sum()


@torch.inference_mode()
def refusal_likelihood(
    model: nn.Module,
    tokenizer: Any,
    refusals: Sequence[tuple[str, ...]],
    tokens: int = 8,
    batch_size: int | None = None,
    formatting: Formatting | None = None,
) -> float:
    """Mean probability that ``model`` opens its answer with the given refusal (its first
    ``tokens`` tokens, teacher-forced): ``refusals`` pairs each prompt with the original model's
    own refusal of it. One prefill per prompt; 0 when there are none (see
    :func:`likelihood_batches`)."""
    total, count = 0.0, 0
    for rows, part in likelihood_batches(model, tokenizer, refusals, tokens, batch_size, formatting):
        total, count = total + float(part), count + rows
    return total / count if count else 0.0


SHARPNESS = 20.0  # τ of the smooth maximum: at 20 it is within 3.5 % of the larger ratio
FLOOR = 1e-12  # objectives at or below this count as 0 (a likelihood of 1e-20 is no refusal)
BACKWARD_BATCH = 16  # rows per backward pass: it keeps every layer's activations, so fewer than inference


def ratios(point: tuple[float, float], reference: tuple[float, float]) -> torch.Tensor:
    """``(KL, likelihood)`` as ratios to the reference point's (floored) values."""
    return torch.tensor([max(v, FLOOR) / max(r, FLOOR) for v, r in zip(point, reference, strict=True)])


def loss(point: tuple[float, float], reference: tuple[float, float]) -> float:
    """The smooth maximum of :func:`ratios`: the joint loss the gradient fits minimize."""
    return float(torch.logsumexp(SHARPNESS * ratios(point, reference), 0)) / SHARPNESS


def loss_gradient(
    point: tuple[float, float],
    reference: tuple[float, float],
    kl_grad: torch.Tensor,
    likelihood_grad: torch.Tensor,
) -> torch.Tensor:
    """The gradient of :func:`loss` at ``point`` from those of the KL and of the likelihood."""
    share = torch.softmax(SHARPNESS * ratios(point, reference), 0)  # d loss / d ratio
    return (
        share[0] / max(reference[0], FLOOR) * kl_grad + share[1] / max(reference[1], FLOOR) * likelihood_grad
    )


def mean_and_grad(
    leaf: torch.Tensor, parts: Iterator[tuple[int, torch.Tensor]]
) -> tuple[float, torch.Tensor]:
    """Mean of per-batch sums (``(rows, sum)`` pairs, e.g. :func:`kl_batches`) and its gradient in
    ``leaf``, one backward pass per batch so no more than one batch's activations are kept."""
    leaf.grad = None
    total, count = 0.0, 0
    for rows, part in parts:
        part.backward()
        total, count = total + float(part.detach()), count + rows
    grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
    return total / max(count, 1), grad / max(count, 1)
