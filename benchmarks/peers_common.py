"""What the stages of the heretic comparison share (benchmarks/peers.py drives them): where results
go, the demo model's folder, heretic's common settings, a logged subprocess, the models so far and
the measured rows. Imported by peers.py, peers_evaluate.py and peers_frontier.py; imports none of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SEED = 0
BATCH_SIZE = 16
MODELS = ("original", "vauban_default", "vauban_optimize", "heretic")


def say(text: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {text}", flush=True)


def demo_dir() -> Path:
    """The cached float32 directory of the demo model (``vauban.quick.load()`` writes it)."""
    from vauban.model.loading import demo_model_dir

    return demo_model_dir()


def heretic_common(files: dict[str, Path], evaluation: str) -> list[str]:
    """Settings shared by the search and heretic's evaluation: local prompt files, CPU, float32,
    a fixed batch size and no common response prefix (the demo model's answers have none; both
    flags skip searches that take tens of minutes on 2 cores)."""
    args = [
        "--device-map",
        "cpu",
        "--dtypes",
        '["float32"]',
        "--batch-size",
        str(BATCH_SIZE),
        "--response-prefix",
        "",
        "--seed",
        str(SEED),
    ]
    for role, name in (
        ("good-prompts", "harmless_train"),
        ("bad-prompts", "harmful_train"),
        ("good-evaluation-prompts", f"harmless_{evaluation}"),
        ("bad-evaluation-prompts", f"harmful_{evaluation}"),
    ):
        args += [f"--{role}.dataset", str(files[name])]
    return args


def run_logged(cmd: list[str], log: Path, *, env: dict[str, str] | None = None) -> tuple[int, float]:
    """Run ``cmd`` to its end with its output in ``log`` and an empty stdin; (exit code, seconds)."""
    say(f"run: {' '.join(cmd)} > {log}")
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            input="",
            text=True,
            check=False,
            env={**(env or os.environ), "PYTHONUNBUFFERED": "1", "TERM": "dumb"},
        )
    return proc.returncode, time.perf_counter() - start


# ---------------------------------------------------------------- vauban


def model_dirs(work: Path) -> dict[str, Path]:
    """The models that exist so far: the original and each export."""
    found = {"original": demo_dir()}
    for name in MODELS[1:]:
        folder = work / "exports" / name
        if (folder / "config.json").is_file():
            found[name] = folder
    return found


def read_rows(store: Path, pattern: str) -> list[dict]:
    """Measured rows (``frontier_*`` or ``variant_*``), fewest refusals first."""
    rows = [json.loads(p.read_text()) for p in store.glob(pattern)]
    return sorted(rows, key=lambda r: (r["refusals"], r["first_token_kl"]))
