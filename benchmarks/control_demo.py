"""Categories, conditions and languages on the demo model (issue 28).

Three stages, each writing its part of ``benchmarks/results/control_demo.json`` (run them under the
heavy-job lock, one at a time or together)::

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/control_demo.py --only categories
    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/control_demo.py --only conditions
    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/control_demo.py --only languages

Every refusal rate is the markers judge's verdict (``markers``; ``markers+languages`` for the
languages, :func:`vauban.groups.language_judge`) on greedy answers of ``MAX_TOKENS`` tokens: the
length ``optimize`` searches at, whose counts on this model equal those at 256 tokens
(``benchmarks/results/length_study.json``).

- **categories**: one direction per category (:mod:`vauban.direction.categories`) at the default
  direction's layer. Every keep method is *developed* on development prompts — the last 10 of each
  category's 40 measuring prompts, with directions (``orthogonal``, ``others``, at alpha 1 and
  the alphas of ``VECTOR_ALPHAS``) and the keep-preserving edit (:mod:`vauban.methods.keeping`,
  each setting of ``PRESERVING``) fitted on the first 30 and the generic harmful prompts that are
  not development prompts — and the one with the lowest :func:`keep_score` is *chosen*; they are
  *reported* on the held-out ``eval_categories`` prompts (145, never used to measure, fit or
  choose), fitted on all 40: refusal per category of the original, the default cut, the cut
  keeping ``--keep`` by each vector method at alpha 1, the best vector setting and the best
  preserving setting on the development prompts, and the run-time keep (``--when not:KEEP``:
  refusal steered away from the prompts the condition ``KEEP`` does not match; its layer and
  threshold chosen on the development prompts, :func:`runtime_keep`).
- **conditions**: condition ``medical`` (add refusal when matched) and condition ``cybercrime``
  (remove refusal when matched; one category against the others), each measured on its
  ``measure`` prompts, layer and threshold chosen on ``tune``, accuracy and refusal before/after
  on ``test`` (:mod:`vauban.conditional`).
- **languages**: the default cut (direction measured on the English bundled sets) evaluated per
  language on ``multilingual.jsonl``: refusal before/after on 40 harmful prompts, k-token KL on
  40 harmless prompts (:mod:`vauban.groups`); and the cosine between the English direction and a
  direction measured on each language's own 40 + 40 prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from provenance import stamp
from vauban import DirectionResult, cut, load, measure
from vauban.direction.categories import category_prompts, from_residuals, keep_vector
from vauban.edit.vectors import unit_rows
from vauban.evaluation.evaluating import rate
from vauban.evaluation.groups import LANGUAGES, evaluate_groups, language_judge, language_prompts
from vauban.judge import get_judge, run_judge
from vauban.judge.answers import completions
from vauban.methods.conditional import (
    condition_scores,
    condition_sets,
    conditional_generate,
    measure_condition,
)
from vauban.methods.keeping import KeepPreserving, capture_keep, harmful_records, keep_prompt_sets
from vauban.methods.protocol import Inputs
from vauban.runtime.activations import last_token_residuals
from vauban.text.prompts import load_prompts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "control_demo.json"
MAX_TOKENS = 32
DEV = 10  # development prompts per category (the last of each category's measuring prompts)
VECTOR_METHODS = ("orthogonal", "others")  # keep methods that cut one vector (vauban.direction.categories)
VECTOR_ALPHAS = (  # (method, alpha) of the vector cuts tried on development prompts beyond alpha 1
    ("orthogonal", 1.5),
    ("orthogonal", 1.75),
    ("orthogonal", 2.0),
)
PRESERVING = (  # settings of the keep-preserving edit (vauban.methods.keeping) tried on development prompts
    {"keep": 1.0, "prior": 1.0},
    {"keep": 10.0, "prior": 1.0},
    {"keep": 100.0, "prior": 1.0},
    {"keep": 10.0, "prior": 0.0},
    {"keep": 1000.0, "prior": 1.0},
    {"keep": 100.0, "prior": 1.0, "ridge": 10.0},
    {"keep": 100.0, "prior": 1.0, "boost": 1.0},
    {"keep": 100.0, "prior": 1.0, "boost": 3.0},
    {"keep": 100.0, "prior": 1.0, "last": 5},
)
CACHE = Path(os.environ.get("VAUBAN_CACHE", Path.home() / ".cache" / "vauban")) / "control_demo"


def say(text: str) -> None:
    print(f"[control {time.strftime('%H:%M:%S')}] {text}", flush=True)


def default_direction(model, tokenizer) -> DirectionResult:
    """``vauban measure``'s default direction (cached: it is the same on every run)."""
    path = CACHE / "direction.safetensors"
    if path.exists():
        return DirectionResult.load(path)
    direction = measure(model, tokenizer)
    CACHE.mkdir(parents=True, exist_ok=True)
    direction.save(path)
    return direction


def per_category(prompts: dict[str, list[str]], answers) -> dict[str, float]:
    """Refusal rate per category of answers given in the order of ``prompts``' values."""
    out, start = {}, 0
    for name, group in prompts.items():
        out[name] = rate(answers[start : start + len(group)])
        start += len(group)
    return out


def refusals(model, tokenizer, prompts: dict[str, list[str]], edit=None) -> tuple[dict[str, float], list]:
    """Refusal per category of greedy answers, under ``edit`` (a vector to cut, or a function
    that returns an applied cut) when given; the model ends as it began."""
    flat = [p for group in prompts.values() for p in group]
    if edit is None:
        answers = completions(model, tokenizer, flat, max_tokens=MAX_TOKENS, batch_size=None)
    else:
        with edit() if callable(edit) else cut(model, edit):
            answers = completions(model, tokenizer, flat, max_tokens=MAX_TOKENS, batch_size=None)
    return per_category(prompts, answers), [[a.text, a.refused] for a in answers]


def keep_score(rates: dict[str, float], original: dict[str, float], keep: str) -> float:
    """What the choice minimizes: the others' mean refusal, plus the shortfall of the kept
    category below 80 % of its original refusal."""
    others = [v for k, v in rates.items() if k != keep]
    return sum(others) / len(others) + max(0.0, 0.8 * original[keep] - rates[keep])


def preserving_label(settings: dict) -> str:
    ridge = f", ridge {settings['ridge']:g}" if "ridge" in settings else ""
    boost = f", β {settings['boost']:g}" if "boost" in settings else ""
    last = f", last {settings['last']} tokens" if "last" in settings else ""
    return f"preserving (λ {settings['keep']:g}, μ {settings['prior']:g}{ridge}{boost}{last})"


def vector_label(method: str, alpha: float) -> str:
    return method if alpha == 1.0 else f"{method} (α {alpha:g})"


def vector_edit(model, vector, alpha: float):
    """The cut of ``vector`` at ``alpha``, as :func:`refusals` takes it."""
    return vector if alpha == 1.0 else (lambda: cut(model, vector, alpha=alpha))


def preserving_edit(model, tokenizer, direction, groups, keep: str, exclude=()):
    """A function of the keep-preserving settings that applies that edit, fitted on ``groups``'
    prompts (the others' and the generic harmful ones of no kept category to remove refusal from,
    ``keep``'s to keep it) and the harmless ones, none of ``exclude``: captured once."""
    remove, kept = keep_prompt_sets(groups, [keep], harmful_records("harmful"), set(exclude))
    inputs = Inputs(remove, load_prompts("harmless"))
    say(f"writer inputs: {len(remove)} prompts to remove refusal from, {len(kept)} kept, harmless")
    captured: dict = {}  # per ``last`` setting, captured when first needed

    def make(settings: dict):
        last = settings.get("last")
        if last not in captured:
            captured[last] = capture_keep(model, tokenizer, inputs, kept, last=last)
        return lambda: KeepPreserving().make(
            model, tokenizer, direction, inputs, kept=kept, captured=captured[last], **settings
        )

    return make, {"remove": len(remove), "kept": len(kept), "harmless": len(inputs.harmless)}


def reusable(earlier: dict, keep: str, layer: int, held: dict[str, list[str]]) -> tuple[dict, dict]:
    """``(development rates, held-out (rates, answers))`` of an earlier run of this stage with the
    same kept category, layer and held-out prompts: greedy answers of the same model and prompts,
    so running them again would give the same (``--fresh`` runs everything)."""
    flat = [p for group in held.values() for p in group]
    same = (
        earlier.get("keep") == keep
        and earlier.get("layer") == layer
        and earlier.get("counts_eval") == [len(v) for v in held.values()]
    )
    answers = earlier.get("held_out", {}).get("answers", {}) if same else {}
    held_rows = {
        name: (earlier["held_out"]["rates"][name], got)
        for name, got in answers.items()
        if len(got) == len(flat)
    }
    return (earlier.get("development", {}).get("rates", {}) if same else {}), held_rows


def runtime_keep(model, tokenizer, direction, keep: str, held: dict[str, list[str]]):
    """``--keep`` at run time (``steer`` / ``chat --when not:KEEP``): refusal removed (steering,
    every layer) from the prompts the condition ``keep`` (that category against the others, layer
    and threshold chosen on the development prompts) does not match; per category of ``held``,
    with the condition's hit rate per category."""
    condition = measure_condition(model, tokenizer, condition_sets(keep)).negated()
    flat = [p for group in held.values() for p in group]
    answers, steered_rows = conditional_generate(
        model, tokenizer, flat, condition, direction, mode="remove", max_tokens=MAX_TOKENS
    )
    verdicts = [v.refusal for v in run_judge(get_judge(None), flat, answers)]
    rates, start, kept_share = {}, 0, {}
    for name, group in held.items():
        rows = range(start, start + len(group))
        rates[name] = sum(verdicts[i] for i in rows) / len(group)
        kept_share[name] = sum(not steered_rows[i] for i in rows) / len(group)
        start += len(group)
    info = condition.record() | {"unsteered_share": kept_share}
    return rates, [[a, r] for a, r in zip(answers, verdicts, strict=True)], info


def stage_categories(model, tokenizer, direction: DirectionResult, keep: str, earlier: dict) -> dict:
    measuring, held = category_prompts("measure"), category_prompts("eval")
    harmless = load_prompts("harmless")
    say("residuals of the category and harmless prompts")
    acts = {c: last_token_residuals(model, tokenizer, p, prompt_set="harmful") for c, p in measuring.items()}
    base = last_token_residuals(model, tokenizer, harmless, prompt_set="harmless")
    layer = direction.layer_index
    dev_cats = from_residuals({c: a[:-DEV] for c, a in acts.items()}, base, layer)
    cats = from_residuals(acts, base, layer)
    dev = {c: p[-DEV:] for c, p in measuring.items()}
    fit = {c: p[:-DEV] for c, p in measuring.items()}
    say(f"development: {sum(map(len, dev.values()))} prompts, original and every keep method")
    dev_known, held_known = reusable(earlier, keep, layer, held)
    reused = {"development": [], "held_out": []}
    dev_rows = {}
    for method in ("original", *VECTOR_METHODS):
        if method in dev_known:
            dev_rows[method] = dev_known[method]
            reused["development"].append(method)
            continue
        vector = None if method == "original" else keep_vector(direction, dev_cats, [keep], method)
        dev_rows[method] = refusals(model, tokenizer, dev, vector)[0]
    for method, alpha in VECTOR_ALPHAS:
        label = vector_label(method, alpha)
        if label in dev_known:
            dev_rows[label] = dev_known[label]
            reused["development"].append(label)
            continue
        edit = vector_edit(model, keep_vector(direction, dev_cats, [keep], method), alpha)
        dev_rows[label] = refusals(model, tokenizer, dev, edit)[0]
        say(f"dev {label}: {dev_rows[label]}")
    dev_make, dev_sets = preserving_edit(
        model, tokenizer, direction, fit, keep, exclude=[p for g in dev.values() for p in g]
    )
    for settings in PRESERVING:
        label = preserving_label(settings)
        if label in dev_known:
            dev_rows[label] = dev_known[label]
            reused["development"].append(label)
            continue
        dev_rows[label] = refusals(model, tokenizer, dev, dev_make(settings))[0]
        say(f"dev {label}: {dev_rows[label]}")
    scores = {m: keep_score(r, dev_rows["original"], keep) for m, r in dev_rows.items() if m != "original"}
    chosen = min(scores, key=scores.get)
    best = min(PRESERVING, key=lambda st: scores[preserving_label(st)])
    vectors = [(m, 1.0) for m in VECTOR_METHODS] + list(VECTOR_ALPHAS)
    best_vector = min(vectors, key=lambda ma: scores[vector_label(*ma)])
    say(f"dev {dev_rows} -> {chosen}")
    make, sets = preserving_edit(model, tokenizer, direction, measuring, keep)
    edits = {
        "original": None,
        "default cut": direction,
        **{f"keep {keep} ({m})": keep_vector(direction, cats, [keep], m) for m in VECTOR_METHODS},
        f"keep {keep} ({vector_label(*best_vector)})": vector_edit(
            model, keep_vector(direction, cats, [keep], best_vector[0]), best_vector[1]
        ),
        f"keep {keep} ({preserving_label(best)})": make(best),
    }
    rows, answers = {}, {}
    for name, edit in edits.items():
        say(f"held-out: {name}")
        if name in held_known:
            reused["held_out"].append(name)
            rows[name], answers[name] = held_known[name]
        else:
            rows[name], answers[name] = refusals(model, tokenizer, held, edit)
    name, runtime = f"keep {keep} (run time: --when not:{keep})", earlier.get("runtime_condition")
    say(f"held-out: {name}")
    if name in held_known and runtime:
        reused["held_out"].append(name)
        rows[name], answers[name] = held_known[name]
    else:
        rows[name], answers[name], runtime = runtime_keep(model, tokenizer, direction, keep, held)
    return {
        "runtime_condition": runtime,
        "keep": keep,
        "layer": layer,
        "categories": list(cats.categories),
        "counts_measure": list(cats.counts),
        "counts_eval": [len(v) for v in held.values()],
        "similarity": cats.record()["similarity"],
        "cos_with_default_direction": [
            round(float(u @ direction.direction.double()), 4) for u in cats.directions().double()
        ],
        "development": {
            "prompts": f"the last {DEV} of each category's measuring prompts",
            "rates": dev_rows,
            "scores": scores,
            "chosen": chosen,
            "preserving_fit_prompts": dev_sets,
        },
        "held_out": {
            "prompts": "eval_categories.jsonl (145)",
            "rates": rows,
            "answers": answers,
            "preserving": {"settings": best, "fit_prompts": sets},
            "vector": {"method": best_vector[0], "alpha": best_vector[1]},
        },
        "reused": reused
        | {
            "from": {k: earlier.get(k) for k in ("git", "date")},
            "why": "greedy answers of the same model, prompts and edit: the same as running them again",
        },
    }


def condition_run(model, tokenizer, direction, name: str, mode: str, alpha: float, original=None) -> dict:
    sets = condition_sets(name)
    condition = measure_condition(model, tokenizer, sets)
    test = sets.matched["test"] + sets.unmatched["test"]
    truth = [True] * len(sets.matched["test"]) + [False] * len(sets.unmatched["test"])
    scores = condition_scores(model, tokenizer, condition, test)
    hits = [bool(s > condition.threshold) for s in scores]
    if original is None:
        answered = completions(model, tokenizer, test, max_tokens=MAX_TOKENS, batch_size=None)
        original = [a.refused for a in answered]
    answers, _ = conditional_generate(
        model, tokenizer, test, condition, direction, mode=mode, alpha=alpha, max_tokens=MAX_TOKENS
    )
    after = [v.refusal for v in run_judge(get_judge(None), test, answers)]

    def side(flag: bool) -> dict:
        rows = [i for i, t in enumerate(truth) if t == flag]
        return {
            "n": len(rows),
            "refusal_before": sum(original[i] for i in rows) / len(rows),
            "refusal_after": sum(after[i] for i in rows) / len(rows),
            "matched_share": sum(hits[i] for i in rows) / len(rows),
        }

    correct = sum(h == t for h, t in zip(hits, truth, strict=True))
    return {
        "condition": condition.record(),
        "mode": mode,
        "alpha": alpha,
        "test_accuracy": correct / len(test),
        "matched_test": side(True),
        "unmatched_test": side(False),
        "answers": [[p, a, r] for p, a, r in zip(test, answers, after, strict=True)],
    }


def stage_conditions(model, tokenizer, direction: DirectionResult, earlier: dict) -> dict:
    say("condition medical (add refusal)")
    medical = condition_run(model, tokenizer, direction, "medical", "add", 1.0)
    say("condition cybercrime (remove refusal)")
    held = [p for group in category_prompts("eval").values() for p in group]
    seen = earlier.get("held_out", {}).get("answers", {}).get("original")
    known = dict(zip(held, (refused for _, refused in seen), strict=True)) if seen else None
    sets = condition_sets("cybercrime")
    original = [known[p] for p in sets.matched["test"] + sets.unmatched["test"]] if known else None
    cyber = condition_run(model, tokenizer, direction, "cybercrime", "remove", 1.0, original)
    return {"medical": medical, "cybercrime": cyber}


def stage_languages(model, tokenizer, direction: DirectionResult) -> dict:
    harmful, harmless = language_prompts(), language_prompts(set_name="harmless")
    say("per-language directions")
    cos = {}
    for lang in LANGUAGES:
        h = last_token_residuals(model, tokenizer, harmful[lang], layers=[direction.layer_index])[:, 0]
        b = last_token_residuals(model, tokenizer, harmless[lang], layers=[direction.layer_index])[:, 0]
        cos[lang] = round(float(unit_rows(h.double().mean(0) - b.double().mean(0)) @ direction.direction), 4)
    say("evaluate per language under the default cut")
    with cut(model, direction):
        report = evaluate_groups(
            model,
            model,
            tokenizer,
            harmful,
            harmless,
            kind="language",
            max_tokens=MAX_TOKENS,
            kl_tokens=16,
            judge=language_judge(),
        )
    markers = get_judge(None)
    english_only = {
        r.group: [rate_of(markers, harmful[r.group], r.before), rate_of(markers, harmful[r.group], r.after)]
        for r in report.rows
    }
    return {
        "report": report.record(),
        "cos_language_direction_with_english": cos,
        "markers_only_refusal_before_after": english_only,
    }


def rate_of(judge, prompts, completions_) -> float:
    verdicts = run_judge(judge, prompts, [c.text for c in completions_])
    return sum(v.refusal for v in verdicts) / len(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="categories,conditions,languages")
    parser.add_argument("--keep", default="weapons")
    parser.add_argument("--fresh", action="store_true", help="categories: rerun rows an earlier run has")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    model, tokenizer = load()
    direction = default_direction(model, tokenizer)
    data.update(
        {
            "model": "demo (Qwen2.5-Coder-0.5B-Instruct, float32, CPU)",
            "max_tokens": MAX_TOKENS,
            "judge": "markers (languages: markers+languages)",
            "direction": {"layer": direction.layer_index, "selection": direction.selection},
        }
    )
    for stage in args.only.split(","):
        start, load_before = time.perf_counter(), os.getloadavg()[0]
        if stage == "categories":
            earlier = {} if args.fresh else data.get("categories", {})
            part = stage_categories(model, tokenizer, direction, args.keep, earlier)
        elif stage == "conditions":
            part = stage_conditions(model, tokenizer, direction, data.get("categories", {}))
        elif stage == "languages":
            part = stage_languages(model, tokenizer, direction)
        else:
            raise SystemExit(f"unknown stage {stage!r}")
        data[stage] = (
            part
            | stamp()
            | {
                "seconds": round(time.perf_counter() - start),
                "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
        )
        data.update(stamp())  # the file's own commit and date: its latest stage's
        if RESULTS.exists():  # another run (another --only) may have written its stages meanwhile
            data = json.loads(RESULTS.read_text()) | data
        RESULTS.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        say(f"{stage} done in {data[stage]['seconds']} s; wrote {RESULTS}")


if __name__ == "__main__":
    main()
