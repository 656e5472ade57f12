"""Round-4 features of the learned judge (issue 24): the probe's four pooled blocks and the PMI.

For every labelled answer of ``judge_data/labels`` and XSTest's 900 Mistral answers (reported on
only, never fitted or chosen on), in one seeded order that mixes every split, so that a stopped
run leaves a random part of each: :class:`vauban.judge.meaning.MeaningReader` features, cached in
``judge_data/features/meaning-NNN.npz`` (``keys``, ``x`` float16 ``(n, layers, 4 * hidden)``,
``pmi`` float32 ``(n, len(PMI_NAMES))``), one file per ``--chunk`` answers. Resumable: answers
already stored are skipped. Run it in short turns under the team's lock:

    flock /tmp/vauban-heavy.lock nice -n 10 python benchmarks/judge_meaning.py --limit 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import judge_train as jt
from vauban.judge.meaning import MeaningReader

PREFIX = "meaning"


def meaning_store() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Cached round-4 features by answer key: (hidden blocks, PMI numbers)."""
    store: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in sorted(jt.FEATURES.glob(f"{PREFIX}-*.npz")):
        with np.load(path) as data:
            store.update(zip(data["keys"].tolist(), zip(data["x"], data["pmi"], strict=True), strict=True))
    return store


def todo() -> list[dict]:
    """Every labelled and XSTest answer without features, in one seeded order."""
    rows = list({r["key"]: r for r in jt.load_rows() + jt.xstest_rows()}.values())
    rows = [rows[i] for i in np.random.default_rng(jt.SEED).permutation(len(rows))]
    done = meaning_store()
    return [r for r in rows if r["key"] not in done]


def extract(limit: int, chunk: int) -> None:
    """Features of up to ``limit`` answers, saved every ``chunk`` answers."""
    rows = todo()[:limit]
    if not rows:
        print("every answer has its round-4 features")
        return
    jt.FEATURES.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reader = MeaningReader.load(jt.BACKBONE, jt.LAYERS)
    print(f"loaded in {time.perf_counter() - t0:.1f} s; {len(rows)} answers to read", flush=True)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        t1 = time.perf_counter()
        x, pmi = reader.features([r["prompt"] for r in part], [r["answer"] for r in part])
        seconds = time.perf_counter() - t1
        name = next_name()
        np.savez_compressed(name, keys=np.array([r["key"] for r in part]), x=x.astype(np.float16), pmi=pmi)
        print(
            f"{len(part)} answers in {seconds:.1f} s ({seconds / len(part):.3f} s/answer) -> {name}",
            flush=True,
        )


def next_name() -> Path:
    return jt.FEATURES / f"{PREFIX}-{len(list(jt.FEATURES.glob(f'{PREFIX}-*.npz'))):03d}.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=300, help="answers in this run")
    parser.add_argument("--chunk", type=int, default=50, help="answers per saved file")
    args = parser.parse_args()
    extract(args.limit, args.chunk)


if __name__ == "__main__":
    main()
