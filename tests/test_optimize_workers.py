"""Several optimize workers share one study: against a real PostgreSQL server started here (a
throw-away cluster on a unix socket) and against a journal file. Each worker is a process of its
own with its own tiny model (tests/optimize_worker.py)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import HARMFUL, HARMLESS, build_model, build_tokenizer

optuna = pytest.importorskip("optuna")
WORKER = Path(__file__).parent / "optimize_worker.py"
N_TRIALS = 12  # past TPE's 10 random start-up trials


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or (
        [shutil.which("initdb")] if shutil.which("initdb") else []
    )
    return Path(found[-1]).parent if found else None


def _as_postgres(args: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own, listening on a unix socket only; its URL."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="vauban-pg-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "data"
    run = dict(check=True, capture_output=True, text=True)
    subprocess.run(
        _as_postgres(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        ),
        **run,
    )
    subprocess.run(
        _as_postgres(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(root / "log"),
                "-o",
                f"-c listen_addresses='' -k {root}",
                "start",
            ]
        ),
        **run,
    )
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", str(root), "-U", "postgres", "vauban"], **run)
        yield f"postgresql://postgres@/vauban?host={root}", (bin_dir, root)
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def direction_file(tmp_path_factory):
    from vauban import measure

    path = tmp_path_factory.mktemp("direction") / "direction.json"
    measure(build_model("llama"), build_tokenizer(), HARMFUL, HARMLESS).save(path)
    return path


def _new_database(postgres, name: str) -> str:
    """A fresh database on the test server (one per test), its URL."""
    url, (bin_dir, root) = postgres
    subprocess.run([str(bin_dir / "createdb"), "-h", str(root), "-U", "postgres", name], check=True)
    return url.replace("/vauban?", f"/{name}?")


@pytest.fixture(params=["postgresql", "journal"])
def storage(request, tmp_path):
    """A storage URL of each kind, new for each test."""
    if request.param == "journal":
        return f"journal:{tmp_path / 'study.log'}"
    return _new_database(request.getfixturevalue("postgres"), f"db_{os.getpid()}_{time.monotonic_ns()}")


def _start(
    direction: Path, storage: str, out: Path, n_trials: int, hang_at: int | None = None, barrier: str = ""
):
    args = [sys.executable, str(WORKER), str(direction), storage, str(out), str(n_trials)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    if barrier:  # DIR:N: start trials only once N workers are ready (tests/optimize_worker.py)
        env["OPTIMIZE_WORKER_BARRIER"] = barrier
    return subprocess.Popen(
        [*args, *([str(hang_at)] if hang_at else [])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(proc: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output
    return output


def _study_trials(storage: str):
    from vauban.search import studies

    study = optuna.load_study(study_name=studies.STUDY_NAME, storage=studies.open_storage(storage))
    return study.get_trials(deepcopy=False)


def test_two_workers_run_one_study_like_one_worker(storage, direction_file, tmp_path):
    """Two workers started at once: exactly N_TRIALS search trials finished, none run twice, one
    worker checks the pick; the trials drawn before TPE's model takes over (the plain cut and the 9
    random start-up draws) are the single worker's trials, parameters and scores alike."""
    (tmp_path / "ready").mkdir()
    barrier = f"{tmp_path / 'ready'}:2"  # neither starts its trials before the other is ready
    procs = [
        _start(direction_file, storage, tmp_path / f"w{i}.json", N_TRIALS, barrier=barrier) for i in range(2)
    ]
    single = _start(direction_file, "memory", tmp_path / "single.json", N_TRIALS)
    for proc in [*procs, single]:
        _wait(proc)
    workers = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2)]
    alone = json.loads((tmp_path / "single.json").read_text())

    trials = _study_trials(storage)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == N_TRIALS
    others = [t for t in trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert all(t.user_attrs.get("surplus") for t in others)  # at most a trial asked at the last instant
    params = [json.dumps(t.params, sort_keys=True) for t in done]
    assert len(set(params)) == len(params)  # none run twice
    assert {t.user_attrs["worker"] for t in done} == {w["worker"] for w in workers}  # both worked

    assert sorted(w["finished_here"] for w in workers) == [False, True]  # one worker finishes
    finisher = next(w for w in workers if w["finished_here"])
    assert finisher["worker"] == max(done, key=lambda t: t.number).user_attrs["worker"]
    checked = [t for t in finisher["trials"] if t["selection_refusal"] is not None]
    assert checked and all(
        t["selection_refusal"] is None for w in workers if not w["finished_here"] for t in w["trials"]
    )

    shared = {t["number"]: t for t in finisher["trials"]}
    reference = {t["number"]: t for t in alone["trials"]}
    assert len(reference) == N_TRIALS and len(shared) == N_TRIALS
    for number in range(10):
        assert shared[number]["params"] == reference[number]["params"]
        assert shared[number]["values"] == reference[number]["values"]


def test_a_killed_worker_leaves_a_study_the_other_finishes(storage, direction_file, tmp_path):
    """Worker B is killed (SIGKILL) inside its second trial; its heartbeat stops, worker A fails
    that trial after the grace period and runs its parameters again: N_TRIALS finished, the
    killed one failed, no parameters lost."""
    n_trials = 6
    hung = _start(direction_file, storage, tmp_path / "b.json", n_trials, hang_at=2)
    marker = tmp_path / "b.json.hanging"
    ends = time.monotonic() + 120
    while not marker.exists():
        assert hung.poll() is None and time.monotonic() < ends, hung.stdout.read() if hung.stdout else ""
        time.sleep(0.2)
    survivor = _start(direction_file, storage, tmp_path / "a.json", n_trials)
    time.sleep(2.0)  # A starts while B's trial still beats
    os.kill(hung.pid, signal.SIGKILL)
    hung.wait()
    _wait(survivor)
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["finished_here"]

    trials = _study_trials(storage)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [
        t for t in trials if t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get("surplus")
    ]
    assert len(done) == n_trials and len(result["trials"]) == n_trials
    assert len(failed) == 1 and failed[0].user_attrs["worker"] == Path(marker).read_text()
    retried = [t for t in done if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retried) == 1 and retried[0].params == failed[0].params
    assert retried[0].user_attrs["worker"] == result["worker"]
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
