"""Regenerate the measured tables of README.md and docs/benchmarks.md from ``benchmarks/results/``,
or check them (CI).

Every measured table in those documents sits between two marker lines::

    <!-- table: NAME -->
    ...generated, never edited by hand...
    <!-- /table -->

and is written by the function registered here under ``NAME``. A function reads its results
files with :func:`load` (which remembers them) and returns markdown lines; the block ends with a
``Source:`` line naming each file read, with the commit and date recorded inside it. So a
number in a table can only come from a committed results file, and ``--check`` (run by
``.ci/run``) fails when a document and the files disagree, or when a table is placed in no
document or in two.

    python benchmarks/readme_tables.py           # rewrite the blocks of both documents
    python benchmarks/readme_tables.py --check   # exit 1, with a diff, if any block is stale

To add a table: write a results file in ``benchmarks/results/`` from your benchmark (record
``date`` and ``git`` at top level), add a function below decorated ``@table("name")`` that
builds the lines from it, and put the two marker lines where it belongs (docs/benchmarks.md, or
README.md for the few a new user needs); then run this script. Prose around the blocks stays
hand-written: keep numbers out of it, or name their file next to them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DOCUMENTS = (README, ROOT / "docs" / "benchmarks.md")
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)

TABLES: dict[str, Callable[[], list[str]]] = {}
_read: list[str] = []  # results files read by the table being built, in order


def table(name: str) -> Callable[[Callable[[], list[str]]], Callable[[], list[str]]]:
    """Register a table builder under its README marker name."""

    def register(fn: Callable[[], list[str]]) -> Callable[[], list[str]]:
        TABLES[name] = fn
        return fn

    return register


def load(name: str) -> dict[str, Any]:
    """A results file of ``benchmarks/results/``, remembered as a source of the current table."""
    path = RESULTS / name
    if not path.is_file():
        raise SystemExit(f"readme_tables: {path} is missing; run the benchmark that writes it")
    if name not in _read:
        _read.append(name)
    return json.loads(path.read_text())


# Files written before results recorded their own commit: the last commit that changed each (git
# log, read once and kept here, so --check gives the same answer in a shallow clone) and the run's
# date from the file or its notes. New results files record ``git`` and ``date`` themselves.
COMMITTED: dict[str, tuple[str, str]] = {
    "cpu_demo.json": ("332ffa3", "2026-11-27"),
    "optimize_demo.json": ("2c72966", "2026-11-27"),
    "gpu_h100_llama-3.1-8b.json": ("e7b26c9", "2026-11-27"),
    "gpu_h100_kernel_sweep.json": ("0742e11", "2026-11-27"),
    "gpu_2xh100_llama-3.1-8b.json": ("e7b26c9", "2026-11-27"),
    "gpu_h200_llama-3.1-8b.json": ("8116238", "2026-11-30"),
    "gpu_2xh200_replicas.json": ("8116238", "2026-11-30"),
    "gpu_2xh200_llama-3.1-8b.json": ("8116238", "2026-11-30"),
}


def provenance(name: str) -> str:
    """``file (commit X, date)``: what the file records about itself, else :data:`COMMITTED`."""
    data = json.loads((RESULTS / name).read_text())
    commit = data.get("git") or data.get("commit")
    date = str(data.get("date", ""))[:10]
    if commit:
        return f"`benchmarks/results/{name}` (run at commit {commit}, {date})"
    if name in COMMITTED:
        committed, day = COMMITTED[name]
        return f"`benchmarks/results/{name}` (committed in {committed}, run {date or day})"
    raise SystemExit(f"readme_tables: {name} records no commit; add 'git' and 'date' to it")


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def pct(x: float, digits: int = 0) -> str:
    return f"{x * 100:.{digits}f} %"


def seconds(x: float) -> str:
    return f"{x:.1f} s" if x < 10 else f"{x:,.0f} s"


def build(name: str) -> str:
    _read.clear()
    lines = TABLES[name]()
    sources = "; ".join(provenance(f) for f in _read)
    return "\n".join([*lines, "", f"Source: {sources}."]) + "\n"


# --- the tables ------------------------------------------------------------------------------


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
    """Each refusal judge against the 900 human labels (``benchmarks/judges.py``)."""
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
                pct(j["splits"]["mistralinstruct"]["accuracy"], 1),
                pct(j["splits"]["mistralguard"]["accuracy"], 1),
                f"{e['missed_full_refusals']} / {e['missed_partial_refusals']} / {e['false_alarms']}",
                seconds(j["seconds"]["judge_cpu"]),
            ]
        )
    return markdown(
        [
            "judge",
            "all 900: accuracy / precision / recall",
            "held out (225)",
            "Mistral-7B-Instruct answers (450)",
            "… with a guard prompt (450)",
            "missed full / missed partial / false alarms",
            "CPU time",
        ],
        rows,
    )


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


@table("exports")
def exports() -> list[str]:
    """Every export format on the demo model (``benchmarks/exports_demo.py``)."""
    r = load("exports_demo.json")
    f = r["formats"]

    def mb(size: int) -> str:
        return f"{size / 2**10:,.0f} kB" if size < 2**20 else f"{size / 2**20:,.0f} MB"

    def agree(entry: dict) -> str:
        t = entry.get("first_token")
        return (
            ""
            if not t
            else (
                f"first-token logits max Δ {t['max_abs_diff']:.3f} (scale "
                f"{t['logit_scale']:.0f}), top-1 {pct(t['top1_agreement'])}"
            )
        )

    def refused(entry: dict, n: int) -> str:
        return "" if "refusal" not in entry else f"; refused {pct(entry['refusal'])} of {n} (float32: "

    float_rate = pct(r["refusal_float32_in_memory"])
    n = int(r["prompts"].split(":")[-1].rstrip("]"))
    half, full = f["safetensors"], f["safetensors-float32"]
    rows = [
        [
            "safetensors (source dtype)",
            f"`{half['dtype']}`",
            mb(half["weights_bytes"]),
            "`AutoModelForCausalLM.from_pretrained(OUT)`, `mlx_lm.load(OUT)`",
            agree(f["safetensors"]),
            f"{f['safetensors']['seconds']:.0f} s",
        ],
        [
            "safetensors, `--dtype float32`",
            "float32",
            mb(full["weights_bytes"]),
            "the same",
            "the model vauban computed",
            f"{f['safetensors-float32']['seconds']:.0f} s",
        ],
        [
            "GGUF from the GGUF source (`--format gguf`)",
            f["gguf"]["quantization"] or "",
            f"{mb(f['gguf']['weights_bytes'])} (source {mb(f['gguf']['source_bytes'])})",
            "llama.cpp",
            agree(f["gguf"]) + refused(f["gguf"], n) + f"{float_rate})",
            f"{f['gguf']['seconds']:.0f} s",
        ],
    ]
    for quant in ("f16", "q8_0"):
        e = f[f"gguf-{quant}-converter"]
        rows.append(
            [
                f"GGUF through llama.cpp's converter (`--quant {quant}`)",
                quant,
                mb(e["weights_bytes"]),
                "llama.cpp",
                agree(e),
                f"{e['seconds']:.0f} s",
            ]
        )
    lora, m = f["lora"], f["mlx-4bit"]
    rows.append(
        [
            "LoRA adapter (`--format lora`)",
            "rank 1 per edited matrix",
            f"{mb(lora['weights_bytes'])} (full float32 {mb(lora['full_float32_bytes'])})",
            "`PeftModel.from_pretrained(base, OUT)`",
            agree(lora),
            f"{lora['seconds']:.0f} s",
        ]
    )
    answered = "not measured (see below)"
    if "refusal" in m:
        answered = (
            agree(m) + f"; refused {pct(m['refusal'])} of {m['prompts']} (float32: "
            f"{pct(m['refusal_float32_same_prompts'])}); "
            f"{m['same_answer_as_float32']}/{m['prompts']} answers word for word"
        )
        if m.get("mlx_activations") == "float32":
            answered += "; run on mlx's CPU backend with float32 activations"
    rows.append(
        [
            "MLX (`--format mlx --quant 4`)",
            "4-bit",
            mb(m["weights_bytes"]),
            "`mlx_lm.load(OUT)`",
            answered,
            f"{m['seconds']:.0f} s",
        ]
    )
    note = (
        f"Refusals: greedy answers of {r['max_tokens']} tokens to the bundled eval prompts, judge "
        f"{r['judge'].split(' ')[0]}, each export run by its own runtime; logits on the first "
        f"{r.get('logit_prompts', 20)} prompts against the float32 model in memory. The uncut model "
        f"refused {pct(r['refusal_original'])} of {r['original_prompts']}."
    )
    if "mlx_run" in r:
        note += f" The MLX row was measured on its own (`--only mlx`) at {r['mlx_run']['git']}."
    header = ["format", "weights", "size", "load with", "agreement with the cut model", "export time"]
    return [*markdown(header, rows), "", note]


@table("optimize-trials")
def optimize_trials() -> list[str]:
    """Trials with no refusal on the search prompts that are on the three-objective Pareto front
    (recomputed from the stored trials: the file's own ``pareto`` list is the two-objective front
    the code of that run kept), and the plain cut."""
    from vauban.search.trials import pareto_mask

    result = load("optimize_demo.json")
    trials = result["optimize"]["trials"]
    front = pareto_mask([(t["refusal"], t["kl"], t["refusal_likelihood"]) for t in trials])
    pick = result["optimize"]["best"]
    shown = [t for t, on in zip(trials, front, strict=True) if (on and t["refusal"] == 0) or t["plain"]]
    rows = []
    for t in sorted(shown, key=lambda t: t["kl"]):
        refined = isinstance(t["cut"].get("attention"), list)  # per-layer weights: the refined cut
        label = f"{t['number']}" + (", plain α = 1 cut" if t["plain"] else "")
        label += ", refined plain cut" if refined else ""
        cells = [label, f"{t['kl']:.4f}", f"{t['refusal_likelihood']:.1e}"]
        if t["number"] == pick:
            cells = [f"**{cells[0]} (the pick)**", *(f"**{c}**" for c in cells[1:])]
        rows.append(cells)
    return markdown(
        ["trial (0 refusals on the search prompts)", "first-token KL", "refusal likelihood"], rows
    )


@table("cpu")
def cpu() -> list[str]:
    c = load("cpu_demo.json")
    m, g, s = c["measure"], c["generate"], c["scores"]
    mantissa, exponent = f"{max(m['max_rel_diff_vs_loop'], m['max_rel_diff_vs_hf_loop']):.0e}".split("e")
    same = f"{mantissa}e{int(exponent)}"
    stream = load("stream_memory.json")
    rows = [
        [
            f"residual capture, {m['prompts']} prompts: batched vs one prompt at a time",
            f"{m['speedup_vs_loop']:.1f}× faster ({m['speedup_vs_hf_loop']:.1f}× vs a plain "
            f"transformers loop with logits); same activations to {same}",
        ],
        [
            f"greedy generation, {g['prompts']} prompts × {g['max_tokens']} tokens: batched vs one at a time",
            f"{g['speedup']:.1f}× faster, "
            f"{'identical' if g['identical_answers'] == g['prompts'] else 'different'} answers",
        ],
        [
            "reference perplexity/KL pass: memory-sized batches vs batches of 16",
            f"{s['speedup']:.2f}× faster, {'same numbers to 1e-6' if s['equal'] else 'different numbers'}",
        ],
        [
            f"streamed cut (`vauban cut`) of the {stream['checkpoint_bytes'] / 1e9:.1f} GB demo checkpoint "
            "(float32, one file)",
            f"peak memory +{stream['peak_increase_bytes'] / 1e6:.0f} MB, {stream['seconds']:.0f} s",
        ],
    ]
    startup = load("cli_startup.json")
    eager, lazy = startup["trees"][0], startup["trees"][-1]
    rows.append(
        [
            f"`vauban --help` in a fresh process (best of {lazy['runs']}, load average "
            f"{startup['load_average_before'][0]:.0f})",
            f"{lazy['best_s']:.2f} s, {lazy['peak_rss_bytes'] / 1e6:.0f} MB, no torch imported; "
            f"{eager['best_s']:.1f} s and {eager['peak_rss_bytes'] / 1e6:.0f} MB at {eager['git']}, "
            "before imports were lazy",
        ]
    )
    return markdown(["what", "result"], rows)


@table("gpu")
def gpu() -> list[str]:
    """Issue 18's run on an H200 pair (``benchmarks/gpu.py``; rows built by ``gpu_table.py``): a
    section is taken from the first file that has it."""
    import gpu_table

    rows: dict[str, Any] = {}
    for name in ("gpu_h200_llama-3.1-8b.json", "gpu_2xh200_replicas.json", "gpu_2xh200_llama-3.1-8b.json"):
        for section, values in load(name).items():
            if isinstance(values, dict) and "error" not in values and "skipped" not in values:
                rows.setdefault(section, values)
    return gpu_table.table(rows).splitlines()


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


# --- README I/O --------------------------------------------------------------------------------


@table("control-categories")
def control_categories() -> list[str]:
    """Refusal per category on held-out prompts: original, default cut, cuts keeping one category
    (``benchmarks/control_demo.py``)."""
    r = load("control_demo.json")
    c = r["categories"]
    rates = c["held_out"]["rates"]
    names = list(rates)
    rows = [
        [cat, str(n), *(pct(rates[name][cat]) for name in names)]
        for cat, n in zip(c["categories"], c["counts_eval"], strict=True)
    ]
    chosen = c["development"]["chosen"]
    header = [
        "category",
        "held-out prompts",
        *(f"{n} ← chosen on dev prompts" if chosen in n else n for n in names),
    ]
    return [
        f"Judge: markers, {r['max_tokens']} answer tokens, `eval_categories.jsonl` (never used to "
        f"measure or choose); directions at layer {c['layer']}.",
        "",
        *markdown(header, rows),
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
        rows.append(
            [
                f"{name}: condition",
                "layer " + str(run["condition"]["layer"]),
                "",
                "test accuracy " + pct(run["test_accuracy"]),
                "",
                "",
            ]
        )
    return [
        f"Judge: markers, {data['max_tokens']} answer tokens; test prompts never used to measure the "
        "condition or choose its layer and threshold.",
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


def render(text: str) -> str:
    """``text`` with every marked block rebuilt."""
    names = [m["name"] for m in BLOCK.finditer(text)]
    unknown = sorted(set(names) - set(TABLES))
    if unknown:
        raise SystemExit(f"readme_tables: README marks unknown tables {unknown}; known: {sorted(TABLES)}")
    return BLOCK.sub(lambda m: m[1] + build(m["name"]) + m[4], text)


# Registered tables placed in no document on purpose, and why.
NOT_PLACED = {
    "selection": "its builder reads a selection_demo.json with held-out rows and a full scan, "
    "which the committed file (an earlier run) does not have",
}


def placed(texts: dict[Path, str]) -> list[str]:
    """Problems with where the tables are: a registered table in no document (unless listed in
    :data:`NOT_PLACED`), or in more than one."""
    where: dict[str, list[str]] = {name: [] for name in TABLES if name not in NOT_PLACED}
    for path, text in texts.items():
        for m in BLOCK.finditer(text):
            where.setdefault(m["name"], []).append(path.name)
    return [
        f"table {name!r} is in {', '.join(paths) if paths else 'no document'}"
        for name, paths in where.items()
        if len(paths) != 1
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description="regenerate or check the measured tables of the documents")
    parser.add_argument("--check", action="store_true", help="fail (exit 1) if a document is stale")
    parser.add_argument(
        "documents",
        nargs="*",
        type=Path,
        default=list(DOCUMENTS),
        help="markdown files (default: README.md and docs/benchmarks.md)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    texts = {path: path.read_text() for path in args.documents}
    problems = placed(texts) if args.documents == list(DOCUMENTS) else []
    for line in problems:
        print(f"readme_tables: {line}", file=sys.stderr)
    stale = []
    for path, text in texts.items():
        new = render(text)
        if new == text:
            continue
        if args.check:
            name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
            sys.stdout.writelines(
                difflib.unified_diff(text.splitlines(True), new.splitlines(True), name, "regenerated")
            )
            stale.append(name)
        else:
            path.write_text(new)
            print(f"rewrote {len(BLOCK.findall(text))} blocks in {path}")
    if stale:
        print(f"stale tables in {', '.join(stale)}: run python benchmarks/readme_tables.py", file=sys.stderr)
    if args.check and not stale and not problems:
        blocks = sum(len(BLOCK.findall(t)) for t in texts.values())
        print(f"tables match benchmarks/results/ ({blocks} blocks in {len(texts)} documents)")
    return 1 if stale or problems else 0


if __name__ == "__main__":
    sys.exit(main())
