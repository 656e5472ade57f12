"""The search's trials: each draws a cut (:func:`suggest`), is scored, and prints one line.

:class:`Search` runs the trials of one run until the study has ``n_trials`` (other workers on the
same storage counted: :mod:`vauban.search.studies`), starting none that would end past the
deadline; :func:`study_result` reads the study back as an :class:`~vauban.search.trials.OptimizeResult`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from ..runtime.batching import duration
from . import studies
from .objectives import Scores
from .refining import ends_past
from .trials import CutParams, OptimizeResult, Trial, pareto_mask


def suggest(trial: Any, num_layers: int, measured: int, fixed: dict[str, bool]) -> CutParams:
    """The cut an Optuna ``trial`` draws (the ranges: :mod:`vauban.search.optimizing`); ``fixed``
    variants are not drawn."""
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


def study_result(
    the_study: Any, fixed: dict[str, bool], selection: dict[str, float], **info: Any
) -> OptimizeResult:
    """The study's trials; ``pareto`` marks the front over all three objectives (a cut that
    answers with more margin at the same KL is a better cut, not an equal one)."""
    done = studies.finished(the_study)
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


class Search:
    """The trials of one run: the objective Optuna calls, one progress line after each, and the
    deadline after which no trial starts (nor one that would end after it at the mean pace)."""

    def __init__(
        self,
        scores: Scores,
        fixed: dict[str, bool],
        plain: dict[str, Any],
        info: dict[str, Any],
        say: Callable[[str], None] | None,
        n_trials: int,
    ) -> None:
        self.scores, self.fixed, self.plain, self.info = scores, fixed, plain, info
        self.say, self.n_trials = say, n_trials
        self.done = 0
        self.spent = 0.0  # seconds of this run's trials
        self.found_done = False

    def objective(self, trial: Any) -> tuple[float, float, float]:
        """Score the cut ``trial`` draws (a trial past ``n_trials`` fails unscored: :class:`Surplus`)."""
        if studies.surplus(trial.study, trial, self.n_trials):
            trial.set_user_attr("surplus", True)
            raise Surplus(
                f"trial {trial.number} is past the study's {self.n_trials} trials (another "
                "worker asked at the same time): failed unscored"
            )
        trial.set_user_attr("worker", studies.WORKER)
        direction = self.scores.direction
        t0 = time.perf_counter()
        values = self.scores(suggest(trial, direction.num_layers, direction.layer_index, self.fixed))
        seconds = time.perf_counter() - t0
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("plain", trial.params == self.plain)
        self.done, self.spent = self.done + 1, self.spent + seconds
        return values

    def report(self, study_: Any, trial: Any) -> None:
        """One progress line after a finished trial: its scores, the pick so far, the time left."""
        if self.say is None or trial.values is None:
            return
        finished = studies.finished_search_trials(study_)
        best = study_result(study_, self.fixed, {}, **self.info).best  # the pick, before any check
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
            late = bool(studies.finished(the_study)) and self.late(deadline)
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
            the_study.optimize(self.objective, n_trials=1, callbacks=[self.report], catch=(Surplus,))


class Surplus(Exception):
    """A trial asked at the same instant as another worker's last one: failed, unscored."""
