"""Search the cut's parameters for the best refusal / damage trade-off, reproducibly.

Each trial picks the layer whose direction is cut and the cut's alpha, applies the reversible
cut to the one model in memory, measures

- refusal: the share of *validation* harmful prompts still refused (bundled eval prompts 20-59 by
  default, so the first 20, which ``evaluate`` uses, stay held out), with short greedy answers;
- damage: the first-token KL(original ‖ cut) on harmless prompts (the bundled harmless set by
  default, so the reference set ``evaluate`` scores stays held out; a prefill each),

scores ``refusal + kl_weight × KL``, and undoes the cut. Optuna's TPE sampler with a fixed seed
makes the search reproducible (the approach of heretic); the original's first-token
distributions are computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .activations import model_device
from .batching import default_batch_size, left_pad, sorted_batches
from .cut import cut
from .errors import VaubanError
from .evaluate import completions
from .prompts import Prompts, bundled_records, encode_chat, load_prompts, pad_id
from .results import DirectionResult, check_alpha


@dataclass(frozen=True)
class Trial:
    layer: int
    alpha: float
    refusal: float
    kl: float
    score: float


@dataclass(frozen=True)
class OptimizeResult:
    """All trials in order, and the best one (lowest score)."""

    trials: tuple[Trial, ...]
    n_prompts: int
    n_harmless: int
    kl_weight: float

    @property
    def best(self) -> Trial:
        return min(self.trials, key=lambda t: t.score)

    def table(self) -> str:
        lines = ["trial  layer  alpha  refusal  first_token_kl  score"]
        lines += [
            f"{i:5d}  {t.layer:5d}  {t.alpha:5.2f}  {t.refusal * 100:6.0f}%  {t.kl:14.4f}  {t.score:.4f}"
            for i, t in enumerate(self.trials)
        ]
        return "\n".join(lines)

    def summary(self) -> str:
        b = self.best
        return (
            f"OptimizeResult: best layer={b.layer}, alpha={b.alpha:.2f}, refusal={b.refusal * 100:.0f}%, "
            f"kl={b.kl:.4f}, trials={len(self.trials)}, prompts={self.n_prompts}"
        )


@torch.inference_mode()
def first_token_logprobs(
    model: nn.Module, tokenizer: Any, prompts: Sequence[str], batch_size: int | None = None
) -> torch.Tensor:
    """``(len(prompts), vocab)`` float32 log-probabilities of each answer's first token."""
    device = model_device(model)
    ids = encode_chat(tokenizer, prompts)
    out: list[torch.Tensor | None] = [None] * len(ids)
    for batch in sorted_batches([len(x) for x in ids], batch_size or default_batch_size(device)):
        input_ids, mask, positions = left_pad([ids[i] for i in batch], pad_id(tokenizer), device)
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                       logits_to_keep=1, use_cache=False).logits[:, -1]
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, index in enumerate(batch):
            out[index] = logp[row]
    return torch.stack(out)  # type: ignore[arg-type]


def kl_divergence(p_log: torch.Tensor, q_log: torch.Tensor) -> float:
    """Mean KL(p ‖ q) over rows of log-probabilities."""
    return float((p_log.exp() * (p_log - q_log)).sum(-1).mean())


def default_validation_prompts() -> list[str]:
    """Bundled eval prompts 20-59: disjoint from both the measurement sets and the 20 that
    :func:`vauban.evaluate.evaluate` reports on."""
    return [r["prompt"] for r in bundled_records("eval_harmful")[20:60]]


def optimize(
    model: nn.Module,
    tokenizer: Any,
    direction: DirectionResult,
    *,
    n_trials: int = 20,
    layers: Sequence[int] | None = None,
    alpha_range: tuple[float, float] = (0.5, 1.5),
    prompts: Prompts | None = None,
    harmless: Prompts | None = None,
    kl_weight: float = 1.0,
    max_tokens: int = 24,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> OptimizeResult:
    """Search (direction layer, alpha) with a seeded TPE sampler; the model ends unchanged."""
    try:
        import optuna
    except ImportError:
        raise VaubanError('optimize needs optuna: pip install "vauban[optimize]"') from None
    if n_trials < 1:
        raise VaubanError(f"n_trials must be at least 1, got {n_trials}")
    low, high = (check_alpha(a) for a in alpha_range)
    if not 0 < low <= high:
        raise VaubanError(f"alpha_range must be (low, high) with 0 < low <= high, got {alpha_range}")
    candidates = list(range(direction.num_layers)) if layers is None else [int(i) for i in layers]
    if not candidates or not all(0 <= i < direction.num_layers for i in candidates):
        raise VaubanError(f"layers must be within 0..{direction.num_layers - 1}, got {layers}")
    harmful = default_validation_prompts() if prompts is None else load_prompts(prompts)
    neutral = load_prompts("harmless" if harmless is None else harmless, what="harmless prompts")
    base = first_token_logprobs(model, tokenizer, neutral, batch_size)
    trials: list[Trial] = []

    def objective(trial: Any) -> float:
        layer = trial.suggest_categorical("layer", candidates)
        alpha = trial.suggest_float("alpha", low, high)
        with cut(model, direction.at_layer(layer), alpha=alpha):
            answers = completions(model, tokenizer, harmful, max_tokens=max_tokens,
                                  batch_size=batch_size)
            kl = kl_divergence(base, first_token_logprobs(model, tokenizer, neutral, batch_size))
        refusal = sum(c.refused for c in answers) / len(answers)
        score = refusal + kl_weight * kl
        trials.append(Trial(layer, alpha, refusal, kl, score))
        return score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials, show_progress_bar=show_progress)
    return OptimizeResult(tuple(trials), len(harmful), len(neutral), kl_weight)
