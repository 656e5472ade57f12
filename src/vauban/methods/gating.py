"""Probe conditions: a logistic regression over several layers' last-token residuals decides
whether a prompt matches a condition (``steer`` / ``chat --when``; :mod:`vauban.methods.conditional`).

The one-layer cosine condition (:class:`~vauban.methods.conditional.CosineCondition`) reads one
direction at one layer; a category is not that separable (the category directions share refusal
itself). The probe reads the residual after each layer of a set — at the prompt's last token, or
its mean over the prompt's tokens (what CAST reads; on the demo model's categories the mean
separates better: ``benchmarks/results/control_cv.json``) — each feature standardized on the
fitting prompts, and weighs them by an L2-penalized, class-balanced logistic regression (fitted in
float64 by L-BFGS: a few hundred prompts, tens of thousands of features). Its pooling, layer set and
penalty are chosen by ``folds``-fold cross-validation over the ``measure`` and ``tune`` prompts
together (:func:`fit_probe_condition`): each prompt is scored by the probe fitted without its fold,
the best balanced accuracy over those out-of-fold scores chooses, and the threshold is the one
that gives it there — or, with ``false_match`` (``--false-match``), the lowest threshold at which at
most that share of the unmatched prompts' out-of-fold scores lie above it (a stricter condition:
fewer unmatched prompts pass, at the cost of matched ones); the probe is then fitted on every
prompt. A ``test`` split is never read. A probe needs :data:`MIN_EXAMPLES` matched and unmatched
example prompts at least.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.errors import VaubanError
from ..model import arch
from ..runtime.activations import POOLINGS, last_token_residuals
from ..text.formatting import Formatting
from ..text.reasoning import resolved
from .conditional import ConditionSets, balanced_accuracy, best_threshold

PENALTIES = (0.01, 0.1, 1.0)  # inverse L2 strengths C tried (sklearn's convention: loss + |w|²/2C)
FOLDS = 5
MIN_EXAMPLES = 4  # per class: every fold's fit then has at least 2 matched and 2 unmatched rows


def layer_sets(n: int) -> dict[str, tuple[int, ...]]:
    """The layer sets a probe may read, for a model of ``n`` layers, by name (none empty: a model
    of fewer than 5 layers has no "every third")."""
    sets = {
        "last": (n - 1,),
        "late half": tuple(range(n // 2, n)),
        "every third": tuple(range(n % 3 + 2, n, 3)),
        "all": tuple(range(n)),
    }
    return {name: layers for name, layers in sets.items() if layers}


@dataclass(frozen=True)
class ProbeCondition:
    """A fitted probe: per-layer feature centres and scales, weights and bias of the logistic
    regression, the threshold on its logit, and what cross-validation measured."""

    name: str
    layers: tuple[int, ...]
    centre: torch.Tensor = field(repr=False)  # (layers, d)
    scale: torch.Tensor = field(repr=False)  # (layers, d)
    weight: torch.Tensor = field(repr=False)  # (layers, d), on standardized features
    bias: float
    threshold: float
    pooling: str = "last"
    penalty: float = 1.0
    cv_accuracy: float = float("nan")
    cv_table: dict[str, float] = field(default_factory=dict)
    formatting: Formatting | None = None
    false_match: float | None = None  # the threshold's rule: None = best balanced accuracy

    def scores(self, residuals: torch.Tensor) -> torch.Tensor:
        """Logits of ``(n, len(layers), d)`` residuals read at :attr:`layers`."""
        x = (residuals.double() - self.centre.double()) / self.scale.double()
        return (x * self.weight.double()).sum(dim=(1, 2)) + self.bias

    def prompt_scores(
        self, model: nn.Module, tokenizer: Any, prompts: Sequence[str], *, batch_size: int | None = None
    ) -> torch.Tensor:
        """Each prompt's logit (one prefill up to the last layer read)."""
        check_probe_model(model, self)
        acts = last_token_residuals(
            model,
            tokenizer,
            list(prompts),
            layers=list(self.layers),
            batch_size=batch_size,
            formatting=self.formatting,
            desc="condition",
            pooling=self.pooling,
        )
        return self.scores(acts)

    def negated(self) -> ProbeCondition:
        """The probe that matches exactly the prompts this one does not (``not:NAME``; ties
        excepted): logit and threshold turned round."""
        return dataclasses.replace(
            self, name=f"not:{self.name}", weight=-self.weight, bias=-self.bias, threshold=-self.threshold
        )

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "probe",
            "pooling": self.pooling,
            "layers": list(self.layers),
            "penalty": self.penalty,
            "threshold": round(self.threshold, 6),
            "threshold_rule": "best balanced accuracy"
            if self.false_match is None
            else f"at most {self.false_match:g} of unmatched prompts matched (out of fold)",
            "cv_balanced_accuracy": round(self.cv_accuracy, 4),
            "cv_table": {k: round(v, 4) for k, v in self.cv_table.items()},
        }


def fit_logistic(x: torch.Tensor, y: torch.Tensor, penalty: float) -> tuple[torch.Tensor, float]:
    """``(weights, bias)`` of the class-balanced logistic regression of ``y`` (bool) on the rows
    of ``x``, minimizing mean weighted log loss + ``|w|² / (2 C n)`` (``C`` = ``penalty``)."""
    if penalty <= 0:
        raise VaubanError(f"the probe's penalty C must be positive, got {penalty}; pass C > 0")
    x, target = x.double(), y.double()
    n, pos = len(target), float(target.sum())
    if pos in (0.0, float(n)):
        raise VaubanError("a probe needs matched and unmatched prompts to fit; give both")
    weights = torch.where(y, n / (2 * pos), n / (2 * (n - pos))).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=100, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, target, weight=weights)
        loss = loss + (w @ w) / (2 * penalty * n)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), float(b.detach())


def fold_of(y: torch.Tensor, folds: int) -> torch.Tensor:
    """Each row's fold: stratified, the ``i``-th row of each class in fold ``i mod folds``."""
    out = torch.empty(len(y), dtype=torch.long)
    for label in (True, False):
        rows = torch.nonzero(y == label).flatten()
        out[rows] = torch.arange(len(rows)) % folds
    return out


def standardized(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature centre and scale of ``x[rows]`` (scale floored so constant features stay 0)."""
    fit = x[rows]
    if len(fit) < 2:
        raise VaubanError(
            f"a probe cannot scale its features from {len(fit)} prompt(s); give it at least "
            f"{MIN_EXAMPLES} matched and {MIN_EXAMPLES} unmatched example prompts"
        )
    return fit.mean(0), fit.std(0).clamp_min(1e-6)


def check_examples(name: str, y: torch.Tensor) -> None:
    """Refuse to fit a probe on fewer than :data:`MIN_EXAMPLES` matched or unmatched prompts."""
    matched, unmatched = int(y.sum()), int((~y).sum())
    if min(matched, unmatched) < MIN_EXAMPLES:
        raise VaubanError(
            f"condition {name!r} has {matched} matched and {unmatched} unmatched example prompts; "
            f"a probe needs at least {MIN_EXAMPLES} of each: add examples, or use --condition-kind cosine"
        )


def out_of_fold(x: torch.Tensor, y: torch.Tensor, penalty: float, folds: int = FOLDS) -> torch.Tensor:
    """Each row's logit under the probe fitted (standardization included) without its fold."""
    fold, out = fold_of(y, folds), torch.empty(len(y), dtype=torch.float64)
    flat = x.reshape(len(x), -1).double()
    for k in range(folds):
        train, test = fold != k, fold == k
        centre, scale = standardized(flat, train)
        w, b = fit_logistic((flat[train] - centre) / scale, y[train], penalty)
        out[test] = ((flat[test] - centre) / scale) @ w + b
    return out


@dataclass(frozen=True)
class Choice:
    """What cross-validation chose: pooling, layers, penalty, threshold, the accuracy there, and
    every setting's accuracy."""

    pooling: str
    layers: tuple[int, ...]
    penalty: float
    threshold: float
    accuracy: float
    table: dict[str, float]


def strict_threshold(unmatched: torch.Tensor, false_match: float) -> float:
    """The lowest threshold above which at most ``false_match`` of the ``unmatched`` scores lie."""
    if not 0 <= false_match < 1:
        raise VaubanError(f"a false-match rate is a share in [0, 1), got {false_match}; pass e.g. 0.02")
    ranked = unmatched.double().sort(descending=True).values
    return float(ranked[int(false_match * len(ranked))])


def threshold_of(
    matched: torch.Tensor, unmatched: torch.Tensor, false_match: float | None
) -> tuple[float, float]:
    """``(threshold, balanced accuracy there)``: the best balanced accuracy's threshold, or with
    ``false_match`` the :func:`strict_threshold` that lets at most that share of unmatched through."""
    if false_match is None:
        return best_threshold(matched, unmatched)
    threshold = strict_threshold(unmatched, false_match)
    return threshold, balanced_accuracy(matched, unmatched, threshold)


def setting_logits(
    features: dict[str, torch.Tensor],
    y: torch.Tensor,
    *,
    penalties: Sequence[float] = PENALTIES,
    folds: int = FOLDS,
) -> dict[tuple[str, str, float], tuple[tuple[int, ...], torch.Tensor]]:
    """Per setting ``(pooling, layer set name, penalty)``: its layers and each row's out-of-fold
    logit (``features``: per pooling, ``(n, layers, d)`` residuals at every layer)."""
    folds = min(folds, int(y.sum()), int((~y).sum()))
    if folds < 2:
        raise VaubanError("a probe condition needs at least 2 matched and 2 unmatched example prompts")
    out = {}
    for pooling, acts in features.items():
        for name, chosen in layer_sets(acts.shape[1]).items():
            for c in penalties:
                out[(pooling, name, c)] = (chosen, out_of_fold(acts[:, list(chosen)], y, c, folds))
    return out


def pick_setting(
    logits: dict[tuple[str, str, float], tuple[tuple[int, ...], torch.Tensor]],
    y: torch.Tensor,
    false_match: float | None = None,
) -> Choice:
    """The setting of :func:`setting_logits` with the best balanced accuracy (ties: last-token
    pooling, fewer layers, the stronger penalty), its threshold by :func:`threshold_of` on its
    out-of-fold logits."""
    table, best = {}, None
    for (pooling, name, c), (chosen, scores) in logits.items():
        threshold, accuracy = best_threshold(scores[y], scores[~y])
        table[f"{pooling}, {name}, C {c:g}"] = accuracy
        key = (accuracy, pooling == "last", -len(chosen), -c)
        if best is None or key > best[0]:
            best = (key, (pooling, tuple(chosen), c, scores))
    assert best is not None
    pooling, chosen, c, scores = best[1]
    threshold, accuracy = threshold_of(scores[y], scores[~y], false_match)
    return Choice(pooling, chosen, c, threshold, accuracy, table)


def choose_probe(
    features: dict[str, torch.Tensor],
    y: torch.Tensor,
    *,
    penalties: Sequence[float] = PENALTIES,
    folds: int = FOLDS,
    false_match: float | None = None,
) -> Choice:
    """The pooling, layer set and penalty with the best cross-validated balanced accuracy on
    ``features`` (per pooling, ``(n, layers, d)`` residuals at every layer), and its threshold by
    :func:`threshold_of` (ties: last-token pooling, fewer layers, the stronger penalty)."""
    return pick_setting(setting_logits(features, y, penalties=penalties, folds=folds), y, false_match)


def fit_probe_condition(
    model: nn.Module,
    tokenizer: Any,
    sets: ConditionSets,
    *,
    batch_size: int | None = None,
    formatting: Formatting | None = None,
    show_progress: bool | None = None,
    false_match: float | None = None,
) -> ProbeCondition:
    """The probe condition of ``sets``, fitted and chosen on its ``measure`` + ``tune`` prompts
    (module docstring; ``false_match``: :func:`threshold_of`)."""
    fmt = resolved(formatting, tokenizer)
    matched = sets.matched["measure"] + sets.matched["tune"]
    unmatched = sets.unmatched["measure"] + sets.unmatched["tune"]
    check_examples(sets.name, torch.tensor([True] * len(matched) + [False] * len(unmatched)))
    features = {
        pooling: last_token_residuals(
            model,
            tokenizer,
            matched + unmatched,
            batch_size=batch_size,
            formatting=fmt,
            show_progress=show_progress,
            desc=f"condition ({pooling})",
            pooling=pooling,
        )
        for pooling in POOLINGS
    }
    y = torch.tensor([True] * len(matched) + [False] * len(unmatched))
    return probe_from_residuals(sets.name, features, y, fmt, false_match=false_match)


def probe_from_residuals(
    name: str,
    features: dict[str, torch.Tensor],
    y: torch.Tensor,
    formatting: Formatting | None = None,
    *,
    penalties: Sequence[float] = PENALTIES,
    folds: int = FOLDS,
    false_match: float | None = None,
) -> ProbeCondition:
    """The probe chosen by cross-validation on ``features`` (per pooling, ``(n, layers, d)``
    residuals at every layer) and their labels, then fitted on every row."""
    check_examples(name, y)
    choice = choose_probe(features, y, penalties=penalties, folds=folds, false_match=false_match)
    return fitted_probe(name, features, y, choice, formatting, false_match)


def fitted_probe(
    name: str,
    features: dict[str, torch.Tensor],
    y: torch.Tensor,
    choice: Choice,
    formatting: Formatting | None = None,
    false_match: float | None = None,
) -> ProbeCondition:
    """The probe of ``choice``'s setting and threshold, fitted on every row of ``features``."""
    x = features[choice.pooling][:, list(choice.layers)].double()
    centre, scale = standardized(x, torch.ones(len(y), dtype=torch.bool))
    w, b = fit_logistic(((x - centre) / scale).reshape(len(y), -1), y, choice.penalty)
    return ProbeCondition(
        name,
        choice.layers,
        centre.float(),
        scale.float(),
        w.reshape(x.shape[1:]).float(),
        b,
        choice.threshold,
        choice.pooling,
        choice.penalty,
        choice.accuracy,
        choice.table,
        formatting,
        false_match,
    )


def check_probe_model(model: nn.Module, condition: ProbeCondition) -> None:
    """Refuse a probe fitted on a model of another width or depth (its features would not fit)."""
    if max(condition.layers) >= arch.num_layers(model) or condition.centre.shape[-1] != arch.d_model(model):
        raise VaubanError(
            f"condition {condition.name!r} was fitted on another model; fit it again on this one"
        )
