"""Two learned-judge heads side by side, from cached features (issue 24): the shipped head and a
candidate refitted on more data, with the markers alone and the tiered rule beside them.

Reads the per-answer features that ``judge_train.py features`` cached (the same backbone reader
the judge runs, so the numbers equal the judge's own) and scores, for each head: the labelled
splits (val, on which alone a design is picked, with SmolLM2's safe-prompt answers apart; test,
with the rows added by the second data round apart), the
test evasions and late refusals against compliant answers to the same prompts, and XSTest's 900
Mistral answers (reported only; false alarms on XSTest's safe prompts counted apart). The
tiered rule (markers' refusal, else the head at a threshold chosen on VAL) is fixed in
``judge_train.tiered`` and never tuned here.

    python benchmarks/judge_compare.py --candidate benchmarks/judge_data/candidates/round2_head.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

import judge_train as jt
from judges import XSTEST, load_labels
from provenance import stamp
from vauban.core.atomic import write_file
from vauban.judge.learned import HEAD, Head, marker_features

RESULTS = Path(__file__).parent / "results"


def with_markers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the marker judge's features (refusal, late) as ``markers``."""
    marks = marker_features([r["prompt"] for r in rows], [r["answer"] for r in rows])
    return [{**r, "markers": m} for r, m in zip(rows, marks, strict=True)]


def xstest(store: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """XSTest's answers with features, gold and whether the prompt is a safe one."""
    safe = {(r["id"], r["file"]): r["safe"] for r in load_labels(XSTEST)}
    rows = [r for r in jt.xstest_rows() if r["key"] in store]
    for r in rows:
        number, name = r["id"].split("/")
        r["safe"] = safe[number, name]
        r["label"] = "full_refusal" if r["gold"] else "compliance"
    return with_markers(rows)


def said_by(head: Head | None, rows: list[dict[str, Any]], store: dict[str, np.ndarray]) -> np.ndarray:
    """Refusal verdicts of ``head`` (``None``: the markers alone)."""
    if head is None:
        return np.array([r["markers"][0] > 0.5 for r in rows])
    x, _, _ = jt.arrays(rows, store, head.layer, head.markers)
    return head.refusal_probability(x) >= head.threshold


def scores(said: np.ndarray, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, precision, recall; false alarms on safe prompts where rows say which are safe."""
    gold = np.array([r["label"] != "compliance" for r in rows])
    out = jt.binary(said, gold)
    if rows and "safe" in rows[0]:
        pairs = zip(said, gold, rows, strict=True)
        out["false_alarms_on_safe_prompts"] = int(sum(s and not g and r["safe"] for s, g, r in pairs))
    return out


def hard_set(said: np.ndarray, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Evasions and late refusals caught; false alarms on compliant answers to the same prompts."""
    hard = [i for i, r in enumerate(rows) if r["label"] in ("evasion", "late_refusal")]
    prompts = {rows[i]["prompt"] for i in hard}
    comply = [i for i, r in enumerate(rows) if r["label"] == "compliance" and r["prompt"] in prompts]
    return {
        "n": len(hard),
        "caught": round(float(said[hard].mean()), 4) if hard else None,
        "compliant_same_prompts": len(comply),
        "false_alarms": round(float(said[comply].mean()), 4) if comply else None,
    }


def judge_numbers(head: Head | None, sets: dict[str, list[dict[str, Any]]], store: dict) -> dict[str, Any]:
    """One judge on every set (the test evasion set included)."""
    out = {name: scores(said_by(head, rows, store), rows) for name, rows in sets.items()}
    test = sets["test"]
    out["test_evasions_and_late"] = hard_set(said_by(head, test, store), test)
    if head is not None:
        for name in ("val", "test", "xstest"):
            x, gold, _ = jt.arrays(sets[name], store, head.layer, head.markers)
            out[name]["ece"] = round(jt.ece(head.refusal_probability(x), gold.astype(float)), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", required=True, help="a head.npz written by judge_train.py fit")
    parser.add_argument("--json", default=str(RESULTS / "judge_compare.json"))
    args = parser.parse_args()
    store = jt.feature_store()
    splits, sets = labelled_sets(store)
    heads = {"shipped": Head.read(HEAD), "candidate": Head.read(Path(args.candidate))}
    report: dict[str, Any] = {"markers": judge_numbers(None, sets, store)}
    for name, head in heads.items():
        report[name] = {
            "head": {"layer": head.layer, "markers": head.markers, "threshold": head.threshold},
            **judge_numbers(head, sets, store),
            "tiered": jt.tiered(head, splits, store),
        }
    report["counts"] = {name: len(v) for name, v in {**splits, **sets}.items()}
    text = json.dumps({**stamp(), "note": __doc__.split("\n\n")[0], **report}, indent=1) + "\n"
    write_file(Path(args.json), lambda tmp: tmp.write_text(text))
    print(text)


def labelled_sets(store: dict[str, Any]) -> tuple[dict[str, list], dict[str, list]]:
    """The splits, and the sets every judge is scored on (rows with features in ``store``)."""
    rows = with_markers([r for r in jt.load_rows() if r["key"] in store])
    splits = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    test = splits["test"]
    sets = {
        "val": splits["val"],  # the only set the pick is made on
        "val_smollm2_safe_scary": [{**r, "safe": True} for r in splits["val"] if ":ss" in r["id"]],
        "test": test,
        "test_first_round": [r for r in test if ":ss" not in r["id"]],
        "test_demo_safe_scary": [{**r, "safe": True} for r in test if ":ss" in r["id"]],
        **{f"val_{m}": [r for r in splits["val"] if jt.group(r["model"]) == m] for m in jt.VAL},
        **{f"test_{m}": [r for r in test if jt.group(r["model"]) == m] for m in jt.TEST},
        "xstest": xstest(store),
    }
    return splits, sets


if __name__ == "__main__":
    main()
