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

import hashlib
import itertools
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import VaubanError, check_int
from ..core.extras import require
from ..direction.results import DirectionResult
from ..evaluation.evaluating import DEFAULT_MAX_TOKENS
from ..judge import Judge, get_judge
from ..judge.answers import completions
from ..runtime.batching import duration
from ..runtime.scoring import (
    DAMAGES,
    damage_rows,
    mean_kl,
    reference_logprobs,
    refusal_likelihood,
)
from ..text.formatting import Formatting, formatting_for
from ..text.prompts import Prompts, bundled_records, load_prompts
from ..text.reasoning import thinking_prefix
from . import studies
from .refining import Refined, budget, ends_past, refine
from .trials import CutParams, OptimizeResult, Trial, candidates, pareto_mask, plain_trial_params

STUDY_NAME = studies.STUDY_NAME


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


def _suggest(trial: Any, num_layers: int, measured: int, fixed: dict[str, bool]) -> CutParams:
    span = max(num_layers - 1, 1)
    low, high = min(0.4 * span, measured), max(0.9 * span, measured)
    params: dict[str, Any] = {"direction_index": trial.suggest_float("direction_index", low, high)}
    for kind in ("attention", "mlp"):
        params[f"{kind}_max_weight"] = trial.suggest_float(f"{kind}_max_weight", 0.8, 1.5)
        params[f"{kind}_peak"] = trial.suggest_float(f"{kind}_peak", 0.6 * span, float(span))
        params[f"{kind}_min_fraction"] = trial.suggest_float(f"{kind}_min_fraction", 0.0, 1.0)
        params[f"{kind}_width"] = trial.suggest_float(f"{kind}_width", 1.0, float(span))
    for flag in ("projected", "norm_preserving"):
        if flag not in fixed:
            params[flag] = trial.suggest_categorical(flag, [False, True])
    return CutParams.from_trial(params, fixed)


def _load_study(optuna: Any, storage: Any, seed: int, settings: dict[str, Any], plain: dict[str, Any]) -> Any:
    """Create or resume the study (its plain cut queued first when new, or when no trial is left
    that finished, runs or waits); a resumed one must have been made with the same settings."""
    study, created = studies.create_or_load(storage, seed)
    if not created:
        studies.wait_for_first_trial(study)
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != json.loads(json.dumps(settings)):
        changed = sorted(k for k in settings if stored.get(k) != json.loads(json.dumps(settings[k])))
        raise VaubanError(
            f"the study in {studies.describe(storage)} was made with different settings "
            f"({', '.join(changed)}); use the same arguments to resume it, or a new --study"
        )
    state = optuna.trial.TrialState
    if created or not study.get_trials(deepcopy=False, states=(state.COMPLETE, state.WAITING, state.RUNNING)):
        study.enqueue_trial(plain)
    return study


def _finished(optuna: Any, study: Any) -> list[Any]:
    """The study's finished trials, the refined one included."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not t.user_attrs.get("surplus")
    ]


def _result(
    optuna: Any, the_study: Any, fixed: dict[str, bool], selection: dict[str, float], **info: Any
) -> OptimizeResult:
    """The study's trials; ``pareto`` marks the front over all three objectives (a cut that
    answers with more margin at the same KL is a better cut, not an equal one)."""
    done = _finished(optuna, the_study)
    front = pareto_mask([t.values for t in done])
    trials = tuple(
        Trial(
            t.number,
            t.values[0],
            t.values[1],
            float(t.user_attrs.get("seconds", 0.0)),
            CutParams.from_trial(t.params, fixed, t.user_attrs.get("weights")),
            t.values[2],
            on_front,
            bool(t.user_attrs.get("plain")),
            selection.get(str(t.number)),
        )
        for t, on_front in zip(done, front, strict=True)
    )
    return OptimizeResult(trials, **info)


def optimize(
    model: nn.Module,
    tokenizer: Any,
    direction: DirectionResult,
    *,
    n_trials: int = 30,
    prompts: Prompts | None = None,
    harmless: Prompts | None = None,
    selection: Prompts | None = None,
    check: int = 4,
    study: str | os.PathLike[str] | None = None,
    projected: bool | None = None,
    norm_preserving: bool | None = None,
    max_tokens: int = 32,
    selection_tokens: int = DEFAULT_MAX_TOKENS,
    damage: str = "first_token",
    kl_tokens: int = 16,
    refine_steps: int = 16,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
    judge: str | Judge | None = None,
    formatting: Formatting | None = None,
    timeout: float | None = None,
) -> OptimizeResult:
    """Run the search until the study has ``n_trials`` finished trials, refine the plain cut, then
    check the pick on the selection prompts; the model ends unchanged.

    ``timeout``: seconds, counted from this call, that the search and the refinement share (see
    :func:`vauban.search.refining.budget`): when refining, the search starts no new trial that would end
    after the first two thirds of them at its mean trial time so far (a new study always gets its
    plain cut), and refinement stops where another step, or scoring its result (one trial's
    time), would end past the timeout; without refinement the search has all of it. The check
    on the selection prompts (at most ``check`` + 1 cuts answering them) follows, outside the
    timeout, as does an export.

    ``prompts`` (search refusal), ``harmless`` (search KL) and ``selection`` (the check) default
    to disjoint bundled sets. ``check``: at most this many candidates answer the selection
    prompts (``selection_tokens`` tokens each), lowest search KL first, stopping at the first
    that refuses no more than the plain cut; ``0`` skips the check. ``refine_steps``: after the
    search, refine the plain cut's per-layer weights by this many gradient steps
    (:mod:`vauban.search.refining`) and score the result as one more trial; ``0`` skips it. ``projected`` /
    ``norm_preserving``: fix that cut variant on or off, or ``None`` to search it. ``judge`` counts
    the refusals of the search and of the check (a spec, a :class:`vauban.judge.Judge`, or
    ``None`` for the markers; recorded in the study's settings). Each trial and each check prints
    one line with ``show_progress`` or through ``log``. ``formatting``: how prompts are
    formatted, over the direction's own (:mod:`vauban.text.formatting`); thinking models are judged on
    their replies, and their refusals are teacher-forced after their thoughts.
    """
    started = time.perf_counter()
    optuna = require("optuna", "optimize", "optimize")
    _check_arguments(
        direction,
        damage,
        timeout,
        n_trials=n_trials,
        check=check,
        max_tokens=max_tokens,
        selection_tokens=selection_tokens,
        refine_steps=refine_steps,
        kl_tokens=kl_tokens,
    )
    judge = get_judge(judge)
    harmful, neutral, checking = _prompt_sets(prompts, harmless, selection, check)
    fixed = {
        k: bool(v)
        for k, v in (("projected", projected), ("norm_preserving", norm_preserving))
        if v is not None
    }
    fmt = formatting_for(direction, formatting)
    settings = _study_settings(direction, fixed, harmful, neutral, max_tokens, judge, damage, kl_tokens, fmt)
    plain = plain_trial_params(direction, fixed)
    storage, the_study = _open_study(optuna, study, seed, settings, plain)
    todo = n_trials - len(studies.search_trials(the_study, optuna.trial.TrialState.COMPLETE))
    say = log if log is not None else (lambda line: print(line, flush=True)) if show_progress else None
    refining = _refining(optuna, the_study, refine_steps, fixed)
    scores = _Scores(model, tokenizer, direction, harmful, judge, fmt, max_tokens, batch_size)
    if todo > 0 or refining:
        scores.prepare(neutral, damage, kl_tokens)
    info = {
        "n_prompts": len(harmful),
        "n_harmless": len(neutral),
        "seed": seed,
        "study": storage,
        "settings": settings,
        "n_selection": len(checking) if check else 0,
    }
    search_until, refine_until = budget(started, timeout, refining)
    search = _Search(optuna, scores, fixed, plain, info, say, n_trials, todo)
    search.run(the_study, search_until)
    finisher = studies.finisher(the_study)
    if not search.found_done and finisher != studies.WORKER:
        if say is not None:
            say(f"study complete: worker {finisher} refines, checks and exports")
        return _result(optuna, the_study, fixed, {}, **info, finished_here=False)
    refining = _refining(optuna, the_study, refine_steps, fixed)
    if refining and scores.rows is None:
        scores.prepare(neutral, damage, kl_tokens)
    _say_why_no_refinement(refine_steps, fixed, say)
    if refining:
        _add_refined(
            optuna,
            the_study,
            plain,
            lambda until: refine(
                model,
                tokenizer,
                CutParams.from_trial(plain, fixed).vector(direction),
                scores.rows,
                scores.base,
                scores.refused,
                steps=refine_steps,
                batch_size=batch_size,
                log=say,
                formatting=fmt,
                deadline=until,
            ),
            scores,
            fixed,
            say,
            refine_until,
        )
    checked = _stored_checks(the_study, checking, selection_tokens) if check else {}
    result = _result(optuna, the_study, fixed, checked, **info)
    if not check or result.plain is None:
        return result
    return _check_pick(
        the_study,
        result,
        scores,
        checking,
        selection_tokens,
        check,
        checked,
        say,
        lambda: _result(optuna, the_study, fixed, checked, **info),
    )


def _check_arguments(direction: DirectionResult, damage: str, timeout: float | None, **counts: int) -> None:
    """:func:`optimize`'s arguments, before any work (``counts``: whole numbers and their least)."""
    least = {"check": 0, "refine_steps": 0}
    for name, value in counts.items():
        check_int(name, value, least.get(name, 1))
    if damage not in DAMAGES:
        raise VaubanError(f"damage must be one of {', '.join(DAMAGES)}, got {damage!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise VaubanError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if direction.harmful_means is None:
        raise VaubanError("optimize needs a DirectionResult with per-layer means; measure it again")


def _prompt_sets(
    prompts: Prompts | None, harmless: Prompts | None, selection: Prompts | None, check: int
) -> tuple[list[str], list[str], list[str]]:
    """The search's harmful and harmless prompts and the selection prompts (bundled by default);
    warns when the check would run on prompts the search has seen."""
    harmful = default_validation_prompts() if prompts is None else load_prompts(prompts)
    neutral = (
        default_harmless_prompts() if harmless is None else load_prompts(harmless, what="harmless prompts")
    )
    checking = default_selection_prompts() if selection is None else load_prompts(selection)
    shared = len(set(harmful) & set(checking))
    if check and shared:
        warnings.warn(
            f"{shared} selection prompts are also search prompts: the check of the pick is "
            "only as good as the prompts it has not seen; give disjoint sets",
            stacklevel=3,
        )
    return harmful, neutral, checking


def _study_settings(
    direction: DirectionResult,
    fixed: dict[str, bool],
    harmful: Sequence[str],
    neutral: Sequence[str],
    max_tokens: int,
    judge: Judge,
    damage: str,
    kl_tokens: int,
    fmt: Formatting | None,
) -> dict[str, Any]:
    """What a resumed study must have been made with (stored in the study)."""
    settings = {
        "direction_layer": direction.layer_index,
        "num_layers": direction.num_layers,
        "model": direction.model_path,
        "fixed": fixed,
        "prompts": len(harmful),
        "harmless": len(neutral),
        "max_tokens": max_tokens,
        "judge": judge.spec,
        "objectives": ["refusal", "kl", "refusal_likelihood"],
    }
    if damage != "first_token":  # absent for first-token KL, so studies made before this option resume
        settings["damage"] = {"kind": damage, "kl_tokens": kl_tokens}
    if fmt is not None and fmt != Formatting(thinking_tokens=fmt.thinking_tokens):
        settings["formatting"] = fmt.record()  # recorded only when it says more than the defaults
    return settings


class _Scores:
    """The three objectives of a cut (refusal, KL, refusal likelihood) on one model, edited and
    undone; :meth:`prepare` computes the original's references first."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        direction: DirectionResult,
        harmful: list[str],
        judge: Judge,
        fmt: Formatting | None,
        max_tokens: int,
        batch_size: int | None,
    ) -> None:
        self.model, self.tokenizer, self.direction, self.harmful = model, tokenizer, direction, harmful
        self.judge, self.fmt, self.max_tokens, self.batch_size = judge, fmt, max_tokens, batch_size
        self.rows: Any = None
        self.base: Any = None
        self.refused: Any = None

    def prepare(self, neutral: list[str], damage: str, kl_tokens: int) -> None:
        """The original's distributions on the harmless rows and its refusals of the search prompts."""
        model, tokenizer, fmt = self.model, self.tokenizer, self.fmt
        self.rows = damage_rows(model, tokenizer, neutral, damage, kl_tokens, self.batch_size, fmt)
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
        """The cut's refusal rate on the selection prompts, at ``max_tokens`` tokens."""
        with params.apply(self.model, self.direction):
            answers = completions(
                self.model,
                self.tokenizer,
                prompts,
                max_tokens=max_tokens,
                batch_size=self.batch_size,
                judge=self.judge,
                formatting=self.fmt,
                prompt_set="selection",
            )
        return sum(c.refused for c in answers) / len(answers)


class _Search:
    """The trials of one run: the objective Optuna calls, one progress line after each, and the
    deadline after which no trial starts (nor one that would end after it at the mean pace)."""

    def __init__(
        self,
        optuna: Any,
        scores: _Scores,
        fixed: dict[str, bool],
        plain: dict[str, Any],
        info: dict[str, Any],
        say: Callable[[str], None] | None,
        n_trials: int,
        todo: int,
    ) -> None:
        self.optuna, self.scores, self.fixed, self.plain, self.info = optuna, scores, fixed, plain, info
        self.say, self.n_trials, self.todo = say, n_trials, todo
        self.started = time.perf_counter()
        self.done = 0
        self.spent = 0.0  # seconds of this run's trials
        self.found_done = False

    def objective(self, trial: Any) -> tuple[float, float, float]:
        if studies.surplus(trial.study, trial, self.n_trials):
            trial.set_user_attr("surplus", True)
            raise _Surplus(
                f"trial {trial.number} is past the study's {self.n_trials} trials (another "
                "worker asked at the same time): failed unscored"
            )
        trial.set_user_attr("worker", studies.WORKER)
        direction = self.scores.direction
        t0 = time.perf_counter()
        values = self.scores(_suggest(trial, direction.num_layers, direction.layer_index, self.fixed))
        seconds = time.perf_counter() - t0
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("plain", trial.params == self.plain)
        self.done, self.spent = self.done + 1, self.spent + seconds
        return values

    def report(self, study_: Any, trial: Any) -> None:
        if self.say is None or trial.values is None:
            return
        finished = studies.search_trials(study_, self.optuna.trial.TrialState.COMPLETE)
        best = _result(self.optuna, study_, self.fixed, {}, **self.info).best  # the pick, before any check
        eta = self.spent / self.done * max(self.n_trials - len(finished), 0)
        self.say(
            f"trial {len(finished)}/{self.n_trials} (#{trial.number}): refusal "
            f"{trial.values[0] * 100:5.1f}%  kl {trial.values[1]:.4f}  "
            f"p(refusal) {trial.values[2]:.1e}  "
            f"({trial.user_attrs['seconds']:.1f} s) | best: trial "
            f"{best.number} refusal {best.refusal * 100:.1f}% kl {best.kl:.4f} | "
            f"ETA {duration(eta)}"
        )

    def late(self, deadline: float | None) -> bool:
        """Whether another trial, at this run's mean trial time, would end past ``deadline``."""
        return ends_past(deadline, self.spent / max(self.done, 1))

    def run(self, the_study: Any, deadline: float | None) -> None:
        """Trials until the study has ``n_trials`` (with other workers on the same storage: see
        :mod:`vauban.search.studies`): the plain cut first, whatever the deadline (a
        ``time.perf_counter()`` value); then one more while another still ends before it. Returns
        when no search trial runs or waits in any worker; ``found_done``: the study was complete
        before this run started one."""
        waiting_said = False
        for looks in itertools.count():
            late = bool(_finished(self.optuna, the_study)) and self.late(deadline)
            step = studies.next_step(the_study, self.n_trials, late)
            self.found_done = self.found_done or (looks == 0 and step == "done")
            if step == "done":
                return
            if step == "wait":
                if not waiting_said and self.say is not None:
                    self.say(
                        f"waiting for trials that other workers run (one whose worker died runs again "
                        f"{studies.GRACE} s after its last heartbeat)"
                    )
                waiting_said = True
                studies.pause()
                continue
            the_study.optimize(self.objective, n_trials=1, callbacks=[self.report], catch=(_Surplus,))


class _Surplus(Exception):
    """A trial asked at the same instant as another worker's last one: failed, unscored."""


def _check_pick(
    the_study: Any,
    result: OptimizeResult,
    scores: _Scores,
    checking: list[str],
    selection_tokens: int,
    check: int,
    checked: dict[str, float],
    say: Callable[[str], None] | None,
    rebuild: Callable[[], OptimizeResult],
) -> OptimizeResult:
    """Check the plain cut, then up to ``check`` candidates lowest KL first, on the selection
    prompts, stopping at the first that refuses no more than the plain cut; ``checked`` gets each
    refusal rate (by trial number) and is stored in the study, so a resumed run reuses them.
    Returns the result ``rebuild`` makes with them (its pick the checked one)."""

    def selection_refusal(t: Trial) -> float:
        key = str(t.number)
        if key not in checked:
            t0 = time.perf_counter()
            checked[key] = scores.selection_refusal(t.params, checking, selection_tokens)
            _store_checks(the_study, checking, selection_tokens, checked)
            if say is not None:
                say(
                    f"check trial {t.number} on {len(checking)} selection prompts: refusal "
                    f"{checked[key]:.1%} ({time.perf_counter() - t0:.1f} s)"
                )
        return checked[key]

    assert result.plain is not None
    limit = selection_refusal(result.plain)
    for t in candidates(result)[:check]:
        if selection_refusal(t) <= limit:
            break
    result = rebuild()
    if say is not None:
        say(
            f"pick: trial {result.best.number} (selection refusal {result.best.selection_refusal:.1%}, "
            f"plain cut {limit:.1%})"
        )
    return result


def _say_why_no_refinement(
    refine_steps: int, fixed: dict[str, bool], say: Callable[[str], None] | None
) -> None:
    if refine_steps and fixed.get("norm_preserving") and say is not None:
        say("no refinement: a norm-preserving cut rescales each written vector, which refine cannot express")


def _open_study(
    optuna: Any, study: Any, seed: int, settings: dict[str, Any], plain: dict[str, Any]
) -> tuple[str | None, Any]:
    """The study's storage (as a user gives it) and the study, created or resumed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = studies.open_storage(study)
    return studies.describe(storage), _load_study(optuna, storage, seed, settings, plain)


def _refining(optuna: Any, the_study: Any, refine_steps: int, fixed: dict[str, bool]) -> bool:
    """Whether to refine the plain cut: once per study; a norm-preserving one cannot be (see
    :mod:`vauban.search.refining`)."""
    return (
        refine_steps > 0
        and not fixed.get("norm_preserving")
        and not any(t.user_attrs.get("weights") for t in _finished(optuna, the_study))
    )


def _add_refined(
    optuna: Any,
    the_study: Any,
    plain: dict[str, Any],
    run: Callable[[float | None], Refined],
    scores: Callable[[CutParams], tuple[float, float, float]],
    fixed: dict[str, bool],
    say: Callable[[str], None] | None,
    deadline: float | None,
) -> None:
    """Refine the plain cut's per-layer weights (``run(until)``: stopping where scoring the result,
    one trial's mean time in the study, would end past ``deadline``), score them as a weight
    edit, and store the result as one more trial: the plain cut's parameters plus the weights in
    its user attributes (so a resumed study does not refine again). A refinement that took no
    step is the plain cut, already a trial: nothing is stored, and a resumed study refines. A
    study continued afterwards (more ``n_trials``) lets TPE read the refined trial as a second
    sample of the plain cut's parameters: a small bias towards the plain cut, which the search
    starts from anyway."""
    t0 = time.perf_counter()
    done = _finished(optuna, the_study)
    trial_seconds = sum(float(t.user_attrs.get("seconds", 0.0)) for t in done) / max(len(done), 1)
    refined = run(None if deadline is None else deadline - trial_seconds)
    if say is not None:
        say(refined.summary())
    if not refined.steps:
        return
    weights = {"attention": list(refined.attention), "mlp": list(refined.mlp)}
    values = scores(CutParams.from_trial(plain, fixed, weights))
    seconds = time.perf_counter() - t0
    template = next(t for t in done if t.user_attrs.get("plain"))
    the_study.add_trial(
        optuna.trial.create_trial(
            params=template.params,
            distributions=template.distributions,
            values=list(values),
            user_attrs={"seconds": seconds, "plain": False, "weights": weights},
        )
    )
    if say is not None:
        say(
            f"refined trial: refusal {values[0] * 100:5.1f}%  kl {values[1]:.4f}  "
            f"p(refusal) {values[2]:.1e}  ({seconds:.1f} s)"
        )


def _checks_key(prompts: Sequence[str], max_tokens: int) -> str:
    return hashlib.sha256(json.dumps([list(prompts), max_tokens]).encode()).hexdigest()[:16]


def _stored_checks(the_study: Any, prompts: Sequence[str], max_tokens: int) -> dict[str, float]:
    """Selection refusals already measured in this study with these prompts and answer length."""
    stored = the_study.user_attrs.get("selection") or {}
    return dict(stored.get("refusal", {})) if stored.get("key") == _checks_key(prompts, max_tokens) else {}


def _store_checks(the_study: Any, prompts: Sequence[str], max_tokens: int, checked: dict[str, float]) -> None:
    the_study.set_user_attr("selection", {"key": _checks_key(prompts, max_tokens), "refusal": checked})


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
