"""Learning curve of the learned judge (issue 24): is its plateau the data or the backbone?

The heads of round 5 (logistic on the pooled vectors with the marker feature, layer 14, C chosen
on VAL) and round 6 (token head at layer 14 with its settings, the epoch chosen on VAL) refitted
on a seeded share of the training answers (a quarter, a half, all; three draws for each smaller
share), scored on VAL only (plain heads at threshold 0.5, no tier): no test model and no XSTest
answer is read. If VAL accuracy still climbs from a half to all, more labelled answers are the
lever; if it is flat, the backbone is.

    python benchmarks/judge_curve.py     # after judge_tokens.py; writes results/judge_curve.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import judge_round6 as r6
import judge_train as jt
from judge_tokens import load_states, pooled

RESULTS = Path(__file__).parent / "results" / "judge_curve.json"
SHARES, DRAWS, LAYER = (0.25, 0.5, 1.0), 3, 14


def pooled_accuracy(train: list[dict], val: list[dict], states: dict) -> float:
    """Round 5's head (markers on, C chosen on VAL) fitted on ``train``: its best VAL accuracy."""

    def x_of(rows: list[dict]) -> np.ndarray:
        x = np.stack([pooled(states, r["key"]) for r in rows])
        return np.concatenate([x.astype(np.float64), np.stack([r["markers"] for r in rows])], 1)

    xt, xv = x_of(train), x_of(val)
    gt = np.array([r["label"] != "compliance" for r in train])
    gv = np.array([r["label"] != "compliance" for r in val])
    mean, scale = xt.mean(0), xt.std(0) + 1e-6
    best = 0.0
    for c in jt.CS:
        model = jt.fit_logistic((xt - mean) / scale, gt, c)
        best = max(best, float((model.predict((xv - mean) / scale) == gv).mean()))
    return best


def token_accuracy(train: list[dict], val: list[dict], states: dict) -> float:
    """Round 6's token head (three seeds) fitted on ``train``: its best VAL accuracy over epochs."""
    t, v = r6.tensors(train, states), r6.tensors(val, states)
    runs = [r6.train_seed(t, v, seed, r6.DECAYS[0]) for seed in r6.SEEDS]
    return max(
        float(((np.mean([run[e][1][:, 0] for run in runs], 0) >= 0) == v.gold).mean())
        for e in range(r6.EPOCHS)
    )


def main() -> None:
    states = load_states(LAYER)
    rows = r6.labelled(states)
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    out: dict[str, Any] = {"train_answers": len(train), "val_answers": len(val), "layer": LAYER, "curve": []}
    for share in SHARES:
        for draw in range(1 if share == 1.0 else DRAWS):
            pick = np.random.default_rng(draw).permutation(len(train))[: round(share * len(train))]
            part = [train[i] for i in sorted(pick)]
            start = time.perf_counter()
            entry = {
                "share": share,
                "draw": draw,
                "answers": len(part),
                "pooled_val_accuracy": round(pooled_accuracy(part, val, states), 4),
                "token_val_accuracy": round(token_accuracy(part, val, states), 4),
                "seconds": round(time.perf_counter() - start),
            }
            out["curve"].append(entry)
            print(json.dumps(entry), flush=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
