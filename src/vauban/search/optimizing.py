"""Search the cut's parameters for the fewest refusals at the least damage, reproducibly.

Three objectives, all minimized, measured on prompts held apart from what ``evaluate`` reports:

- refusal: the share of *validation* harmful prompts still refused (bundled eval prompts 20-59
  by default; ``evaluate`` uses the first 20), judged on short greedy answers (32 tokens: a
  refusal shows early in the answer, and the selection check below judges at ``evaluate``'s
  length; the length study behind this is in docs/benchmarks.md);
- damage (``damage``): the first-token KL(original ‖ cut) on harmless prompts (the first 48
  bundled harmless prompts by default, so the reference set ``evaluate`` scores stays held out;
  one prefill each, the cost of a trial on a CPU; the original's distributions are computed
  once), or ``damage="k_tokens"``: the KL over the first ``kl_tokens`` tokens of the original's
  own greedy answers to them, teacher-forced (:mod:`vauban.runtime.scoring`; sees a cut that keeps
  the opening word and derails the sentence after it, at ~1.3× the prefill);
- refusal likelihood: the mean probability that the cut model still opens with the original
  model's own refusal (its first 8 tokens, teacher-forced) on the validation prompts the
  original refused. The refusal count is flat: once it is 0, a cut that barely answers scores
  like one that answers with margin, and the search drifts to the lightest cut that still
  answers the prompts it sees, which refuses again on the next hard prompt. The likelihood
  tells the two apart.

Each trial draws a cut (:class:`CutParams`, see :mod:`vauban.edit.cutting` for the formulas):

- ``direction_index``: a fractional layer whose (interpolated) direction is cut, within
  ``0.4..0.9`` of the depth (heretic's range) widened to include the measured layer;
- for attention and MLP writers separately, a :class:`~vauban.edit.cutting.LayerKernel`:
  ``max_weight`` in ``0.8..1.5``, ``peak`` in ``0.6..1`` of the depth, ``min_weight`` as a
  fraction ``0..1`` of ``max_weight``, ``width`` in ``1..layers-1``;
- optionally (``projected`` / ``norm_preserving`` = ``None``: searched) the projected
  direction and the norm-preserving edit.

The first trial is the plain cut (the measured direction, weight 1 on every writer), so the
front always contains it or a point that dominates it on the search prompts. Trials run with
Optuna's multi-objective TPE sampler, seeded: the same inputs give the same trials. Each trial
edits the one model in memory and undoes the edit bit-exactly.

After the search, the plain cut is *refined* (``refine_steps``, :mod:`vauban.search.refining`): gradient
steps give every writer its own weight, lowering the KL and the refusal likelihood together,
and the result is scored like any trial and stored as one more (its per-layer weights in the
trial's user attributes). Why both: the kernels move a cut along the trade-off curve of KL
against refusal likelihood that runs through the plain cut; per-writer weights move it below the
curve, but 48 of them are beyond a 30-trial TPE search (the demo model's study:
docs/benchmarks.md).

Why a third prompt set: the search pushes the cut as light as it can go while the refusal count
on its prompts stays at its minimum, so the lowest-KL point sits right on the edge where the
next, unseen prompt is refused again (seen on the demo model: docs/benchmarks.md). So the pick
is checked, like a validation split:
the plain cut and then the candidates that are no weaker than it on the search prompts (no more
refusals, no higher refusal likelihood) at a lower KL, lowest KL first, answer *selection*
prompts (bundled eval prompts 60-99 by default, judged at ``evaluate``'s answer length, 128
tokens, where late declines of other models show); :attr:`OptimizeResult.best`
is the first candidate that refuses no more than the plain cut there too, and the plain cut
itself when none does. Only refusal is checked: the first-token KL ranks cuts alike on other
harmless prompts.

With ``study=PATH`` the study lives in an SQLite file, with ``study=URL`` in any Optuna storage
(PostgreSQL, MySQL, a ``journal:PATH`` file; :mod:`vauban.search.studies`): an interrupted run,
started again with the same arguments, keeps the finished trials and runs only the missing ones,
and the same command started N times on one storage runs one study with N workers (the worker
that finishes its last trial refines, checks and exports). Trial ``k`` is drawn by a TPE sampler
seeded ``seed + k``, whichever run or worker draws it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import VaubanError
from ..direction.results import DirectionResult
from ..judge import get_judge
from ..text.formatting import formatting_for
from . import studies
from .checking import checked_pick
from .objectives import Scores
from .refining import budget, refine
from .searching import Search, study_result
from .settings import OptimizeSettings, prompt_sets, study_record
from .trials import CutParams, OptimizeResult, plain_trial_params


def optimize(
    model: nn.Module,
    tokenizer: Any,
    direction: DirectionResult,
    settings: OptimizeSettings | None = None,
    *,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> OptimizeResult:
    """Run the search until the study has ``n_trials`` finished trials, refine the plain cut, then
    check the pick on the selection prompts; the model ends unchanged.

    The options are the fields of :class:`~vauban.search.settings.OptimizeSettings` (each
    described there), given as ``settings`` or as keyword arguments (``n_trials=50``) that take
    the place of its values; both are validated before any work. Each trial and each check prints
    one line with ``show_progress`` or through ``log``.
    """
    started = time.perf_counter()
    studies.optuna_module()  # a one-line error naming the extra, before any work
    settings = OptimizeSettings.with_options(settings, options)
    if direction.harmful_means is None:
        raise VaubanError("optimize needs a DirectionResult with per-layer means; measure it again")
    judge = get_judge(settings.judge)
    check_judge = judge if settings.check_judge is None else get_judge(settings.check_judge)
    sets = prompt_sets(settings)
    fmt = formatting_for(direction, settings.formatting)
    plain = plain_trial_params(direction, settings.fixed)
    record = study_record(settings, direction, judge, sets, fmt)
    storage, the_study = studies.open_study(settings.study, settings.seed, record, plain)
    say = log if log is not None else (lambda line: print(line, flush=True)) if show_progress else None
    scores = Scores(model, tokenizer, direction, judge, fmt, sets, settings, check_judge)
    todo = settings.n_trials - len(studies.finished_search_trials(the_study))
    refining = _refining(the_study, settings)
    if todo > 0 or refining:
        scores.prepare()
    info = {
        "n_prompts": len(sets.harmful),
        "n_harmless": len(sets.neutral),
        "seed": settings.seed,
        "study": storage,
        "settings": record,
        "n_selection": len(sets.checking) if settings.check else 0,
        "check_judge": check_judge.spec,
    }
    search_until, refine_until = budget(started, settings.timeout, refining)
    search = Search(scores, settings.fixed, plain, info, say, settings.n_trials)
    search.run(the_study, search_until)
    finisher = studies.finisher(the_study)
    if not search.found_done and finisher != studies.WORKER:
        if say is not None:
            say(f"study complete: worker {finisher} refines, checks and exports")
        return study_result(the_study, settings.fixed, {}, **info, finished_here=False)
    _refine_plain(the_study, scores, settings, plain, say, refine_until)
    return checked_pick(the_study, scores, sets.checking, settings, info, say)


def _refining(the_study: Any, settings: OptimizeSettings) -> bool:
    """Whether to refine the plain cut: once per study; a norm-preserving one cannot be (see
    :mod:`vauban.search.refining`)."""
    return (
        settings.refine_steps > 0
        and not settings.fixed.get("norm_preserving")
        and not any(t.user_attrs.get("weights") for t in studies.finished(the_study))
    )


def _refine_plain(
    the_study: Any,
    scores: Scores,
    settings: OptimizeSettings,
    plain: dict[str, Any],
    say: Callable[[str], None] | None,
    deadline: float | None,
) -> None:
    """Refine the plain cut's per-layer weights (when the study has no refined trial yet), stopping
    where scoring the result, one trial's mean time in the study, would end past ``deadline``;
    score them as a weight edit and store the result as one more trial: the plain cut's
    parameters plus the weights in its user attributes (so a resumed study does not refine
    again). A refinement that took no step is the plain cut, already a trial: nothing is stored,
    and a resumed study refines. A study continued afterwards (more ``n_trials``) lets TPE read
    the refined trial as a second sample of the plain cut's parameters: a small bias towards the
    plain cut, which the search starts from anyway."""
    fixed = settings.fixed
    if settings.refine_steps and fixed.get("norm_preserving") and say is not None:
        say("no refinement: a norm-preserving cut rescales each written vector, which refine cannot express")
    if not _refining(the_study, settings):
        return
    scores.prepare()
    t0 = time.perf_counter()
    done = studies.finished(the_study)
    trial_seconds = sum(float(t.user_attrs.get("seconds", 0.0)) for t in done) / max(len(done), 1)
    refined = refine(
        scores.model,
        scores.tokenizer,
        CutParams.from_trial(plain, fixed).vector(scores.direction),
        scores.rows,
        scores.base,
        scores.refused,
        steps=settings.refine_steps,
        batch_size=settings.batch_size,
        log=say,
        formatting=scores.fmt,
        deadline=None if deadline is None else deadline - trial_seconds,
    )
    if say is not None:
        say(refined.summary())
    if not refined.steps:
        return
    weights = {"attention": list(refined.attention), "mlp": list(refined.mlp)}
    values = scores(CutParams.from_trial(plain, fixed, weights))
    seconds = time.perf_counter() - t0
    template = next(t for t in done if t.user_attrs.get("plain"))
    studies.add_finished(
        the_study, template, values, {"seconds": seconds, "plain": False, "weights": weights}
    )
    if say is not None:
        say(
            f"refined trial: refusal {values[0] * 100:5.1f}%  kl {values[1]:.4f}  "
            f"p(refusal) {values[2]:.1e}  ({seconds:.1f} s)"
        )


def export_trial(
    model: nn.Module,
    tokenizer: Any,
    direction: DirectionResult,
    result: OptimizeResult,
    number: int,
    output_dir: str | os.PathLike[str],
    *,
    source: str | None = None,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Export trial ``number``'s cut like ``abliterate`` does; the model ends unchanged.
    ``options`` (``format``, ``quant``, ``dtype``) go to :func:`vauban.export`."""
    from ..exports.exporting import cut_record, export

    chosen = result.trial(number)
    with chosen.params.apply(model, direction) as applied:
        record = cut_record(source or direction.model_path, applied, direction)
        record["optimization"] = {
            "trial": chosen.record(),
            "seed": result.seed,
            "study": result.study,
            "pareto": [t.record() for t in result.pareto],
        }
        return export(
            model, tokenizer, output_dir, direction=direction, record=record, overwrite=overwrite, **options
        )
