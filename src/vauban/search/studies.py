"""Where an optimize study lives and how several workers share it.

A study is the unit that workers share: start the same ``optimize`` N times (one per GPU or
machine) on one storage and they run one study of ``n_trials`` trials.

- Storage (:func:`open_storage`): any Optuna storage. A URL (``postgresql://``, ``mysql://``,
  ``sqlite:///``) is an RDB storage, ``journal:PATH`` a journal file (for a shared file system:
  NFS and the like, with an ``open()`` lock), a plain path an SQLite file.
- Heartbeat: a running trial records a heartbeat every :data:`HEARTBEAT` seconds (Optuna's own
  for RDB storages; the same protocol written as a trial attribute for journal files). A trial
  silent for :data:`GRACE` seconds belongs to a dead worker: the next worker to look fails it
  and queues the same parameters again (Optuna's ``RetryFailedTrialCallback``), so a killed
  worker's trial is run again, not lost.
- Exact count (:func:`next_step`, :func:`surplus`): a worker starts a trial only while fewer than
  ``n_trials`` search trials are finished, running or queued; two workers that ask at the same
  instant get distinct trial numbers from the storage, and the one whose trial would be past
  ``n_trials`` fails it at once, unscored (user attribute ``surplus``). A worker with nothing
  left to start waits for the other workers' running trials (failing the stale ones), so every
  worker sees the same finished study.
- Seeds (:class:`TrialSeeded`): trial ``k`` draws from a TPE sampler seeded ``seed + k``,
  whichever worker asks, so workers with the same ``--seed`` never draw the same random trial,
  and trials drawn from the same history are the same trials one worker would have drawn.
- One finisher (:func:`finisher`): the worker that finished the highest-numbered search trial
  refines, checks and exports; the others stop. A command started on a study that was already
  complete finishes it too (how to finish a study whose finishing worker died).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import VaubanError
from ..core.extras import require

STUDY_NAME = "vauban"
HEARTBEAT = 30  # seconds between a running trial's heartbeats
GRACE = 120  # seconds without a heartbeat after which a running trial is failed and queued again
RETRIES = 3  # times one trial's parameters are queued again after its worker died
POLL = 1.0  # seconds between looks at the study while other workers' trials run
BEAT_KEY = "vauban:heartbeat"
WORKER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this process, in trial attributes


def open_storage(study: Any, *, heartbeat: int = HEARTBEAT, grace: int = GRACE) -> Any:
    """The Optuna storage for ``study``: ``None`` (in memory), an Optuna storage (as given), a URL
    with ``://`` (an RDB storage: PostgreSQL, MySQL, SQLite), ``journal:PATH`` (a journal file)
    or a file path (SQLite); with a heartbeat of ``heartbeat`` seconds and failed trials run again."""
    optuna = optuna_module()
    if study is None or isinstance(study, optuna.storages.BaseStorage):
        return study
    text = os.fspath(study)
    with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        stores = optuna.storages
        # Optuna 4.9 renamed the retry callback and its argument; older releases have the old names
        newer = hasattr(stores, "RetryHeartbeatStaleTrialCallback")
        retry = (stores.RetryHeartbeatStaleTrialCallback if newer else stores.RetryFailedTrialCallback)(
            max_retry=RETRIES
        )
        if text.startswith("journal:"):
            path = _file(text.removeprefix("journal:"))
            lock = stores.journal.JournalFileOpenLock(str(path))
            backend = stores.journal.JournalFileBackend(str(path), lock_obj=lock)
            return _heartbeat_journal(optuna)(backend, heartbeat, grace, retry)
        url = text if "://" in text else f"sqlite:///{_file(text)}"
        callback = {"heartbeat_stale_trial_callback" if newer else "failed_trial_callback": retry}
        return _rdb(stores, url, heartbeat, grace, callback)


def _rdb(stores: Any, url: str, heartbeat: int, grace: int, callback: dict[str, Any]) -> Any:
    """An RDB storage; N workers on a new database race to create Optuna's tables (one sees a
    duplicate-key or already-exists error): the losers try again once the tables are there."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            return stores.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace, **callback)
        except (IntegrityError, ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
        except ImportError as e:
            raise VaubanError(
                f"the storage {describe(url)} needs a database driver ({e}); pip install it "
                "(PostgreSQL: psycopg[binary]; MySQL: PyMySQL)"
            ) from None
    raise AssertionError("unreachable")


def _file(text: str) -> Path:
    path = Path(text).expanduser().absolute()
    if path.is_dir():
        raise VaubanError(f"study path {path} is a directory; give a file such as study.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def describe(storage: Any) -> str | None:
    """The storage as a user would give it again (a URL's password hidden); ``None`` in memory."""
    if storage is None:
        return None
    url = storage if isinstance(storage, str) and "://" in storage else getattr(storage, "url", None)
    if isinstance(storage, str | os.PathLike) and url is None:
        return os.fspath(storage)
    if url is not None:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    backend = getattr(storage, "_backend", None)
    path = getattr(backend, "_file_path", None)
    return f"journal:{path}" if path is not None else type(storage).__name__


def _heartbeat_journal(optuna: Any) -> type:
    """A journal storage with Optuna's heartbeat protocol: the beat is a trial system attribute
    holding the trial's id and the time (so a queued copy of a failed trial does not inherit its
    last beat); a running trial with no beat counts from its start."""
    from optuna.storages._heartbeat import BaseHeartbeat

    class HeartbeatJournal(optuna.storages.JournalStorage, BaseHeartbeat):
        def __init__(self, backend: Any, heartbeat: int, grace: int, callback: Any) -> None:
            super().__init__(backend)
            self._beat, self._grace, self._callback = heartbeat, grace, callback

        def record_heartbeat(self, trial_id: int) -> None:
            # a trial failed as stale by another worker meanwhile: its copy runs elsewhere
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.set_trial_system_attr(trial_id, BEAT_KEY, [trial_id, time.time()])

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now, stale = time.time(), []
            running = (optuna.trial.TrialState.RUNNING,)
            for t in self.get_all_trials(study_id, deepcopy=False, states=running):
                beat = t.system_attrs.get(BEAT_KEY)
                if beat and beat[0] == t._trial_id:
                    last = beat[1]
                elif t.datetime_start is not None:
                    last = t.datetime_start.timestamp()
                else:
                    continue
                if now - last > self._grace:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int:
            return self._beat

        def get_heartbeat_stale_trial_callback(self) -> Any:
            return self._callback

        def get_failed_trial_callback(self) -> Any:  # its name before Optuna 4.9
            return self._callback

    return HeartbeatJournal


def optuna_module() -> Any:
    """The ``optuna`` module, imported here and nowhere else in vauban, or a one-line error naming
    the ``optimize`` extra (not kept: a test can take optuna away)."""
    return require("optuna", "optimize", "optimize")


STARTUP = 10  # TPE's random start-up trials


class TrialSeeded:
    """Optuna's multivariate TPE, seeded ``seed + k`` for trial ``k`` (``constant_liar``: a worker
    does not draw next to the trials others are running), its first :data:`STARTUP` trials random
    by their number, so that every worker draws trial ``k`` as a lone run does. A sampler, by
    delegation."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._number: int | None = None
        self._tpe: Any = None

    def _for(self, trial: Any) -> Any:
        if trial.number != self._number:
            self._number, seed = trial.number, self.seed + trial.number
            samplers = optuna_module().samplers
            # the start-up trials by number (TPE's own rule counts the trials finished when it
            # draws, which another worker's trials change): the draws TPE's start-up would make
            self._tpe = (
                samplers.RandomSampler(seed=seed)
                if trial.number < STARTUP
                else samplers.TPESampler(
                    seed=seed, multivariate=True, n_startup_trials=STARTUP, constant_liar=True
                )
            )
        return self._tpe

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        return self._for(trial).sample_independent(study, trial, name, distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing: the seed of each trial is fixed by its number."""


def sampler(seed: int) -> Any:
    """A :class:`TrialSeeded` that Optuna accepts as a sampler."""
    optuna = optuna_module()
    kind = type("TrialSeededSampler", (TrialSeeded, optuna.samplers.BaseSampler), {})
    return kind(seed)


def create_or_load(storage: Any, seed: int) -> tuple[Any, bool]:
    """The study and whether this call created it (exactly one of N workers starting at once does)."""
    optuna = optuna_module()
    directions = ["minimize"] * 3
    try:
        return optuna.create_study(
            study_name=STUDY_NAME, storage=storage, directions=directions, sampler=sampler(seed)
        ), True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    try:
        return optuna.create_study(
            study_name=STUDY_NAME,
            storage=storage,
            load_if_exists=True,
            directions=directions,
            sampler=sampler(seed),
        ), False
    except ValueError as e:  # a study with other objectives (an older vauban's)
        raise VaubanError(
            f"the study in {describe(storage)} cannot be resumed ({e}); use a new --study"
        ) from None


def wait_for_first_trial(study: Any, timeout: float = 120.0) -> None:
    """Wait until the study's creator has queued its first trial (the plain cut), so that it is
    trial 0 whichever worker runs it."""
    ends = time.monotonic() + timeout
    while not study.get_trials(deepcopy=False):
        if time.monotonic() > ends:
            raise VaubanError(
                f"the study in {describe(study._storage)} has no trial after {timeout:.0f} s: "
                "its creator died before queuing the plain cut; start again with a new --study"
            )
        time.sleep(POLL / 4)


def pause() -> None:
    """Wait :data:`POLL` seconds before looking at the study again."""
    time.sleep(POLL)


def is_search(trial: Any) -> bool:
    """A search trial: not the refined cut, nor a surplus trial failed unscored."""
    return not trial.user_attrs.get("weights") and not trial.user_attrs.get("surplus")


def search_trials(study: Any, *states: Any) -> list[Any]:
    """The study's search trials in these states (all when none), in trial-number order."""
    trials = study.get_trials(deepcopy=False, states=states or None)
    return [t for t in trials if is_search(t)]


def next_step(study: Any, n_trials: int, late: bool) -> str:
    """What a worker does next: ``"trial"`` (start one), ``"wait"`` (other workers' trials are
    running or queued) or ``"done"``. Fails the trials of dead workers first (their parameters
    are queued again). ``late``: start no trial (the deadline), but wait for the running ones."""
    optuna = optuna_module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    state = optuna.trial.TrialState
    active = search_trials(study, state.COMPLETE, state.RUNNING, state.WAITING)
    waiting = any(t.state == state.WAITING for t in active)
    if not late and (waiting or len(active) < n_trials):
        return "trial"
    return "wait" if any(t.state != state.COMPLETE for t in active) else "done"


def surplus(study: Any, trial: Any, n_trials: int) -> bool:
    """Whether ``trial`` (just asked) would be past ``n_trials``: that many search trials with
    smaller numbers are finished, running or queued (another worker asked at the same instant)."""
    state = optuna_module().trial.TrialState
    before = [
        t
        for t in search_trials(study, state.COMPLETE, state.RUNNING, state.WAITING)
        if t.number < trial.number
    ]
    return len(before) >= n_trials


def finisher(study: Any) -> str | None:
    """The worker that refines, checks and exports: the one that finished the highest-numbered
    search trial (every worker reads the same answer from the finished study)."""
    done = finished_search_trials(study)
    return max(done, key=lambda t: t.number).user_attrs.get("worker") if done else None


def open_study(
    study: Any, seed: int, settings: dict[str, Any], plain: dict[str, Any]
) -> tuple[str | None, Any]:
    """The study's storage (as a user gives it) and the study, created or resumed: its plain cut
    queued first when new, or when no trial is left that finished, runs or waits; a resumed one
    must have been made with the same ``settings``."""
    optuna = optuna_module()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(study)
    the_study, created = create_or_load(storage, seed)
    if not created:
        wait_for_first_trial(the_study)
    stored = the_study.user_attrs.get("settings")
    if stored is None:
        the_study.set_user_attr("settings", settings)
    elif stored != json.loads(json.dumps(settings)):
        changed = sorted(k for k in settings if stored.get(k) != json.loads(json.dumps(settings[k])))
        raise VaubanError(
            f"the study in {describe(storage)} was made with different settings "
            f"({', '.join(changed)}); use the same arguments to resume it, or a new --study"
        )
    state = optuna.trial.TrialState
    if created or not the_study.get_trials(
        deepcopy=False, states=(state.COMPLETE, state.WAITING, state.RUNNING)
    ):
        the_study.enqueue_trial(plain)
    return describe(storage), the_study


def finished(study: Any) -> list[Any]:
    """The study's finished trials, the refined one included."""
    complete = (optuna_module().trial.TrialState.COMPLETE,)
    return [t for t in study.get_trials(deepcopy=False, states=complete) if not t.user_attrs.get("surplus")]


def finished_search_trials(study: Any) -> list[Any]:
    """The study's finished search trials (not the refined one)."""
    return search_trials(study, optuna_module().trial.TrialState.COMPLETE)


def add_finished(study: Any, like: Any, values: Sequence[float], user_attrs: dict[str, Any]) -> None:
    """Store a trial scored outside the search: ``like``'s parameters with these objective values."""
    trial = optuna_module().trial.create_trial(
        params=like.params, distributions=like.distributions, values=list(values), user_attrs=user_attrs
    )
    study.add_trial(trial)
