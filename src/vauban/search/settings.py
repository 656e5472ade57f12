"""What one :func:`vauban.search.optimizing.optimize` run is asked to do: one frozen, validated object.

:class:`OptimizeSettings` holds every option of the search (its prompts, trial count, answer
lengths, damage measure, refinement, study, judge, deadline), checked once when it is made, so the
search never meets a bad value halfway through. ``optimize(..., n_trials=50)`` keyword arguments
are folded into it by :meth:`OptimizeSettings.with_options`; the CLI builds it directly. Also here:
the bundled default prompt sets, and the record a resumed study must have been made with.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..core.errors import VaubanError, check_int
from ..direction.results import DirectionResult
from ..evaluation.evaluating import DEFAULT_MAX_TOKENS
from ..judge import Judge
from ..runtime.scoring import DAMAGES
from ..text.formatting import Formatting
from ..text.prompts import Prompts, bundled_records, load_prompts

# option -> its least value, for the whole-number options
_LEAST = {
    "n_trials": 1,
    "check": 0,
    "max_tokens": 1,
    "selection_tokens": 1,
    "kl_tokens": 1,
    "refine_steps": 0,
}


@dataclass(frozen=True)
class OptimizeSettings:
    """The options of one search, validated when made: a bad value is a one-line
    :class:`VaubanError` before any work.

    ``n_trials``: the study's finished search trials (other workers' included); ``seed``: trial
    ``k`` is drawn by a TPE sampler seeded ``seed + k``. ``study``: where the study lives (a path,
    an Optuna storage URL, ``journal:PATH``; :mod:`vauban.search.studies`), ``None`` in memory.

    ``prompts`` (search refusal), ``harmless`` (search KL) and ``selection`` (the check) default
    to disjoint bundled sets. ``max_tokens``: the length of the search's answers; ``damage``:
    ``"first_token"`` KL or ``"k_tokens"`` (the first ``kl_tokens`` tokens of the original's own
    answers, teacher-forced). ``check``: at most this many candidates answer the selection
    prompts (``selection_tokens`` tokens each), lowest search KL first, stopping at the first
    that refuses no more than the plain cut; ``0`` skips the check. ``refine_steps``: after the
    search, refine the plain cut's per-layer weights by this many gradient steps
    (:mod:`vauban.search.refining`) and score the result as one more trial; ``0`` skips it.
    ``projected`` / ``norm_preserving``: fix that cut variant on or off, or ``None`` to search it.

    ``judge`` counts the refusals of the search and of the check (a spec, a
    :class:`vauban.judge.Judge`, or ``None`` for the markers; recorded in the study's settings);
    ``check_judge``, if given, counts those of the check instead (e.g. ``"learned"``: a slower,
    more accurate judge where only a few cuts are judged).
    ``formatting``: how prompts are formatted, over the direction's own
    (:mod:`vauban.text.formatting`); thinking models are judged on their replies, and their
    refusals are teacher-forced after their thoughts. ``batch_size``: prompts per forward pass.

    ``timeout``: seconds, counted from the call, that the search and the refinement share (see
    :func:`vauban.search.refining.budget`): when refining, the search starts no new trial that
    would end after the first two thirds of them at its mean trial time so far (a new study
    always gets its plain cut), and refinement stops where another step, or scoring its result
    (one trial's time), would end past the timeout; without refinement the search has all of
    it. The check on the selection prompts (at most ``check`` + 1 cuts answering them) follows,
    outside the timeout, as does an export.
    """

    n_trials: int = 30
    prompts: Prompts | None = None
    harmless: Prompts | None = None
    selection: Prompts | None = None
    check: int = 4
    study: str | os.PathLike[str] | None = None
    projected: bool | None = None
    norm_preserving: bool | None = None
    max_tokens: int = 32
    selection_tokens: int = DEFAULT_MAX_TOKENS
    damage: str = "first_token"
    kl_tokens: int = 16
    refine_steps: int = 16
    batch_size: int | None = None
    seed: int = 0
    judge: str | Judge | None = None
    check_judge: str | Judge | None = None
    formatting: Formatting | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        for name, least in _LEAST.items():
            check_int(name, getattr(self, name), least)
        if self.damage not in DAMAGES:
            raise VaubanError(f"damage must be one of {', '.join(DAMAGES)}, got {self.damage!r}")
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise VaubanError(f"timeout must be a positive number of seconds, got {timeout!r}")

    @classmethod
    def with_options(cls, settings: OptimizeSettings | None, options: dict[str, Any]) -> OptimizeSettings:
        """``settings`` (default: the defaults) with ``options`` (keyword arguments) in its values' place."""
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise VaubanError(
                f"optimize has no option {', '.join(unknown)}; the options are the fields of OptimizeSettings"
            )
        return dataclasses.replace(settings or cls(), **options)

    @property
    def fixed(self) -> dict[str, bool]:
        """The cut variants fixed on or off (the others are searched)."""
        pairs = (("projected", self.projected), ("norm_preserving", self.norm_preserving))
        return {k: bool(v) for k, v in pairs if v is not None}


def default_harmless_prompts() -> list[str]:
    """The first 48 bundled harmless prompts: enough for the KL to rank cuts (every trial
    prefills each of them, the main cost of a trial on a CPU)."""
    return load_prompts("harmless")[:48]


def default_validation_prompts() -> list[str]:
    """Bundled eval prompts 20-59: disjoint from both the measurement sets and the 20 that
    :func:`vauban.evaluation.evaluating.evaluate` reports on."""
    return [r["prompt"] for r in bundled_records("eval_harmful")[20:60]]


def default_selection_prompts() -> list[str]:
    """Bundled eval prompts 60-99: disjoint from the search prompts and from what
    :func:`vauban.evaluation.evaluating.evaluate` reports on."""
    return [r["prompt"] for r in bundled_records("eval_harmful")[60:100]]


class PromptSets(NamedTuple):
    """The search's harmful prompts (refusal), its harmless ones (KL), the selection prompts (the check)."""

    harmful: list[str]
    neutral: list[str]
    checking: list[str]


def prompt_sets(settings: OptimizeSettings) -> PromptSets:
    """The settings' prompt sets (bundled by default); warns, at the caller of
    :func:`~vauban.search.optimizing.optimize`, when the check would run on prompts the search has seen."""
    harmful = default_validation_prompts() if settings.prompts is None else load_prompts(settings.prompts)
    neutral = (
        default_harmless_prompts()
        if settings.harmless is None
        else load_prompts(settings.harmless, what="harmless prompts")
    )
    checking = default_selection_prompts() if settings.selection is None else load_prompts(settings.selection)
    shared = len(set(harmful) & set(checking))
    if settings.check and shared:
        warnings.warn(
            f"{shared} selection prompts are also search prompts: the check of the pick is "
            "only as good as the prompts it has not seen; give disjoint sets",
            stacklevel=3,
        )
    return PromptSets(harmful, neutral, checking)


def study_record(
    settings: OptimizeSettings,
    direction: DirectionResult,
    judge: Judge,
    sets: PromptSets,
    fmt: Formatting | None,
) -> dict[str, Any]:
    """What a resumed study must have been made with (stored in the study)."""
    record = {
        "direction_layer": direction.layer_index,
        "num_layers": direction.num_layers,
        "model": direction.model_path,
        "fixed": settings.fixed,
        "prompts": len(sets.harmful),
        "harmless": len(sets.neutral),
        "max_tokens": settings.max_tokens,
        "judge": judge.spec,
        "objectives": ["refusal", "kl", "refusal_likelihood"],
    }
    if settings.damage != "first_token":  # absent for first-token KL, so older studies resume
        record["damage"] = {"kind": settings.damage, "kl_tokens": settings.kl_tokens}
    if fmt is not None and fmt != Formatting(thinking_tokens=fmt.thinking_tokens):
        record["formatting"] = fmt.record()  # recorded only when it says more than the defaults
    return record
