"""What an optimization found: each trial's cut (:class:`CutParams`), its scores (:class:`Trial`),
the Pareto front and the pick (:class:`OptimizeResult`).

The search itself (Optuna, the objectives, the check of the pick on selection prompts) is
:mod:`vauban.search.optimizing`; see its docstring for why the pick is the
lowest-KL trial no weaker than the plain cut that, where checked, refuses no more than it on the
selection prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.atomic import write_file
from ..core.errors import VaubanError
from ..direction.results import DirectionResult
from ..edit.cutting import Cut, LayerKernel, LayerWeights, cut


@dataclass(frozen=True)
class CutParams:
    """One point of the search space: everything needed to redo the cut. ``attention`` and
    ``mlp`` are kernels, or one weight per layer for a refined trial (:mod:`vauban.search.refining`)."""

    direction_index: float
    attention: LayerWeights
    mlp: LayerWeights
    projected: bool = False
    norm_preserving: bool = False

    @classmethod
    def from_trial(
        cls, params: dict[str, Any], fixed: dict[str, bool], weights: dict[str, list[float]] | None = None
    ) -> CutParams:
        """From an Optuna trial's parameters (kernel minimum stored as a fraction of the peak);
        ``weights`` (a refined trial's per-layer weights, kept in its user attributes) replace
        the kernels."""

        def kernel(kind: str) -> LayerKernel:
            top = float(params[f"{kind}_max_weight"])
            return LayerKernel(
                peak=float(params[f"{kind}_peak"]),
                max_weight=top,
                min_weight=top * float(params[f"{kind}_min_fraction"]),
                width=float(params[f"{kind}_width"]),
            )

        flags = {k: bool(params.get(k, fixed.get(k, False))) for k in ("projected", "norm_preserving")}
        if weights:
            return cls(
                float(params["direction_index"]), tuple(weights["attention"]), tuple(weights["mlp"]), **flags
            )
        return cls(float(params["direction_index"]), kernel("attention"), kernel("mlp"), **flags)

    @property
    def refined(self) -> bool:
        return not isinstance(self.attention, LayerKernel)

    def vector(self, direction: DirectionResult) -> torch.Tensor:
        """The unit direction this cut removes."""
        return direction.direction_at(self.direction_index, projected=self.projected)

    def apply(self, model: nn.Module, direction: DirectionResult) -> Cut:
        """Apply this cut to ``model`` (an applied :class:`~vauban.edit.cutting.Cut`)."""
        return cut(
            model,
            self.vector(direction),
            attention=self.attention,
            mlp=self.mlp,
            norm_preserving=self.norm_preserving,
        )

    def record(self) -> dict[str, Any]:
        return {
            "direction_index": self.direction_index,
            "attention": _weights_record(self.attention),
            "mlp": _weights_record(self.mlp),
            "projected": self.projected,
            "norm_preserving": self.norm_preserving,
        }


def _weights_record(spec: LayerWeights) -> dict[str, float] | list[float]:
    return vars(spec) if isinstance(spec, LayerKernel) else [round(float(w), 6) for w in spec]


def plain_trial_params(direction: DirectionResult, fixed: dict[str, bool]) -> dict[str, Any]:
    """The Optuna parameters of the plain cut: the measured layer, weight 1 on every writer."""
    span = direction.num_layers - 1
    params: dict[str, Any] = {"direction_index": float(direction.layer_index)}
    for kind in ("attention", "mlp"):
        params |= {
            f"{kind}_max_weight": 1.0,
            f"{kind}_peak": float(span),
            f"{kind}_min_fraction": 1.0,
            f"{kind}_width": float(max(span, 1)),
        }
    return params | {k: False for k in ("projected", "norm_preserving") if k not in fixed}


@dataclass(frozen=True)
class Trial:
    """One finished trial: its number in the study, its objectives, and its cut."""

    number: int
    refusal: float
    kl: float
    seconds: float
    params: CutParams
    likelihood: float = 0.0  # mean probability of opening with the original's refusal
    pareto: bool = False
    plain: bool = False  # the plain cut every study starts with
    selection_refusal: float | None = None  # refusal on the selection prompts, when checked

    def record(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "refusal": self.refusal,
            "kl": self.kl,
            "refusal_likelihood": self.likelihood,
            "seconds": self.seconds,
            "pareto": self.pareto,
            "plain": self.plain,
            "selection_refusal": self.selection_refusal,
            "cut": self.params.record(),
        }


@dataclass(frozen=True)
class OptimizeResult:
    """Every finished trial in order, the Pareto front among them, and how they were made."""

    trials: tuple[Trial, ...]
    n_prompts: int
    n_harmless: int
    seed: int
    n_selection: int = 0
    check_judge: str | None = None  # the judge of the check on the selection prompts
    study: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    # False in a worker of a shared study that left the refinement, the check and any export to the
    # worker that finished its last trial (see vauban.search.studies): the search trials only.
    finished_here: bool = True

    @property
    def pareto(self) -> tuple[Trial, ...]:
        """Trials no other trial beats on refusal, KL and refusal likelihood at once, fewest
        refusals first, then lowest KL."""
        return tuple(sorted((t for t in self.trials if t.pareto), key=lambda t: (t.refusal, t.kl)))

    @property
    def best(self) -> Trial:
        """The recommended cut: the lowest-KL trial no weaker than the plain cut on the search
        prompts (no more refusals, no higher refusal likelihood) that, where checked, refuses no
        more than it on the selection prompts; the plain cut when none does (any trial can
        still be exported)."""
        plain = self.plain
        if plain is None:  # a study started elsewhere: fewest refusals, then least damage
            return min(self.trials, key=lambda t: (t.refusal, t.kl, t.number))
        checked = plain.selection_refusal is not None

        def admissible(t: Trial) -> bool:
            if not _no_weaker(t, plain):
                return False
            if not checked:
                return True
            return (
                t.selection_refusal is not None
                and plain.selection_refusal is not None
                and t.selection_refusal <= plain.selection_refusal
            )

        return min(filter(admissible, self.trials), key=lambda t: (t.kl, t.number))

    @property
    def plain(self) -> Trial | None:
        """The plain-cut trial, when the study has finished it."""
        return next((t for t in self.trials if t.plain), None)

    @property
    def seconds_per_trial(self) -> float:
        return sum(t.seconds for t in self.trials) / max(len(self.trials), 1)

    def trial(self, number: int) -> Trial:
        for t in self.trials:
            if t.number == number:
                return t
        raise VaubanError(
            f"no finished trial {number} in this study; trials: {[t.number for t in self.trials]}"
        )

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """Column names and one row of text per Pareto point, plus the plain cut and the pick
        when they are not on the front (the pick is starred)."""
        best = self.best
        shown = dict.fromkeys([*self.pareto, *(t for t in (self.plain, best) if t is not None)])
        damage = self.settings.get("damage")
        kl_name = f"{damage['kl_tokens']}-token KL" if damage else "first-token KL"
        columns = [
            "trial",
            "refusal",
            kl_name,
            "p(refusal)",
            "selection refusal",
            "direction",
            "attention kernel",
            "MLP kernel",
            "projected",
            "norm-preserving",
        ]
        rows = [
            [
                f"{t.number}{' (plain)' if t.plain else ''}{' *' if t is best else ''}",
                f"{t.refusal:.1%}",
                f"{t.kl:.4f}",
                f"{t.likelihood:.1e}",
                "-" if t.selection_refusal is None else f"{t.selection_refusal:.1%}",
                f"{t.params.direction_index:.2f}",
                _kernel_text(t.params.attention),
                _kernel_text(t.params.mlp),
                "yes" if t.params.projected else "no",
                "yes" if t.params.norm_preserving else "no",
            ]
            for t in shown
        ]
        return columns, rows

    def table(self) -> str:
        """:meth:`rows` as aligned plain text."""
        columns, rows = self.rows()
        widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
        return "\n".join(
            "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [columns, *rows]
        )

    def summary(self) -> str:
        b = self.best
        checked = "" if b.selection_refusal is None else f", selection refusal={b.selection_refusal:.1%}"
        return (
            f"OptimizeResult: trials={len(self.trials)}, pareto={len(self.pareto)}, best trial={b.number} "
            f"(refusal={b.refusal * 100:.1f}%, kl={b.kl:.4f}{checked}), "
            f"{self.seconds_per_trial:.1f} s/trial, prompts={self.n_prompts}"
        )

    def record(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "study": self.study,
            "n_prompts": self.n_prompts,
            "n_harmless": self.n_harmless,
            "n_selection": self.n_selection,
            "check_judge": self.check_judge,
            "settings": self.settings,
            "seconds_per_trial": self.seconds_per_trial,
            "best": self.best.number,
            "pareto": [t.number for t in self.pareto],
            "trials": [t.record() for t in self.trials],
        }

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`record` as JSON, atomically."""
        text = json.dumps(self.record(), indent=2) + "\n"
        return write_file(path, lambda tmp: tmp.write_text(text))


def _kernel_text(k: LayerWeights) -> str:
    if not isinstance(k, LayerKernel):
        return f"per layer {min(k):.2f}..{max(k):.2f}"
    return f"peak {k.peak:.1f} w {k.max_weight:.2f}→{k.min_weight:.2f} ±{k.width:.1f}"


def _no_weaker(t: Trial, plain: Trial) -> bool:
    return t.refusal <= plain.refusal and t.likelihood <= plain.likelihood


def candidates(result: OptimizeResult) -> list[Trial]:
    """Trials that beat the plain cut on the search prompts (no weaker, lower KL),
    lowest KL first: the order in which the pick is checked on the selection prompts."""
    plain = result.plain
    if plain is None:
        return []
    better = (t for t in result.trials if not t.plain and _no_weaker(t, plain) and t.kl < plain.kl)
    return sorted(better, key=lambda t: (t.kl, t.number))


def pareto_mask(points: Sequence[Sequence[float]]) -> list[bool]:
    """Which points no other point dominates (no worse on every objective, better on one; all
    minimized). Equal points do not dominate each other."""

    def dominates(b: Sequence[float], a: Sequence[float]) -> bool:
        return all(x <= y for x, y in zip(b, a, strict=True)) and tuple(b) != tuple(a)

    return [not any(dominates(b, a) for b in points) for a in points]
