"""Cache the demo backbone's per-token hidden states of every labelled answer (issue 24, round 6).

Round 6 trains heads that read every answer token (attention pooling) instead of three pooled
vectors; they need the states of each token, which this step stores once: for each answer of
``benchmarks/judge_data/labels/`` and XSTest's 900 Mistral answers, the residual stream after
layers :data:`LAYERS` at each answer token (cut to 128 tokens, as the shipped judge reads) and at
the prompt's last token, float16, in chunk files under ``benchmarks/judge_data/tokens/``
(ignored by git; resumable: answers already stored are skipped).

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/judge_tokens.py [--limit N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from judge_train import ANSWER_TOKENS, DATA, SEED, load_rows, xstest_rows
from vauban.judge.learned import Reader, pool

TOKENS = DATA / "tokens"
LAYERS = (10, 14, 18)
BACKBONE = "demo"


def stored_keys() -> set[str]:
    keys: set[str] = set()
    for path in sorted(TOKENS.glob("chunk-*.npz")):
        with np.load(path) as data:
            keys.update(data["keys"].tolist())
    return keys


def load_states(layer: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per answer key: (answer states ``(tokens, hidden)``, prompt state ``(hidden,)``) at ``layer``."""
    k = LAYERS.index(layer)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in sorted(TOKENS.glob("chunk-*.npz")):
        with np.load(path) as data:
            answers, prompts, bounds = data["answers"][:, k], data["prompts"][:, k], data["bounds"]
            for i, name in enumerate(data["keys"].tolist()):
                out[name] = (answers[bounds[i] : bounds[i + 1]], prompts[i])
    return out


def pooled(states: dict[str, tuple[np.ndarray, np.ndarray]], key: str) -> np.ndarray:
    """Round 5's pooled features (:func:`vauban.judge.learned.pool`) of one answer's stored states."""
    answer, prompt = states[key]
    return pool(answer[None].astype(np.float32), prompt[None].astype(np.float32))[0]


def save(part: list[dict[str, Any]], states: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    """One chunk file (written whole, then renamed: a killed run leaves no half file)."""
    lengths = [a.shape[1] for a, _ in states]
    name = TOKENS / f"chunk-{len(list(TOKENS.glob('chunk-*.npz'))):03d}.npz"
    tmp = name.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        keys=np.array([r["key"] for r in part]),
        bounds=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        answers=np.concatenate([a.transpose(1, 0, 2) for a, _ in states]).astype(np.float16),
        prompts=np.stack([p for _, p in states]).astype(np.float16),
    )
    tmp.rename(name)
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=200)
    args = parser.parse_args()
    done = stored_keys()
    rows = list({r["key"]: r for r in load_rows() + xstest_rows() if r["key"] not in done}.values())
    rows = [rows[i] for i in np.random.default_rng(SEED).permutation(len(rows))][: args.limit]
    if not rows:
        print("every answer has its states")
        return
    TOKENS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reader = Reader.load(BACKBONE, LAYERS, answer_tokens=ANSWER_TOKENS[BACKBONE])
    print(f"backbone loaded in {time.perf_counter() - t0:.1f} s; {len(rows)} answers to read", flush=True)
    for start in range(0, len(rows), args.chunk):
        part = rows[start : start + args.chunk]
        t1 = time.perf_counter()
        states = reader.states([r["prompt"] for r in part], [r["answer"] for r in part])
        seconds = time.perf_counter() - t1
        name = save(part, states)
        print(
            f"{len(part)} answers in {seconds:.1f} s ({seconds / len(part):.3f} s/answer) -> {name}",
            flush=True,
        )


if __name__ == "__main__":
    main()
