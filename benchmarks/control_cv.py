"""Cross-validated choice of the ``--keep`` defaults (issue 28), on the measuring prompts only.

Every prompt of ``harmful_categories.jsonl`` (120 a category) is in one of ``FOLDS`` folds
(stratified by category: the ``i``-th prompt of a category in fold ``i mod FOLDS``); each is
answered under the edit or condition fitted *without its fold*, so every rate below is a
cross-validated rate over all the measuring prompts. The held-out sets (``test_categories.jsonl``,
``eval_categories.jsonl``) are never read here; ``control_demo.py`` reports the chosen settings.

    flock /tmp/vauban-heavy.lock nice -n 10 python benchmarks/control_cv.py --only answers,runtime
    flock /tmp/vauban-heavy.lock nice -n 10 python benchmarks/control_cv.py --only weights
    nice -n 10 python benchmarks/control_cv.py --only gate --features ACTS.pt  # no model: ~7 min

Refusal: the markers judge on greedy answers of ``MAX_TOKENS`` (32) tokens.

- **answers**: the original model's answers to every measuring prompt, and the answers under
  run-time removal (:class:`vauban.methods.steering.Steering`, alpha 1, every layer) of the
  prompts the original refuses (the others are not refused under removal either: counted so).
- **runtime**: ``--when not:KEEP`` at run time: a prompt is answered as the original does when
  the condition ``KEEP`` (fitted on the other folds) matches it, else as under removal. Conditions:
  the probe (:mod:`vauban.methods.gating`: its layers, penalty and threshold chosen by an inner
  cross-validation on the other folds) and the cosine condition (:func:`cosine_from_residuals`,
  its direction from 3/4 of the other folds, its layer and threshold on the last 1/4). Reported:
  balanced accuracy, the share matched per category, refusal per category.
- **gate**: ``--when not:KEEP`` by the probe at each threshold rule of ``GATE_RULES``
  (``--false-match``: at most that share of the unmatched example prompts matched, out of fold;
  or the best balanced accuracy), each prompt judged under the probe fitted without its fold (its
  setting as the runtime stage's inner cross-validation chose it on those folds: the setting does
  not depend on the threshold rule), composed from the **answers** stage like **runtime**.
  ``--features`` reads a saved capture of the residuals instead of the model. Rule: ``GATE_RULE``
  (written in d0aa437, before any held-out score of these rules).
- **weights**: the weight edits of ``WEIGHT_CANDIDATES`` (orthogonal at each alpha; the
  keep-preserving edit at each λ and strength), fitted on the other folds, answering the fold's
  prompts. Round 2 (written before its run, after round 1's held-out scores): the keep-preserving
  edit at strength 1.5, the same rule over all three.

Round 3 (written before its run, 2026-12-07): 360 more measuring prompts (60 a category, written
for the project, ``harmful_categories.jsonl`` now 120 a category), because the probe's learning curve
on the first 360 was still rising (out-of-fold AUC of weapons against the rest 0.89, 0.93, 0.95 at
16, 32, 48 training prompts a category); the **answers**, **runtime** and **gate** stages rerun over
the 720 under the same rules. The **weights** stage is not rerun (about an hour of CPU): its round-2
choice is refitted on the 720 and reported as it is. The report moves to a fresh test set,
``test_categories.jsonl`` (240, 40 a category), written in round 3 by an engineer who had seen no
result and read once; ``eval_categories.jsonl``, read by rounds 1 and 2, is no longer a test.

**Selection rule** (written before any held-out score of these settings was seen): per route, the
candidate with the lowest :func:`control_demo.keep_score` of its cross-validated rates (the
others' mean refusal + the kept category's shortfall below 80 % of the original's refusal on the
same prompts); ties go to the earlier candidate in the order listed (``RUNTIME_CANDIDATES``,
``WEIGHT_CANDIDATES`` of ``control_demo.py``). The probe's own pooling, layers, penalty and
threshold are chosen inside it by its own cross-validation (:mod:`vauban.methods.gating`). The goal
is met on these prompts when the kept category keeps ≥ 80 % of the original's refusal and every
other is ≤ 5 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import torch

from control_demo import (
    CACHE,
    GATE_RULES,
    MAX_TOKENS,
    RUNTIME_CANDIDATES,
    WEIGHT_CANDIDATES,
    default_direction,
    keep_score,
    preserving_edit,
    say,
    weight_label,
)
from provenance import stamp
from vauban import cut, load
from vauban.direction.categories import category_prompts, from_residuals, keep_vector
from vauban.judge.answers import completions
from vauban.methods.conditional import balanced_accuracy, cosine_from_residuals
from vauban.methods.gating import (
    fitted_probe,
    fold_of,
    out_of_fold,
    pick_setting,
    probe_from_residuals,
    setting_logits,
)
from vauban.methods.steering import Steering
from vauban.runtime.activations import POOLINGS, last_token_residuals
from vauban.text.prompts import load_prompts

RESULTS = Path(__file__).resolve().parent / "results" / "control_cv.json"
FOLDS = 5
GATE_RULE = (
    "the threshold rule with the largest cross-validated gate_score: min(kept category's refusal / "
    "the original's - 0.8, 0.05 - the largest other category's refusal), over all measuring "
    "prompts; ties: the earlier (less strict) rule"
)
RULE = (
    "per route, the lowest keep_score (others' mean refusal + kept category's shortfall below 80 % "
    "of the original's) of the cross-validated rates over all measuring prompts; ties: the earlier "
    "candidate"
)


def write(data: dict) -> None:
    RESULTS.write_text(json.dumps(data | stamp(), indent=1, ensure_ascii=False) + "\n")


def rates_of(labels: list[str], refused: list[bool]) -> dict[str, float]:
    """Refusal per category of per-prompt verdicts."""
    out = {}
    for cat in dict.fromkeys(labels):
        rows = [r for lab, r in zip(labels, refused, strict=True) if lab == cat]
        out[cat] = sum(rows) / len(rows)
    return out


def answer(model, tokenizer, prompts: list[str], edit=None) -> list[list]:
    """``[text, refused]`` per prompt (markers, ``MAX_TOKENS``), under ``edit`` (a context) if any."""
    if edit is None:
        got = completions(model, tokenizer, prompts, max_tokens=MAX_TOKENS, batch_size=None)
    else:
        with edit:
            got = completions(model, tokenizer, prompts, max_tokens=MAX_TOKENS, batch_size=None)
    return [[a.text, a.refused] for a in got]


def stage_answers(model, tokenizer, direction, prompts: list[str], data: dict) -> None:
    """The original's answers to every prompt, then removal's to those the original refuses; an
    earlier run's answers to the same prompt text are reused (greedy answers of the same model and
    prompt under the same edit are the same), so adding measuring prompts answers only the new."""
    part = data.setdefault("answers", {})
    before = part.get("prompts", [])
    original = dict(zip(before, part.get("original", []), strict=False))
    removed = {before[int(i)]: a for i, a in part.get("removed", {}).items() if int(i) < len(before)}
    new = [p for p in prompts if p not in original]
    if new:
        say(f"original answers to {len(new)} new measuring prompts ({len(prompts)} in all)")
        original |= dict(zip(new, answer(model, tokenizer, new), strict=True))
    refused = [p for p in prompts if original[p][1]]
    new = [p for p in refused if p not in removed]
    if new:
        say(f"answers under removal to {len(new)} more the original refuses ({len(refused)} in all)")
        removed |= dict(zip(new, answer(model, tokenizer, new, Steering(model, direction)), strict=True))
    part["prompts"] = prompts
    part["original"] = [original[p] for p in prompts]
    part["removed"] = {str(i): removed[p] for i, p in enumerate(prompts) if original[p][1]}
    write(data)


def runtime_rows(data: dict, labels: list[str], kept_rows: list[bool]) -> list[bool]:
    """Each prompt's verdict at run time: the original's where kept, removal's elsewhere."""
    original, removed = data["answers"]["original"], data["answers"]["removed"]
    return [
        bool(original[i][1]) if keep else bool(removed.get(str(i), ["", False])[1])
        for i, keep in enumerate(kept_rows)
    ]


def nested_conditions(
    features: dict[str, torch.Tensor], y: torch.Tensor, fold: torch.Tensor
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Each prompt's match (bool) by each runtime candidate fitted on the other folds, and each
    fold's probe record."""
    out = {name: torch.zeros(len(y), dtype=torch.bool) for name in RUNTIME_CANDIDATES}
    acts, records = features["last"], []
    layers = list(range(acts.shape[1]))
    for k in range(FOLDS):
        train, test = torch.nonzero(fold != k).flatten(), fold == k
        say(f"fold {k}: probe and cosine condition on {len(train)} prompts")
        probe = probe_from_residuals("keep", {p: x[train] for p, x in features.items()}, y[train])
        records.append(probe.record())
        chosen = features[probe.pooling][test][:, list(probe.layers)]
        out["probe"][test] = probe.scores(chosen) > probe.threshold
        inner = fold_of(y[train], 4)
        m_rows, t_rows = train[inner != 3], train[inner == 3]
        cosine = cosine_from_residuals(
            "keep",
            (acts[m_rows][y[m_rows]], acts[m_rows][~y[m_rows]]),
            (acts[t_rows][y[t_rows]], acts[t_rows][~y[t_rows]]),
            layers,
            len(layers),
        )
        out["cosine"][test] = cosine.scores(acts[test][:, cosine.layer_index]) > cosine.threshold
    return out, records


def saved_features(path: Path, prompts: list[str]) -> tuple[dict, str]:
    """A saved capture's residuals per pooling (float32) and the dtype it was stored in, checked
    to be of ``prompts`` in order."""
    saved = torch.load(path)
    if saved.get("prompts") != prompts:
        raise SystemExit(f"{path} holds other prompts than the measuring ones; capture them again")
    return {p: saved[p].float() for p in POOLINGS}, str(saved["last"].dtype)


def gate_score(rates: dict[str, float], original: dict[str, float], keep: str) -> float:
    """What the gate rule maximizes: the smaller margin to the goal, ``kept / original - 0.8``
    and ``0.05 - the largest other category's refusal`` (positive: the goal is met)."""
    others = max(v for k, v in rates.items() if k != keep)
    return min(rates[keep] / original[keep] - 0.8, 0.05 - others)


def fold_logits(features: dict, y: torch.Tensor, train: torch.Tensor, known: dict | None) -> dict:
    """Inner out-of-fold logits of the probe settings on the ``train`` rows: every setting, or
    only the one the runtime stage's inner cross-validation chose on these rows (``known``, its
    record: the setting does not depend on the threshold rule, so the rules need no other)."""
    inner = {p: x[train] for p, x in features.items()}
    if known is None:
        return setting_logits(inner, y[train])
    layers = tuple(known["layers"])
    acts = inner[known["pooling"]][:, list(layers)]
    return {
        (known["pooling"], "chosen", known["penalty"]): (
            layers,
            out_of_fold(acts, y[train], known["penalty"]),
        )
    }


def stage_gate(labels: list[str], keep: str, data: dict, features: dict) -> None:
    """``--when not:KEEP`` by the probe at each threshold rule of ``GATE_RULES``, cross-validated:
    the probe's setting chosen by its own inner cross-validation on the other folds (the runtime
    stage's choice when recorded), its threshold by each rule on those inner out-of-fold logits."""
    y = torch.tensor([lab == keep for lab in labels])
    fold = fold_of_categories(labels)
    original = rates_of(labels, [bool(r) for _, r in data["answers"]["original"]])
    recorded = data.get("runtime", {}).get("probe_per_fold")
    hits = {rule: torch.zeros(len(y), dtype=torch.bool) for rule in GATE_RULES}
    chosen: dict[str, list] = {rule: [] for rule in GATE_RULES}
    for k in range(FOLDS):
        train, test = torch.nonzero(fold != k).flatten(), fold == k
        say(f"fold {k}: inner cross-validation of the probe on {len(train)} prompts")
        logits = fold_logits(features, y, train, recorded[k] if recorded else None)
        inner = {p: x[train] for p, x in features.items()}
        fitted: dict = {}
        for rule in GATE_RULES:
            choice = pick_setting(logits, y[train], GATE_RULES[rule])
            key = (choice.pooling, choice.layers, choice.penalty)
            if key not in fitted:
                fitted[key] = fitted_probe("keep", inner, y[train], choice)
            probe = dataclasses.replace(fitted[key], threshold=choice.threshold, false_match=GATE_RULES[rule])
            scores = probe.scores(features[probe.pooling][test][:, list(probe.layers)])
            hits[rule][test] = scores > probe.threshold
            chosen[rule].append(probe.record() | {"cv_table": None})
    part: dict = {"original": original, "rules": {}, "per_fold": chosen}
    part["settings"] = "the runtime stage's per-fold choices" if recorded else "chosen here"
    for rule, hit in hits.items():
        rates = rates_of(labels, runtime_rows(data, labels, hit.tolist()))
        part["rules"][rule] = {
            "false_match": GATE_RULES[rule],
            "balanced_accuracy": balanced_accuracy(hit[y].double(), hit[~y].double(), 0.5),
            "matched_share": rates_of(labels, hit.tolist()),
            "rates": rates,
            "kept_share_of_original": rates[keep] / original[keep],
            "score": gate_score(rates, original, keep),
        }
    part["rule"] = GATE_RULE
    part["chosen"] = max(GATE_RULES, key=lambda r: part["rules"][r]["score"])  # ties: the earlier
    data["gate"] = part
    write(data)


def residuals(model, tokenizer, prompts: list[str], known: dict) -> dict[str, torch.Tensor]:
    """Every layer's residuals of ``prompts`` per pooling (captured once, kept in ``CACHE`` keyed
    by the prompts: the same model and prompts give the same residuals)."""
    key = hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]
    path = CACHE / f"cv_residuals_{key}.pt"
    if not known and path.exists():
        known.update(torch.load(path))
    for pooling in POOLINGS:
        if pooling not in known:
            known[pooling] = last_token_residuals(model, tokenizer, prompts, desc=pooling, pooling=pooling)
            CACHE.mkdir(parents=True, exist_ok=True)
            torch.save(known, path)
    return known


def stage_runtime(model, tokenizer, prompts, labels, keep: str, data: dict, features: dict) -> None:
    """``--when not:KEEP`` by each condition, cross-validated (module docstring)."""
    y = torch.tensor([lab == keep for lab in labels])
    fold = fold_of_categories(labels)
    matches, records = nested_conditions(features, y, fold)
    original = rates_of(labels, [bool(r) for _, r in data["answers"]["original"]])
    part = {"original": original, "candidates": {}, "probe_per_fold": records}
    for name, hit in matches.items():
        verdicts = runtime_rows(data, labels, hit.tolist())
        rates = rates_of(labels, verdicts)
        part["candidates"][name] = {
            "balanced_accuracy": balanced_accuracy(hit[y].double(), hit[~y].double(), 0.5),
            "matched_share": rates_of(labels, hit.tolist()),
            "rates": rates,
            "score": keep_score(rates, original, keep),
        }
    part["chosen"] = min(RUNTIME_CANDIDATES, key=lambda n: part["candidates"][n]["score"])
    data["runtime"] = part
    write(data)


def fold_of_categories(labels: list[str]) -> torch.Tensor:
    """Each prompt's fold, stratified by category (the ``i``-th prompt of a category in fold
    ``i mod FOLDS``)."""
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        out.append(seen.get(lab, 0) % FOLDS)
        seen[lab] = seen.get(lab, 0) + 1
    return torch.tensor(out)


def stage_weights(model, tokenizer, direction, prompts, labels, keep: str, data: dict, acts) -> None:
    """Each weight candidate fitted on the other folds, answering each fold (saved per fold)."""
    groups = category_prompts("measure")
    base = last_token_residuals(model, tokenizer, load_prompts("harmless"), prompt_set="harmless")
    fold = fold_of_categories(labels).tolist()
    part = data.setdefault("weights", {"answers": {}, "prompts": prompts})
    if part.get("prompts") != prompts:  # other measuring prompts, other folds: every fit is new
        data.setdefault("earlier_weights", []).append(part)
        part = data["weights"] = {"answers": {}, "prompts": prompts}
    for k in range(FOLDS):
        rows = [i for i in range(len(prompts)) if fold[i] == k]
        train = {c: [p for i, p in enumerate(prompts) if labels[i] == c and fold[i] != k] for c in groups}
        cat_acts = {
            c: acts[[i for i in range(len(prompts)) if labels[i] == c and fold[i] != k]] for c in groups
        }
        cats = from_residuals(cat_acts, base, direction.layer_index)
        make = None
        for method, setting, strength in WEIGHT_CANDIDATES:
            label = weight_label(method, setting, strength)
            got = part["answers"].setdefault(label, {})
            if all(str(i) in got for i in rows):
                continue
            say(f"fold {k}: {label}")
            if method == "orthogonal":
                edit = cut(model, keep_vector(direction, cats, [keep], "orthogonal"), alpha=setting)
            else:
                if make is None:
                    make, _ = preserving_edit(
                        model, tokenizer, direction, train, keep, exclude=[prompts[i] for i in rows]
                    )
                edit = make({"keep": setting, "prior": 1.0, "strength": strength})()
            with edit:
                found = completions(
                    model, tokenizer, [prompts[i] for i in rows], max_tokens=MAX_TOKENS, batch_size=None
                )
            got.update({str(i): [a.text, a.refused] for i, a in zip(rows, found, strict=True)})
            write(data)
    summarize_weights(labels, keep, data)


def summarize_weights(labels: list[str], keep: str, data: dict) -> None:
    """Rates and scores of the weight candidates answered on every prompt; the chosen one."""
    part, n = data["weights"], len(labels)
    original = rates_of(labels, [bool(r) for _, r in data["answers"]["original"]])
    part["rates"], part["scores"] = {}, {}
    for candidate in WEIGHT_CANDIDATES:
        label = weight_label(*candidate)
        got = part["answers"].get(label, {})
        if len(got) == n:
            rates = rates_of(labels, [bool(got[str(i)][1]) for i in range(n)])
            part["rates"][label] = rates
            part["scores"][label] = keep_score(rates, original, keep)
    if part["scores"]:
        part["chosen"] = min(part["scores"], key=part["scores"].get)  # dict order: the listed order
    write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="answers,runtime,weights")
    parser.add_argument("--keep", default="weapons")
    parser.add_argument(
        "--features",
        type=Path,
        help="gate: a saved capture of the measuring prompts' residuals ({last, mean, prompts}, "
        "every layer) instead of capturing them (no model load)",
    )
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.only != "gate" or args.features is None:
        model, tokenizer = load()
        direction = default_direction(model, tokenizer)
    groups = category_prompts("measure")
    prompts = [p for g in groups.values() for p in g]
    labels = [c for c, g in groups.items() for _ in g]
    data.update(
        {
            "model": "demo (Qwen2.5-Coder-0.5B-Instruct, float32, CPU)",
            "judge": "markers",
            "max_tokens": MAX_TOKENS,
            "keep": args.keep,
            "folds": FOLDS,
            "prompts": f"harmful_categories.jsonl ({len(prompts)}: {len(groups)} categories)",
            "rule": RULE,
        }
    )
    earlier = data.get("answers", {}).get("prompts")
    if earlier is not None and earlier != prompts:  # other measuring prompts: keep the earlier rates
        kept = {k: data[k] for k in ("runtime", "gate", "git", "date") if k in data}
        data.setdefault("earlier_runs", []).append(kept | {"prompts": len(earlier)})
    features: dict[str, torch.Tensor] = {}
    for stage in args.only.split(","):
        start = time.perf_counter()
        if stage == "answers":
            stage_answers(model, tokenizer, direction, prompts, data)
        elif stage == "runtime":
            features = residuals(model, tokenizer, prompts, features)
            stage_runtime(model, tokenizer, prompts, labels, args.keep, data, features)
        elif stage == "gate":
            stored = "captured now (float32)"
            if args.features is not None:
                features, dtype = saved_features(args.features, prompts)
                stored = f"saved capture {args.features.name} (stored as {dtype})"
            else:
                features = residuals(model, tokenizer, prompts, features)
            stage_gate(labels, args.keep, data, features)
            data["gate"]["features"] = stored
            write(data)
        elif stage == "weights":
            features = residuals(model, tokenizer, prompts, features)
            stage_weights(model, tokenizer, direction, prompts, labels, args.keep, data, features["last"])
        else:
            raise SystemExit(f"unknown stage {stage!r}")
        data.setdefault("seconds", {})[stage] = round(time.perf_counter() - start)
        write(data)
        say(f"{stage} done in {data['seconds'][stage]} s; wrote {RESULTS}")


if __name__ == "__main__":
    main()
