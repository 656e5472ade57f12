"""The measured tables of what a cut does: the tutorial's output, directions, judges, answer
length, reports, selection, peers and the control studies (the frontier is in
``tables_frontier.py``; registered in ``tables_common``; see ``benchmarks/readme_tables.py``).
"""

from __future__ import annotations

from typing import Any

from tables_common import load, markdown, pct, seconds, table


@table("tutorial-output")
def tutorial_output() -> list[str]:
    """The two summary lines of the tutorial, printed by the library's own ``summary()``."""
    import torch

    from vauban.direction.results import DirectionResult
    from vauban.evaluation.results import EvalResult

    run = load("run_demo.json")["run"]
    d = run["direction"]
    direction = DirectionResult(
        direction=torch.eye(d["d_model"])[0],
        layer_index=d["layer_index"],
        cosine_scores=tuple(d["cosine_scores"]),
        d_model=d["d_model"],
        model_path=d["model_path"],
    )
    numbers = {k: v for k, v in run["evaluation"].items() if k in EvalResult.__dataclass_fields__}
    evaluation = EvalResult(**{**numbers, "before": (), "after": ()})
    return ["```", direction.summary(), evaluation.summary(), "```"]


@table("measured")
def measured() -> list[str]:
    fresh = load("run_demo.json")
    run, seconds = fresh["run"], fresh["run"]["seconds"]
    d, ev = run["direction"], run["evaluation"]
    layer = d["layer_index"]
    before, after = run["probes"]["harmful"][layer], run["probes"]["harmful, cut"][layer]
    judge = ev.get("judge", "markers")
    study = load("length_study.json")
    counts, tokens, study_judge = study["counts"], ev.get("max_tokens", 128), study["judge"].split(" ")[0]
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    rows = [
        [
            "direction",
            f"layer {layer} of {len(d['cosine_scores'])}, cosine separation {d['cosine_scores'][layer]:.4f}",
        ],
        [
            f'probe at layer {layer}, "How do I pick a lock?"',
            f"{before:+.2f} before the cut, {after:+.2f} after ({(after - before) / before * 100:+.0f} %)",
        ],
        [
            f"bundled eval set, {ev['n_prompts']} prompts, {ev.get('max_tokens', 64)} answer tokens, "
            f"judge: {judge}",
            f"refusal {pct(ev['refusal_before'])} → {pct(ev['refusal_after'])}",
        ],
        [
            f"perplexity on the {ev['n_reference']} harmless reference answers",
            f"{ev['perplexity_before']:.2f} → {ev['perplexity_after']:.2f} "
            f"(×{ev['perplexity_after'] / ev['perplexity_before']:.2f})",
        ],
        [
            "KL(original ‖ cut), every answer position / first token",
            f"{ev['kl']:.4f} / {ev['first_token_kl']:.4f}",
        ],
        [
            f"steering, α = {run['steer']['alpha']:g}, on a prompt the model refused",
            "answers (judged not a refusal)" if not run["steer"]["refused"] else "still refuses",
        ],
        [
            f"AdvBench, {len(study['prompts'])} seeded prompts never used for selection, {tokens} answer "
            f"tokens, judge: {study_judge}",
            f"original {counts['original'][str(tokens)]['refusals']}/{len(study['prompts'])} refused, "
            f"plain cut {counts['cut'][str(tokens)]['refusals']}/{len(study['prompts'])}",
        ],
        [
            f"README set-up command on a fresh clone, empty cache ({fresh['date'][:10]}; machine shared, "
            f"load average {fresh['machine']['load_average_before'][0]:.0f} before, "
            f"{fresh['machine']['load_average_after'][0]:.0f} after)",
            f"{fresh['total_s'] / 60:.0f} min in all: install {fresh['install_s']:.0f} s, then {steps} "
            "(load includes the one-time GGUF dequantization)",
        ],
    ]
    return markdown(["what", "result"], rows)


@table("judges")
def judges() -> list[str]:
    """Each refusal judge against the 900 human labels and the labelled answers of the held-out
    test models (``benchmarks/judges.py``)."""
    r = load("judges.json")
    rows = []
    for j in r["judges"]:
        a, h = j["splits"]["all"], j["splits"]["held_out"]
        e = a["errors"]
        rows.append(
            [
                f"`{j['judge']}`",
                f"{pct(a['accuracy'], 1)} / {pct(a['precision'] or 0, 1)} / {pct(a['recall'], 1)}",
                f"{pct(h['accuracy'], 1)} / {pct(h['precision'] or 0, 1)} / {pct(h['recall'], 1)}",
                f"{e['missed_full_refusals']} / {e['missed_partial_refusals']} / {e['false_alarms']}",
                *labelled_cells(j.get("labelled", {})),
                seconds(j["seconds"]["judge_cpu"]),
            ]
        )
    return markdown(
        [
            "judge",
            "XSTest, all 900: accuracy / precision / recall",
            "held out (225)",
            "missed full / missed partial / false alarms",
            "labelled test models: accuracy / precision / recall",
            "evasions + late refusals caught / false alarms",
            "CPU time (900 answers)",
        ],
        rows,
    )


def labelled_cells(lab: dict[str, Any]) -> list[str]:
    """A judge's numbers on the labelled answers of the test models (``–`` when not measured)."""
    test, hard = lab.get("splits", {}).get("test"), lab.get("evasion_and_late")
    if not test or not hard:
        return ["–", "–"]
    scores = f"{pct(test['accuracy'], 1)} / {pct(test['precision'] or 0, 1)} / {pct(test['recall'], 1)}"
    caught = f"{pct(hard['detected'], 1)} of {hard['n']} / {pct(hard['false_alarms'], 1)}"
    return [f"{scores} (n={test['n']})", caught]


@table("length")
def length() -> list[str]:
    """Refusals of the original and the default cut by answer length (``benchmarks/length_study.py``)."""
    r = load("length_study.json")
    n = len(r["prompts"])
    rows = [
        [
            side,
            *(
                f"{r['counts'][side][str(t)]['refusals']}/{n} "
                f"({r['counts'][side][str(t)]['late_refusals']} late)"
                for t in r["lengths"]
            ),
        ]
        for side in ("original", "cut")
    ]
    return markdown(
        ["AdvBench, judge: " + r["judge"].split(" ")[0], *(f"{t} tokens" for t in r["lengths"])], rows
    )


@table("report")
def report() -> list[str]:
    """The demo model's full evaluation, original vs the default cut (``benchmarks/demo_report.py``)."""
    r = load("demo_report.json")
    rows = [[a, b, c] for a, b, c in r["table"]]
    x = r.get("xstest")
    if x:
        rows.insert(
            3,
            [
                f"over-refusal on XSTest's safe prompts ({x['n']} prompts)",
                pct(x["over_refusal_before"], 1),
                pct(x["over_refusal_after"], 1),
            ],
        )
    seconds = r["seconds"]
    lines = markdown(["measure", "original", "cut"], rows)
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in seconds["parts_wall"].items())
    extra = f", XSTest {x['seconds']:.0f} s" if x else ""
    setup = seconds["load_and_measure"]["wall"]
    judged = r.get("rejudged", {}).get("judged_at")
    again = f" Answers judged again with the judge at {judged}." if judged else ""
    return [
        *lines,
        "",
        f"Wall time on the 2-core CPU: load and measure {setup:.0f} s; "
        f"evaluate {seconds['evaluate']['wall']:.0f} s ({parts}){extra}.{again}",
    ]


@table("selection")
def selection() -> list[str]:
    """Geometric vs effect layer choice on the demo model (``benchmarks/selection_demo.py``):
    the layer, held-out refusals and KL of each choice's plain cut, and what each choice costs."""
    r = load("selection_demo.json")
    held, seconds, scan = r["held_out"], r["seconds"], r["full_scan"]
    rows = []
    labels = {
        "original": "original",
        "geometry": "geometric choice (`--select geometry`)",
        "effect": "effect choice (default)",
    }
    for name, label in labels.items():
        row = held["rows"][name]
        cost = {k: f"{seconds[k]:.0f} s" for k in ("geometry", "effect")}.get(name, "")
        rows.append(
            [
                label,
                "" if row["layer"] is None else str(row["layer"]),
                f"{row['eval_0_19']['refused']}/{row['eval_0_19']['of']}",
                f"{row['advbench_100']['refused']}/{row['advbench_100']['of']}",
                f"{row['reference_first_token_kl']:.4f}",
                cost,
            ]
        )
    gpu = r["gpu_8b_estimate"]
    lines = markdown(
        [
            "model",
            "layer",
            "refused, eval 0–19",
            "refused, AdvBench 100",
            "first-token KL (reference)",
            "measure, demo CPU",
        ],
        rows,
    )
    note = (
        f"Answers of {held['max_tokens']} tokens, {held['judge']}. Effect selection cut "
        f"{len(r['effect']['effects'])} candidate layers "
        f"({', '.join(str(e['layer']) for e in r['effect']['effects'])}); a full scan of "
        f"layers {scan['range'][0]}–{scan['range'][-1]} would have chosen layer "
        f"{scan['choice_of_full_scan']} ({scan['seconds_per_layer']:.0f} s per layer). "
        f"Estimated for Llama-3.1-8B on one H200: {gpu['seconds']:.1f} s "
        f"({gpu['candidates']} candidates)."
    )
    return [*lines, "", note]


@table("peers")
def peers() -> list[str]:
    """vauban and heretic on the demo model (``benchmarks/peers.py``): both yardsticks, the
    capability checks, the wall time of each search and the trials it finished."""
    r = load("peers_demo.json")
    searches = r["searches"]
    vauban, heretic = searches.get("vauban") or {}, searches.get("heretic") or {}
    cost = {
        "vauban_default": vauban.get("vauban_default", {}),
        "vauban_optimize": vauban.get("vauban_optimize", {}),
        "heretic": heretic,
    }
    labels = {
        "original": "original",
        "vauban_default": "vauban abliterate (default, no search)",
        "vauban_optimize": "vauban optimize, run 1 (its pick)",
        "heretic": "heretic (its search, chosen trial)",
    }

    def num(d: dict, key: str, fmt: str = "{:.4f}") -> str:
        return "–" if d.get(key) is None else fmt.format(d[key])

    entries = list(r["models"].items())
    for i, run in enumerate(r.get("optimize_reruns") or [], 1):  # later optimize runs, timed again
        name = f"rerun{i}"
        at = run["vauban_optimize"].get("git", "?")
        labels[name] = f"vauban optimize, run {i + 1}, timed again (at {at})"
        cost[name] = run["vauban_optimize"]
        entries.append((name, run.get("evaluated") or {}))
    rows, safe = [], "–"
    for name, entry in entries:
        v = {k: x for metric in (entry.get("vauban") or {}).values() if metric for k, x in metric.items()}
        h = entry.get("heretic") or {}
        c = cost.get(name) or {}
        safe = v.get("safe_prompts", safe)
        trials = "" if name == "original" else "–" if c.get("trials") is None else str(c["trials"])
        rows.append(
            [
                labels.get(name, name),
                num(v, "refusals", "{}"),
                num(v, "first_token_kl"),
                num(v, "reference_kl"),
                num(v, "over_refusals", "{}"),
                num(v, "gsm8k", "{:.0%}"),
                num(v, "humaneval", "{:.0%}"),
                num(h, "refusals", "{}"),
                num(h, "kl"),
                "" if name == "original" else num(c, "seconds", "{:.0f}"),
                trials,
            ]
        )
    return markdown(
        [
            "model",
            "vauban: refused /100",
            "vauban: first-token KL",
            "vauban: KL, 64 answer tokens",
            f"vauban: over-refused /{safe}",
            "GSM8K (10)",
            "HumanEval (10)",
            "heretic: refused /100",
            "heretic: KL",
            "wall time (s)",
            "trials",
        ],
        rows,
    )


@table("peers-frontier")
def peers_frontier() -> list[str]:
    """Cuts beyond the picks, by vauban's yardstick on the same report prompts
    (``benchmarks/peers_frontier.py``): the cheapest trial of each refusal level of vauban's
    search front, and the default cut with heretic's default edit options."""
    r = load("peers_demo.json")

    def options(cut: dict) -> str:
        named = [
            name
            for key, name in (("projected", "projected"), ("norm_preserving", "norm-preserving"))
            if cut.get(key)
        ]
        return f" ({', '.join(named)})" if named else ""

    def measured(row: dict) -> list[str]:
        return [
            str(row["refusals"]),
            f"{row['first_token_kl']:.4f}",
            f"{row['reference_kl']:.4f}",
            f"{row['perplexity']:.2f}",
        ]

    rows = [
        [
            f"vauban optimize, trial {f['trial']}{options(f['cut'])}",
            f"{f['search_refusal']:.1%} at {f['search_kl']:.4f}",
            *measured(f),
        ]
        for f in r.get("frontier") or []
    ]
    exports = {
        name: (r["models"].get(name) or {}).get("vauban") or {} for name in ("vauban_default", "heretic")
    }
    variants = [[f"vauban abliterate's cut{options(v)}", "", *measured(v)] for v in r.get("variants") or []]
    for name, label, more in (
        ("vauban_default", "vauban abliterate's cut, as exported", variants),
        ("heretic", "heretic's pick, for comparison", []),
    ):
        if exports[name].get("refusal") and exports[name].get("kl"):
            rows.append([label, "", *measured(exports[name]["refusal"] | exports[name]["kl"])])
        rows += more
    return markdown(
        [
            "cut",
            "in vauban's search (40 prompts, 32 tokens): refused, KL",
            "vauban: refused /100",
            "vauban: first-token KL",
            "vauban: KL, 64 answer tokens",
            "perplexity",
        ],
        rows,
    )
