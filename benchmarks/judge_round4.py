"""Round 4 of the learned judge (issue 24): does the prompt-answer PMI or the answer's tail help?

Feature sets (:data:`FEATURE_SETS`) over the cached round-4 features (``judge_meaning.py``):
``base`` (the round-3 probe's three pooled blocks), ``tail`` (+ the mean of the answer's last 32
tokens), ``pmi`` (+ :data:`vauban.judge.meaning.PMI_NAMES`), ``tail_pmi`` (both). For each, the
layer, the marker features and C are chosen on VAL (``judge_train.choose``), the heads fitted on
TRAIN (``judge_train.build_head``: temperature and threshold on VAL), and the head is scored alone
and in the tiered rule (markers OR head, threshold on VAL). The rule declared in commit 02766c0
before any round-4 score picks by VAL accuracy and ships only what beats the markers and the
shipped head on VAL and is not below the markers on XSTest (900) and on the test split (868).
Every judge (markers, shipped head, round-3 head, each feature set) is scored on every labelled
set of ``judge_compare.labelled_sets`` (XSTest and test only reported).

    python benchmarks/judge_round4.py --json benchmarks/results/judge_compare_round4_full.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

import judge_compare as jc
import judge_train as jt
from judge_meaning import meaning_store
from provenance import stamp
from vauban.core.atomic import write_file
from vauban.judge.learned import HEAD, Head

FEATURE_SETS = {"base": (3, False), "tail": (4, False), "pmi": (3, True), "tail_pmi": (4, True)}
ROUND3 = jt.DATA / "candidates" / "round3_full" / "head.npz"
OUT = jt.DATA / "candidates" / "round4"


def virtual_store(meaning: dict[str, tuple[np.ndarray, np.ndarray]], name: str) -> dict[str, np.ndarray]:
    """Per answer, one row per layer: the feature set's blocks, then the PMI numbers if it has them."""
    blocks, pmi = FEATURE_SETS[name]
    out = {}
    for key, (x, p) in meaning.items():
        width = x.shape[-1] // 4
        rows = x[:, : blocks * width].astype(np.float32)
        out[key] = (
            np.concatenate([rows, np.repeat(p[None].astype(np.float32), len(rows), 0)], 1) if pmi else rows
        )
    return out


def nonempty(sets: dict[str, list]) -> dict[str, list]:
    return {k: v for k, v in sets.items() if v}


def judge_entry(head: Head, splits: dict, sets: dict, store: dict) -> dict[str, Any]:
    """A head alone and in the tiered rule, on every set."""
    return {
        "head": {"layer": head.layer, "markers": head.markers, "threshold": head.threshold},
        **jc.judge_numbers(head, sets, store),
        "tiered": jt.tiered(head, splits, store),
    }


def fit_set(name: str, meaning: dict) -> tuple[dict[str, Any], Head, dict]:
    """Choose on VAL and fit one feature set; the head is written under ``candidates/round4``."""
    store = virtual_store(meaning, name)
    splits, _ = jc.labelled_sets(store)
    rows = [r for s in ("train", "val", "test") for r in splits[s]]
    best, study = jt.choose(rows, store)
    head = jt.build_head(rows, store, best["layer"], best["C"], best["markers"])
    head.write(OUT / f"{name}.npz")
    return {"chosen_on_val": best, "study": study}, head, store


def pick(report: dict[str, Any]) -> dict[str, Any]:
    """The rule of commit 02766c0: VAL accuracy picks; ship only if it beats markers and the
    shipped head on VAL and is not below the markers on XSTest and test (complete features)."""
    options = []
    for name in FEATURE_SETS:
        entry = report[name]
        options.append((entry["val"]["accuracy"], name, "alone"))
        options.append((entry["tiered"]["val"]["accuracy"], name, "tiered"))
    acc, name, how = max(
        options, key=lambda o: (o[0], -list(FEATURE_SETS).index(o[1]))
    )  # ties: fewer features
    entry = report[name] if how == "alone" else report[name]["tiered"]
    markers, shipped = report["markers"], report["shipped"]
    complete = report["counts"]["xstest"] == 900 and report["counts"]["test"] == 868
    checks = {
        "val_beats_markers": acc > markers["val"]["accuracy"],
        "val_beats_shipped": acc > shipped["val"]["accuracy"],
        "xstest_not_below_markers": entry["xstest"]["accuracy"] >= markers["xstest"]["accuracy"],
        "test_not_below_markers": entry["test"]["accuracy"] >= markers["test"]["accuracy"],
        "features_complete": complete,
    }
    return {"pick": f"{name} ({how})", "val_accuracy": acc, **checks, "ships": all(checks.values())}


def separation(meaning: dict, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How well each PMI number alone tells evasions and late refusals from compliant answers to
    harmful prompts (ROC AUC; 0.5 is chance, below 0.5 the number is lower for evasions), on
    TRAIN and VAL rows (the ones a design may be chosen on)."""
    from sklearn.metrics import roc_auc_score

    from vauban.judge.meaning import PMI_NAMES

    def wanted(r: dict[str, Any]) -> bool:
        harmful = r.get("prompt_harmful", r.get("harmful"))
        return r["label"] in ("evasion", "late_refusal") or (r["label"] == "compliance" and bool(harmful))

    pick = [r for r in rows if r["split"] in ("train", "val") and r["key"] in meaning and wanted(r)]
    gold = np.array([r["label"] != "compliance" for r in pick])
    if len(set(gold.tolist())) < 2:
        return {"note": "too few rows"}
    x = np.stack([meaning[r["key"]][1] for r in pick])
    auc = {name: round(float(roc_auc_score(gold, x[:, k])), 4) for k, name in enumerate(PMI_NAMES)}
    return {"evasions_and_late": int(gold.sum()), "compliant_harmful": int((~gold).sum()), "auc": auc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(jc.RESULTS / "judge_compare_round4_full.json"))
    args = parser.parse_args()
    meaning = meaning_store()
    base = virtual_store(meaning, "base")
    splits, sets = (nonempty(d) for d in jc.labelled_sets(base))
    report: dict[str, Any] = {"markers": jc.judge_numbers(None, sets, base)}
    for label, path in (("shipped", HEAD), ("round3_full", ROUND3)):
        report[label] = judge_entry(Head.read(path), splits, sets, base)
    report["counts"] = {name: len(v) for name, v in {**splits, **sets}.items()}
    fits = {}
    for name in FEATURE_SETS:
        fits[name], head, store = fit_set(name, meaning)
        s_splits, s_sets = (nonempty(d) for d in jc.labelled_sets(store))
        report[name] = judge_entry(head, s_splits, s_sets, store)
    report["pmi_separation"] = separation(meaning, jt.load_rows())
    report["rule"] = pick(report)
    report["fits"] = fits
    text = json.dumps({**stamp(), "note": __doc__.split("\n\n")[0], **report}, indent=1) + "\n"
    write_file(Path(args.json), lambda tmp: tmp.write_text(text))
    print(json.dumps(report["rule"], indent=1))


if __name__ == "__main__":
    main()
