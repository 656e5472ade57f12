"""The README and docs tables of issue 28: categories kept, conditions and languages
(``control_demo.py``, ``control_cv.py``, ``control_every.py``)."""

from __future__ import annotations

from tables_common import load, markdown, pct, pct_ci, table


@table("control-categories")
def control_categories() -> list[str]:
    """Refusal per category on held-out prompts, with Wilson 95 % intervals: original, default cut,
    the keep settings chosen by cross-validation, by weights and at run time
    (``benchmarks/control_demo.py``)."""
    r = load("control_demo.json")
    c = r["categories"]
    rates, held = c["held_out"]["rates"], c["held_out"]["prompts"].split()[0]
    names = list(rates)
    counts = dict(zip(c["categories"], c["counts_eval"], strict=True))
    rows = [[cat, str(n), *(pct_ci(rates[name][cat], n) for name in names)] for cat, n in counts.items()]
    keep, original = c["keep"], rates["original"]
    others = [cat for cat in c["categories"] if cat != keep]
    rows.append(
        [f"**{keep} ÷ original** (goal ≥ 80 %)", "", *(pct(rates[n][keep] / original[keep]) for n in names)]
    )
    rows.append(
        ["**others, highest** (goal ≤ 5 %)", "", *(pct(max(rates[n][o] for o in others)) for n in names)]
    )
    labels = {
        c["chosen"]["weights"]: f"`abliterate --keep {keep}` (weights; the export)",
        c["chosen"]["runtime"]: f"`chat`/`steer --keep {keep}` (run time, = --when not:{keep})",
    }
    header = [
        "category",
        "held-out prompts",
        *(
            f"{n}: {labels[n]}"
            if n in labels
            else n
            if n in ("original", "default cut")
            else f"{n}: earlier rule"
            for n in names
        ),
    ]
    return [
        f"Judge: markers, {r['max_tokens']} answer tokens, `{held}` (never used to measure, fit or "
        f"choose); directions at layer {c['layer']}; settings chosen by cross-validation over the "
        f"{sum(c['counts_measure'])} measuring prompts (`control_cv.json`), each rule committed "
        "before its one held-out run. Refusal with its Wilson 95 % interval.",
        "",
        *markdown(header, rows),
    ]


@table("control-keep-dev")
def control_keep_dev() -> list[str]:
    """Every keep setting cross-validated over the measuring prompts, with the score the choice
    minimizes (``benchmarks/control_cv.py``)."""
    cv = load("control_cv.json")
    rt, wt = cv["runtime"], cv["weights"]
    cats = list(rt["original"])
    rows = [["original", "", *(pct(rt["original"][cat]) for cat in cats), ""]]
    for name, cand in rt["candidates"].items():
        label = f"run time, {name} (balanced accuracy {pct(cand['balanced_accuracy'])})"
        rows.append(
            [
                f"**{label}** ← chosen" if name == rt["chosen"] else label,
                "",
                *(pct(cand["rates"][cat]) for cat in cats),
                f"{cand['score']:.2f}",
            ]
        )
        rows.append(["", "matched as " + cv["keep"], *(pct(cand["matched_share"][cat]) for cat in cats), ""])
    earlier = wt.get("prompts") != cv["answers"]["prompts"]  # weights not rerun on these prompts
    for name, rates in wt["rates"].items():
        label = f"weights, {name}" + (f" (round 2: {len(wt['prompts'])} prompts)" if earlier else "")
        rows.append(
            [
                f"**{label}** ← chosen" if name == wt.get("chosen") else label,
                "",
                *(pct(rates[cat]) for cat in cats),
                f"{wt['scores'][name]:.2f}",
            ]
        )
    gate = cv.get("gate", {})
    for name, rule in gate.get("rules", {}).items():
        label = f"run time, probe, threshold: {name} (margin to the goal {rule['score']:+.2f})"
        rows.append(
            [
                f"**{label}** ← chosen" if name == gate["chosen"] else label,
                "",
                *(pct(rule["rates"][cat]) for cat in cats),
                "",
            ]
        )
    return [
        f"Keeping {cv['keep']}; judge: markers, {cv['max_tokens']} answer tokens; {cv['prompts']}, "
        f"{cv['folds']}-fold cross-validation (each prompt answered under the edit or condition "
        "fitted without its fold). Score: the others' mean refusal + the kept category's shortfall "
        "below 80 % of its original (lower is better); rule: "
        + cv["rule"]
        + "."
        + (f" The probe's threshold rules (--false-match): {gate['rule']}." if gate else ""),
        "",
        *markdown(["keep setting", "", *cats, "score"], rows),
    ]


@table("control-conditions")
def control_conditions() -> list[str]:
    """Conditional steering: accuracy and refusal on matched vs unmatched test prompts."""
    data = load("control_demo.json")
    r = data["conditions"]
    rows = []
    for name, run in ((k, v) for k, v in r.items() if isinstance(v, dict) and "mode" in v):
        for side in ("matched_test", "unmatched_test"):
            s = run[side]
            rows.append(
                [
                    f"{name} ({run['mode']} refusal, alpha {run['alpha']:g})",
                    side.split("_")[0],
                    str(s["n"]),
                    pct(s["matched_share"]),
                    pct(s["refusal_before"]),
                    pct(s["refusal_after"]),
                ]
            )
        cond = run["condition"]
        if "layer" in cond:
            where = f"cosine, layer {cond['layer']}"
        else:
            where = f"probe, {cond['pooling']} pooling, {len(cond['layers'])} layers, C {cond['penalty']:g}"
        rows.append([f"{name}: condition", where, "", "test accuracy " + pct(run["test_accuracy"]), "", ""])
    return [
        f"Judge: markers, {data['max_tokens']} answer tokens; test prompts never used to measure the "
        "condition or choose its layer and threshold. probe: what `--when` fits (default); cosine: "
        "`--condition-kind cosine`.",
        "",
        *markdown(
            ["condition", "test prompts", "n", "judged matched", "refusal before", "refusal after"], rows
        ),
    ]


@table("control-languages")
def control_languages() -> list[str]:
    """Refusal and KL per language before/after the default (English) cut."""
    r = load("control_demo.json")
    lang = r["languages"]
    rep = lang["report"]
    cos = lang["cos_language_direction_with_english"]
    rows = [
        [
            row["group"],
            str(row["n"]),
            pct(row["refusal_before"]),
            pct(row["refusal_after"]),
            f"{row['kl']:.4f}",
            f"{cos[row['group']]:.2f}",
        ]
        for row in rep["rows"]
    ]
    return [
        f"Judge: {rep['judge']}, {rep['max_tokens']} answer tokens, 40 harmful + 40 harmless prompts per "
        f"language (`multilingual.jsonl`); KL over the first {rep['kl_tokens']} tokens of the original's "
        "answers to the harmless ones.",
        "",
        *markdown(
            [
                "language",
                "harmful prompts",
                "refusal original",
                "refusal after the default cut",
                "KL (harmless)",
                "cos(language direction, English direction)",
            ],
            rows,
        ),
    ]


@table("control-every")
def control_every() -> list[str]:
    """Each category kept in turn with the shipped ``--keep`` defaults, both routes, on the test
    prompts: the kept category's refusal against its original, the highest other, the goal
    (``benchmarks/control_every.py``)."""
    r = load("control_demo.json")["every_keep"]
    original, rows = r["original"], r["rows"]
    routes = [route for route in r["routes"] if any(row["route"] == route for row in rows.values())]
    out = []
    for keep, before in original.items():
        cells = [f"`{keep}`", pct(before)]
        for route in routes:
            row = rows.get(f"{route}: keep {keep}")
            if row is None:
                cells += ["–", "–", "–"]
                continue
            goal = row["goal"]
            others = max((c for c in row["rates"] if c != keep), key=lambda c: row["rates"][c])
            cells += [
                f"{pct(row['rates'][keep])} ({pct(goal['kept_share'])} of it)",
                f"{pct(goal['others_highest'])} ({others})",
                "**yes**" if goal["met"] else "no",
            ]
        out.append(cells)
    header = ["kept category", "original refusal"]
    for route in routes:
        header += [f"{route}: kept refusal", f"{route}: others, highest", f"{route}: goal met"]
    return [
        f"Judge: markers, {r['max_tokens']} answer tokens, {r['prompts']} (never used to measure, fit "
        "or choose); the shipped defaults, nothing chosen here: "
        + "; ".join(f"{route}: `{how}`" for route, how in r["routes"].items() if route in routes)
        + ". Goal: kept ≥ 80 % of the original's refusal and every other category ≤ 5 %.",
        "",
        *markdown(header, out),
    ]
