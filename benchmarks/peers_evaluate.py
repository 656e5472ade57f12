"""The evaluation stage of ``benchmarks/peers.py``: every model on the same report prompts, by
vauban's evaluation and by heretic's own yardstick (heretic run as a separate program).

Each (model, yardstick) result is kept in ``WORK/eval/`` as soon as it is measured, so an
interrupted stage resumes where it stopped; ``benchmarks/results/peers_demo.json`` gathers them
with the settings and the wall times of the searches.

vauban's yardstick: refusals on the 100 report AdvBench goals (greedy answers of evaluate's
default length, judged by vauban's default judge), first-token KL(original ‖ model) on the 100
report harmless prompts, KL at every position of the first 64 tokens of the 48 bundled
reference answers with both perplexities, over-refusal on 48 bundled safe-but-scary prompts,
and GSM8K accuracy and HumanEval pass@1 on their first 10 problems. heretic's: ``heretic --model BASE
--evaluate-model EXPORT`` with the report files as its evaluation prompts (its system prompt,
its markers, its answer length, its KL).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from peers_common import MODELS, RESULTS, heretic_common, model_dirs, read_rows, run_logged, say
from provenance import stamp
from vauban.evaluation.evaluating import DEFAULT_MAX_TOKENS

SAFE = 48  # bundled over-refusal prompts (of 112), as benchmarks/demo_report.py
LIMIT = 10  # GSM8K and HumanEval problems per model (the first ones)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def lines(path: Path) -> list[str]:
    return [x for x in path.read_text().splitlines() if x.strip()]


def vauban_metrics(files: dict[str, Path], max_tokens: int) -> dict:
    """vauban's yardstick, one function per metric: ``fn(base, model, tokenizer, cache) -> row``
    (``cache`` keeps what the original gives, computed once). Each (model, metric) row is stored
    on its own, so the stage resumes and a metric added later runs only for itself."""
    from vauban.evaluation.evaluating import Pair, answer_scores
    from vauban.judge.answers import completions
    from vauban.runtime.scoring import first_token_logprobs, kl_divergence
    from vauban.text.prompts import load_pairs, load_prompts

    harmful, harmless = lines(files["harmful_report"]), lines(files["harmless_report"])

    def refusal(base, model, tokenizer, cache):
        answers = completions(model, tokenizer, harmful, max_tokens=max_tokens, batch_size=None)
        return {
            "refusals": sum(a.refused for a in answers),
            "prompts": len(answers),
            "max_tokens": max_tokens,
            "judge": "vauban default (completions' default judge)",
            "refused": [[a.prompt, a.text] for a in answers if a.refused],
        }

    def kl(base, model, tokenizer, cache):
        if "harmless" not in cache:
            cache["harmless"] = first_token_logprobs(base, tokenizer, harmless)
        cut = first_token_logprobs(model, tokenizer, harmless)
        row = {
            "first_token_kl": kl_divergence(cache["harmless"], cut),
            "first_token_kl_prompts": len(harmless),
        }
        if model is not base:
            scores = answer_scores(Pair(base, model), tokenizer, load_pairs("reference"))
            row |= {
                "reference_kl": scores.kl,
                "reference_first_token_kl": scores.first_token_kl,
                "perplexity": scores.perplexity_after,
                "perplexity_original": scores.perplexity_before,
                "reference": "48 bundled reference answers, KL at each of their first 64 tokens",
            }
        return row

    def over_refusal(base, model, tokenizer, cache):
        safe = load_prompts("over_refusal")[:SAFE]
        answers = completions(model, tokenizer, safe, max_tokens=max_tokens, batch_size=None)
        return {
            "over_refusals": sum(a.refused for a in answers),
            "safe_prompts": len(answers),
            "safe": f"bundled over_refusal[:{SAFE}] (6 of each of its 8 kinds)",
            "refused": [[a.prompt, a.text] for a in answers if a.refused],
        }

    def capability(base, model, tokenizer, cache):
        from demo_inputs import SHARED
        from vauban.capability.gsm8k import GSM8K
        from vauban.capability.humaneval import HumanEval

        checks = [
            GSM8K(SHARED / "gsm8k" / "test.jsonl", limit=LIMIT),
            HumanEval(SHARED / "humaneval" / "HumanEval.jsonl.gz", limit=LIMIT, allow_code_execution=True),
        ]
        scores = [score for check in checks for score in check.run(model, tokenizer)]
        return {score.name: score.value for score in scores} | {"capability_problems": LIMIT}

    return {"refusal": refusal, "kl": kl, "over_refusal": over_refusal, "capability": capability}


def vauban_yardstick(files: dict[str, Path], folders: dict[str, Path], max_tokens: int, store: Path) -> None:
    """Every missing (model, metric) row, one export loaded beside the original at a time."""
    from vauban import load

    metrics = vauban_metrics(files, max_tokens)
    todo = {
        name: [m for m in metrics if not (store / f"vauban_{name}_{m}.json").is_file()] for name in folders
    }
    if not any(todo.values()):
        return
    base, tokenizer = load(str(folders["original"]))
    cache: dict = {}
    for name, missing in todo.items():
        if not missing:
            continue
        model = base if name == "original" else load(str(folders[name]))[0]
        for metric in missing:
            start = time.perf_counter()
            row = metrics[metric](base, model, tokenizer, cache)
            row["seconds"] = round(time.perf_counter() - start, 1)
            (store / f"vauban_{name}_{metric}.json").write_text(json.dumps(row, indent=1) + "\n")
            say(
                f"vauban yardstick, {name}, {metric}: "
                + ", ".join(
                    f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in row.items()
                    if isinstance(v, (int, float)) and k != "seconds"
                )
                + f" ({row['seconds']} s)"
            )
        del model


def parse_heretic(text: str) -> dict:
    """Refusals and KL divergence from the output of ``heretic --evaluate-model``."""
    text = ANSI.sub("", text)
    out: dict = {}
    refusals = re.findall(r"[Rr]efusals?[^0-9\n]*(\d+)\s*/\s*(\d+)", text)
    if refusals:
        out["refusals"], out["prompts"] = int(refusals[-1][0]), int(refusals[-1][1])
    kl = re.findall(r"KL divergence[^0-9\n]*([0-9]+\.[0-9]+(?:e-?[0-9]+)?)", text)
    if kl:
        out["kl"] = float(kl[-1])
    return out


def heretic_yardstick(
    heretic: Path, files: dict[str, Path], folders: dict[str, Path], name: str, work: Path, store: Path
) -> None:
    cmd = [
        str(heretic),
        "--model",
        str(folders["original"]),
        "--evaluate-model",
        str(folders[name]),
        *heretic_common(files, "report"),
    ]
    log = work / f"heretic_eval_{name}.log"
    rc, seconds = run_logged(cmd, log)
    text = log.read_text(errors="replace")
    row = {
        "rc": rc,
        "seconds": round(seconds, 1),
        **parse_heretic(text),
        "command": cmd,
        "output_tail": ANSI.sub("", text)[-1500:],
    }
    (store / f"heretic_{name}.json").write_text(json.dumps(row, indent=1) + "\n")
    say(
        f"heretic yardstick, {name}: {row.get('refusals')}/{row.get('prompts')} refusals, "
        f"KL {row.get('kl')} ({seconds:.0f} s)"
    )


def evaluate_all(
    heretic: Path,
    files: dict[str, Path],
    work: Path,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    heretic_models: tuple[str, ...] = MODELS[1:],
) -> dict:
    """Every model by both yardsticks. heretic's own yardstick is not run on the original: every
    ``--evaluate-model`` run counts the base model's refusals first ("Initial refusals"), and its
    KL against itself is 0, so the original's row comes from those runs (:func:`heretic_original`)."""
    store = work / "eval"
    store.mkdir(exist_ok=True)
    folders = model_dirs(work)
    vauban_yardstick(files, folders, max_tokens, store)
    for name in ("heretic", "vauban_default", "vauban_optimize", "original"):  # most wanted first
        if name in folders and name in heretic_models and not (store / f"heretic_{name}.json").is_file():
            heretic_yardstick(heretic, files, folders, name, work, store)
    return gather(work, store, folders)


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def rerun(folder: Path) -> dict | None:
    """A second ``vauban optimize`` run in its own work folder (``peers.py --work FOLDER --stage
    vauban --vauban-runs vauban_optimize``): its wall time against the budget, its own pick, and
    the load while it ran, and its export's rows if ``--stage evaluate`` ran there (copy the
    original's ``vauban_original_*`` rows into its ``eval/`` first so they are not measured
    again). Used to time a change to the budget's rules without redoing the rest."""
    times = read(folder / "vauban_times.json")
    if not times or "vauban_optimize" not in times:
        return None
    return {
        "work": str(folder),
        "vauban_optimize": times["vauban_optimize"],
        "optimize_pick": optimize_pick(folder / "optimize" / "pareto.json"),
        "load_average": load_average(folder / "loadavg.log"),
        "evaluated": model_rows(folder / "eval", "vauban_optimize", folder / "exports" / "vauban_optimize"),
    }


def model_rows(store: Path, name: str, folder: Path) -> dict:
    """One model's measured rows: vauban's metrics by name, and heretic's yardstick."""
    return {
        "path": str(folder),
        "vauban": {
            p.stem.removeprefix(f"vauban_{name}_"): read(p)
            for p in sorted(store.glob(f"vauban_{name}_*.json"))
        },
        "heretic": read(store / f"heretic_{name}.json"),
    }


def gather(work: Path, store: Path, folders: dict[str, Path], reruns: tuple[Path, ...] = ()) -> dict:
    if not (store / "heretic_original.json").is_file() and (row := heretic_original(work)):
        (store / "heretic_original.json").write_text(json.dumps(row, indent=1) + "\n")
    report = {
        **stamp(),
        "git_note": "the commit that gathered this file; each search and export records its own",
        "model": "demo (Qwen2.5-Coder-0.5B-Instruct, float32, CPU)",
        "prompts": {
            "harmful_report": "100 AdvBench goals, random.Random(0).sample (searched on by no tool)",
            "harmless_report": "100 instructions from benchmarks/peers_harmless.py (written for "
            "vauban), disjoint from those heretic measured and searched on",
            "reference": "the 48 bundled reference pairs (vauban's KL at every answer position)",
        },
        "searches": {
            "vauban": read(work / "vauban_times.json"),
            "heretic": read(work / "heretic_search.json"),
        },
        "optimize_pick": optimize_pick(work / "optimize" / "pareto.json"),
        "heretic_initial_refusals": initial_refusals(work / "heretic_search.log"),
        "load_average": load_average(work / "loadavg.log"),
        "optimize_reruns": [row for folder in reruns if (row := rerun(folder))],
        "frontier": read_rows(store, "frontier_*.json"),
        "variants": read_rows(store, "variant_*.json"),
        "models": {name: model_rows(store, name, folders[name]) for name in folders},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "peers_demo.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    say(f"wrote {out}")
    from readme_tables import build  # docs/benchmarks.md's table, the one rendering of these rows

    print(build("peers"))
    return report


def heretic_original(work: Path) -> dict | None:
    """The original's row on heretic's yardstick, from the "Initial refusals" that every
    ``heretic --evaluate-model`` run prints for the base model (the same count in every run, or
    none is returned); its KL against itself is 0."""
    counts = {log.name: initial_refusals(log) for log in sorted(work.glob("heretic_eval_*.log"))}
    counts = {name: count for name, count in counts.items() if count}
    if not counts or len(set(counts.values())) != 1:
        return None
    refusals, prompts = map(int, next(iter(counts.values())).split("/"))
    return {
        "refusals": refusals,
        "prompts": prompts,
        "kl": 0.0,
        "from": sorted(counts),
        "note": "the base model's 'Initial refusals' in each heretic --evaluate-model run (all equal)",
    }


def optimize_pick(path: Path) -> dict | None:
    """What ``vauban optimize`` exported, by its own numbers (read from its ``pareto.json``): the
    pick, the prompt counts it judged on, and the mean time of a search trial."""
    if not path.is_file():
        return None
    front = json.loads(path.read_text())
    pick = next(t for t in front["trials"] if t["number"] == front["best"])
    searched = [t["seconds"] for t in front["trials"] if not isinstance(t["cut"]["attention"], list)]
    return {
        **{
            k: pick[k]
            for k in ("number", "refusal", "kl", "refusal_likelihood", "selection_refusal", "seconds")
        },
        "judge": front["settings"]["judge"],
        "answer_tokens": front["settings"]["max_tokens"],
        "search_prompts": front["n_prompts"],
        "harmless_prompts": front["n_harmless"],
        "selection_prompts": front["n_selection"],
        "search_trial_seconds_mean": round(sum(searched) / len(searched), 1),
    }


def initial_refusals(log: Path) -> str | None:
    """The base model's refusals ("N/M") as heretic printed them in ``log`` (a search or an
    ``--evaluate-model`` run: heretic counts the base model first in both)."""
    if not log.is_file():
        return None
    found = re.findall(r"Initial refusals:\s*(\d+\s*/\s*\d+)", ANSI.sub("", log.read_text(errors="replace")))
    return found[-1] if found else None


def load_average(log: Path) -> dict | None:
    """The 1-minute load average sampled during the searches (``HH:MM:SS load1 load5 load15``
    lines, one a minute, when the run recorded them): how quiet the 2-core machine was."""
    if not log.is_file():
        return None
    rows = [line.split() for line in log.read_text().splitlines() if len(line.split()) == 4]
    return {
        "samples": [[r[0], float(r[1])] for r in rows],
        "note": "1-minute load average each minute (2 cores; about 2 = one job using both)",
    }
