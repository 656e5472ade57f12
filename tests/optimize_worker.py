"""One optimize worker on a tiny model, as a process of its own (tests/test_optimize_workers.py).

    python tests/optimize_worker.py DIRECTION.json STORAGE OUT.json N_TRIALS [HANG_AT]

STORAGE: a URL, journal:PATH, or "memory" (no storage: the single-worker reference). Writes the
study's trials as this worker returned them to OUT.json. HANG_AT: this worker's trial number
(1-based, counted in this process) at which it writes OUT.json.hanging and sleeps inside the
trial, heartbeat still beating, until the test kills it. With ``OPTIMIZE_WORKER_BARRIER=DIR:N`` in the
environment the worker waits, model built, until N workers have reached that point (a loaded
machine can start one worker so late that the other has run every trial).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import HARMFUL, HARMLESS, build_model, build_tokenizer
from vauban.direction.results import DirectionResult
from vauban.search import objectives, optimizing, studies

OPTIONS = dict(
    prompts=HARMFUL[:2],
    harmless=HARMLESS[:3],
    selection=HARMFUL[2:4],
    max_tokens=2,
    selection_tokens=3,
    refine_steps=0,
    check=1,
    seed=0,
)


def wait_for_peers() -> None:
    """Block (at most 300 s) until the ``OPTIMIZE_WORKER_BARRIER`` count of workers got here."""
    spec = os.environ.get("OPTIMIZE_WORKER_BARRIER")
    if not spec:
        return
    folder, count = spec.rsplit(":", 1)
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 300
    while len(list(Path(folder).iterdir())) < int(count) and time.monotonic() < deadline:
        time.sleep(0.05)


def main(direction_path: str, storage: str, out: str, n_trials: str, hang_at: str | None = None) -> None:
    torch.set_num_threads(1)  # the same float sums in every process
    if hang_at is not None:
        scored = objectives.Scores.__call__
        calls = []

        def hanging(self, params):
            calls.append(params)
            if len(calls) == int(hang_at):
                Path(out + ".hanging").write_text(str(studies.WORKER))
                time.sleep(3600)
            return scored(self, params)

        objectives.Scores.__call__ = hanging
    study = None if storage == "memory" else studies.open_storage(storage, heartbeat=1, grace=3)
    direction = DirectionResult.load(direction_path)
    model, tokenizer = build_model("llama"), build_tokenizer()
    wait_for_peers()
    result = optimizing.optimize(model, tokenizer, direction, n_trials=int(n_trials), study=study, **OPTIONS)
    record = {
        "worker": studies.WORKER,
        "finished_here": result.finished_here,
        "best": result.best.number,
        "trials": [
            {
                "number": t.number,
                "params": t.params.record(),
                "values": [t.refusal, t.kl, t.likelihood],
                "selection_refusal": t.selection_refusal,
            }
            for t in result.trials
        ],
    }
    Path(out).write_text(json.dumps(record))


if __name__ == "__main__":
    main(*sys.argv[1:])
