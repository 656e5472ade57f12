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
  direction's layer. The keep settings are *chosen* by ``control_cv.py`` (cross-validation over all
  60 measuring prompts of each category, its selection rule written there before this stage ran on
  the current prompts) and *reported* here on the held-out ``eval_categories`` prompts (145, never
  used to measure, fit or choose), fitted on every measuring prompt: refusal per category of the
  original, the default cut, the chosen weight edit and the chosen run-time keep (``--when
  not:KEEP``: refusal steered away from the prompts the condition ``KEEP`` does not match,
  :func:`runtime_keep`), with its agreement with the ideal (the original's answers on the kept
  category, the default cut's elsewhere: :func:`ideal_agreement`).
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
from tables_common import wilson
from vauban import DirectionResult, cut, load, measure
from vauban.direction.categories import CATEGORY_SETS, category_prompts, from_residuals, keep_vector
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
from vauban.methods.gating import (
    ProbeCondition,
    fit_probe_condition,
    fitted_probe,
    out_of_fold,
    pick_setting,
)
from vauban.methods.keeping import KeepPreserving, capture_keep, harmful_records, keep_prompt_sets
from vauban.methods.protocol import Inputs
from vauban.runtime.activations import POOLINGS, last_token_residuals
from vauban.text.prompts import load_prompts
from vauban.text.reasoning import resolved

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "control_demo.json"
MAX_TOKENS = 32
DEV = 10  # keep_study.py's development prompts per category (control_cv.py cross-validates instead)
CV_RESULTS = HERE / "results" / "control_cv.json"  # the keep defaults' cross-validated choice
GATE_RULES = {  # the probe's threshold rules (``--false-match``) control_cv.py cross-validates
    "balanced": None,  # the best balanced accuracy (the earlier rule, 51aa8b4)
    "false match 5 %": 0.05,
    "false match 3 %": 0.03,
    "false match 2 %": 0.02,
    "false match 1 %": 0.01,
    "false match 0 %": 0.0,
}
RUNTIME_CANDIDATES = ("probe", "cosine")  # conditions of run-time keep (--when not:KEEP)
WEIGHT_CANDIDATES = (  # (method, setting, strength): orthogonal alpha; preserving λ at a strength
    ("orthogonal", 2.0, 1.0),  # the two best of keep_study.py / the earlier development split; CPU time
    ("preserving", 100.0, 1.0),  # allowed no more (each costs 360 answers under 5 fitted edits)
    ("preserving", 100.0, 1.5),  # past full strength (issue 25's preserving probe), added in round 2
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


def intervals(rates: dict[str, float], held: dict[str, list[str]]) -> dict[str, tuple[float, float]]:
    """Wilson 95 % intervals of each category's refusal rate on ``held``'s prompts."""
    return {c: wilson(round(r * len(held[c])), len(held[c])) for c, r in rates.items()}


def weight_label(method: str, setting: float, strength: float = 1.0) -> str:
    if method == "orthogonal":
        return f"orthogonal (α {setting:g})"
    return f"preserving (λ {setting:g}, μ 1" + (f", strength {strength:g})" if strength != 1.0 else ")")


def keep_score(rates: dict[str, float], original: dict[str, float], keep: str) -> float:
    """What the choice minimizes: the others' mean refusal, plus the shortfall of the kept
    category below 80 % of its original refusal."""
    others = [v for k, v in rates.items() if k != keep]
    return sum(others) / len(others) + max(0.0, 0.8 * original[keep] - rates[keep])


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


def reusable(earlier: dict, keep: str, held: dict[str, list[str]], measured: list[int]) -> dict:
    """Held-out ``(rates, answers)`` of an earlier run of this stage: rows that do not depend on
    the measuring prompts (``original``, ``default cut``) when the held-out prompts are the same,
    every row when the kept category and the measuring prompts are the same too (greedy answers of
    the same model, prompts and edit: running them again would give the same; ``--fresh`` runs
    everything)."""
    flat = [p for group in held.values() for p in group]
    if earlier.get("counts_eval") != [len(v) for v in held.values()]:
        return {}
    every = earlier.get("keep") == keep and earlier.get("counts_measure") == measured
    answers = earlier.get("held_out", {}).get("answers", {})
    return {
        name: (earlier["held_out"]["rates"][name], got)
        for name, got in answers.items()
        if len(got) == len(flat) and (every or name in ("original", "default cut"))
    }


def probe_from_saved(keep: str, saved: dict, false_match, tokenizer) -> ProbeCondition:
    """What :func:`fit_probe_condition` fits on ``condition_sets(keep)``, from a saved capture of
    the measuring prompts' residuals (``saved``: per pooling, with ``prompts`` and the ``setting``
    the earlier fit's cross-validation chose — it does not depend on the threshold rule), in the
    row order that fit reads (its folds)."""
    sets = condition_sets(keep)
    matched = sets.matched["measure"] + sets.matched["tune"]
    unmatched = sets.unmatched["measure"] + sets.unmatched["tune"]
    at = {p: i for i, p in enumerate(saved["prompts"])}
    index = [at[p] for p in matched + unmatched]
    y = torch.tensor([True] * len(matched) + [False] * len(unmatched))
    setting = saved["setting"]
    layers = tuple(setting["layers"])
    features = {p: saved[p][index].float() for p in POOLINGS}
    logits = out_of_fold(features[setting["pooling"]][:, list(layers)], y, setting["penalty"])
    choice = pick_setting(
        {(setting["pooling"], "chosen", setting["penalty"]): (layers, logits)}, y, false_match
    )
    return fitted_probe(keep, features, y, choice, resolved(None, tokenizer), false_match)


def runtime_keep(
    model,
    tokenizer,
    direction,
    keep: str,
    held: dict[str, list[str]],
    kind: str,
    false_match=None,
    saved: dict | None = None,
):
    """``--keep`` at run time (``steer`` / ``chat --when not:KEEP [--false-match F]``): refusal
    removed (steering, every layer) from the prompts the condition ``keep`` (that category against
    the others; the ``probe`` or the ``cosine`` condition, fitted on the measuring prompts) does not
    match; per category of ``held``, with the share of each category left unsteered."""
    if kind == "probe" and saved is not None:
        condition = probe_from_saved(keep, saved, false_match, tokenizer)
    elif kind == "probe":
        condition = fit_probe_condition(model, tokenizer, condition_sets(keep), false_match=false_match)
    else:
        condition = measure_condition(model, tokenizer, condition_sets(keep))
    condition = condition.negated()
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


def runtime_name(keep: str, false_match: float | None) -> str:
    """The held-out row of the run-time keep by the probe at threshold rule ``false_match``."""
    if false_match is None:
        return f"keep {keep} (run time, probe: --when not:{keep})"
    return f"keep {keep} (run time, probe: --when not:{keep} --false-match {false_match:g})"


def ideal_agreement(held: dict[str, list[str]], keep: str, answers: dict, name: str) -> dict:
    """How close run-time keep ``name`` is to its ideal — the original's answers on the kept
    category, the default cut's on the others: the share of prompts with the same verdict, and
    of kept prompts with the very same answer."""
    labels = [c for c, group in held.items() for _ in group]
    ideal = [answers["original"][i] if c == keep else answers["default cut"][i] for i, c in enumerate(labels)]
    got = answers[name]
    kept = [i for i, c in enumerate(labels) if c == keep]
    return {
        "same_verdict": sum(g[1] == w[1] for g, w in zip(got, ideal, strict=True)) / len(got),
        "kept_same_answer": sum(got[i][0] == ideal[i][0] for i in kept) / len(kept),
    }


def chosen_edit(model, tokenizer, direction, cats, measuring, keep: str, cv: dict) -> dict:
    """The weight edit ``control_cv.py``'s rule chose, fitted on every measuring prompt, by name."""
    label = cv["weights"]["chosen"]
    (method, setting, strength), *_ = [c for c in WEIGHT_CANDIDATES if weight_label(*c) == label]
    name = f"keep {keep} ({label})"
    if method == "orthogonal":
        vector = keep_vector(direction, cats, [keep], "orthogonal")
        return {name: lambda: cut(model, vector, alpha=setting)}
    make, _ = preserving_edit(model, tokenizer, direction, measuring, keep)
    return {name: make({"keep": setting, "prior": 1.0, "strength": strength})}


HELD = {k: f"{v}.jsonl" for k, v in CATEGORY_SETS.items() if k != "measure"}  # --held: the reporting set


def stage_categories(
    model,
    tokenizer,
    direction: DirectionResult,
    keep: str,
    earlier: dict,
    features: Path | None = None,
    held_set: str = "test",
) -> dict:
    measuring, held = category_prompts("measure"), category_prompts(held_set)
    if earlier.get("held_out", {}).get("prompts", "eval_categories.jsonl").split()[0] != HELD[held_set]:
        earlier = {}  # another held-out set: nothing of the earlier run applies
    cv = json.loads(CV_RESULTS.read_text())
    if cv.get("keep") != keep or "chosen" not in cv.get("weights", {}) or "chosen" not in cv.get("gate", {}):
        raise SystemExit(f"run control_cv.py --keep {keep} first: its choices are what is reported")
    layer, counts = direction.layer_index, [len(p) for p in measuring.values()]
    known = reusable(earlier, keep, held, counts)
    edits = {"original": None, "default cut": direction}
    if f"keep {keep} ({cv['weights']['chosen']})" in known and "similarity" in earlier:
        described = {k: earlier[k] for k in ("categories", "similarity", "cos_with_default_direction")}
    else:  # the category directions: their record, and the weight edit when it must be fitted
        say("residuals of the category and harmless prompts")
        acts = {
            c: last_token_residuals(model, tokenizer, p, prompt_set="harmful") for c, p in measuring.items()
        }
        base = last_token_residuals(model, tokenizer, load_prompts("harmless"), prompt_set="harmless")
        cats = from_residuals(acts, base, layer)
        edits |= chosen_edit(model, tokenizer, direction, cats, measuring, keep, cv)
        described = {
            "categories": list(cats.categories),
            "similarity": cats.record()["similarity"],
            "cos_with_default_direction": [
                round(float(u @ direction.direction.double()), 4) for u in cats.directions().double()
            ],
        }
    rows, answers, reused = {}, {}, []
    for name, edit in edits.items():
        say(f"held-out: {name}")
        if name in known:
            reused.append(name)
            rows[name], answers[name] = known[name]
        else:
            rows[name], answers[name] = refusals(model, tokenizer, held, edit)
    runtime = dict(earlier.get("runtime_conditions", {}))
    if "probe" in runtime:  # recorded by kind before the threshold rules: the balanced rule's row
        runtime[runtime_name(keep, None)] = runtime.pop("probe")
    for name in [n for n in known if n not in rows]:  # earlier rules' run-time rows: scored once
        reused.append(name)
        rows[name], answers[name] = known[name]
    false_match = GATE_RULES[cv["gate"]["chosen"]]  # the chosen rule only: held-out read once a rule
    saved = None
    if features is not None:  # the earlier (balanced) fit's setting, from its record
        earlier_probe = runtime[runtime_name(keep, None)]
        setting = {k: earlier_probe[k] for k in ("pooling", "layers", "penalty")}
        saved = torch.load(features) | {"setting": setting, "path": features.name}
    name = runtime_name(keep, false_match)
    if name not in rows:
        say(f"held-out: {name}")
        rows[name], answers[name], runtime[name] = runtime_keep(
            model, tokenizer, direction, keep, held, "probe", false_match, saved
        )
        if saved is not None:
            runtime[name]["fitted_from"] = (
                f"saved capture {saved['path']} of the measuring prompts' residuals; the setting "
                "(pooling, layers, penalty) the balanced rule's fit chose on them (the choice does "
                "not depend on the threshold rule)"
            )
        runtime[name] |= ideal_agreement(held, keep, answers, name)
    return {
        "runtime_conditions": runtime,
        "keep": keep,
        "layer": layer,
        "counts_measure": counts,
        "counts_eval": [len(v) for v in held.values()],
        **described,
        "chosen": {
            "weights": f"keep {keep} ({cv['weights']['chosen']})",
            "runtime": name,
            "by": f"control_cv.json: weights: {cv['rule']}; run time: {cv['gate']['rule']}",
        },
        "held_out": {
            "prompts": f"{HELD[held_set]} ({sum(len(v) for v in held.values())})",
            "rates": rows,
            "wilson95": {row: intervals(rates, held) for row, rates in rows.items()},
            "answers": answers,
        },
        "reused": {"held_out": reused, "from": {k: earlier.get(k) for k in ("git", "date")}},
    }


def archive(data: dict, part: dict) -> None:
    """Keep an earlier categories run on other held-out or measuring prompts in
    ``earlier_categories`` (its rates and intervals) before ``part`` replaces it."""
    old = data.get("categories")
    if not old:
        return
    held = old.get("held_out", {})
    same_measure = old.get("counts_measure") == part["counts_measure"]
    if held.get("prompts") == part["held_out"]["prompts"] and same_measure:
        return
    keys = ("keep", "counts_measure", "counts_eval", "chosen", "git", "date")
    kept = {k: held.get(k) for k in ("prompts", "rates", "wilson95")}
    data.setdefault("earlier_categories", []).append({k: old.get(k) for k in keys} | {"held_out": kept})


def condition_run(
    model, tokenizer, direction, name: str, mode: str, alpha: float, original=None, kind: str = "probe"
) -> dict:
    """Condition ``name`` (the ``probe``, ``--when``'s default, or the ``cosine`` one) fitted on
    its measure and tune prompts: its accuracy on its test prompts, and refusal before and after
    steering (``mode``) on the matched and unmatched ones."""
    sets = condition_sets(name)
    fit = fit_probe_condition if kind == "probe" else measure_condition
    condition = fit(model, tokenizer, sets)
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


def stage_conditions(
    model, tokenizer, direction: DirectionResult, earlier: dict, before: dict, which=("medical", "cybercrime")
) -> dict:
    """Conditions ``medical`` (add refusal) and ``cybercrime`` (remove it) by the probe; an earlier
    run's cosine rows (``before``) are kept beside them."""
    out = {
        f"{k} (cosine)" if k in ("medical", "cybercrime") else k: v
        for k, v in before.items()
        if isinstance(v, dict) and "mode" in v  # an earlier run's rows (cosine: they name a layer)
    }
    if "medical" in which:
        say("condition medical (add refusal), probe")
        out["medical (probe)"] = condition_run(model, tokenizer, direction, "medical", "add", 1.0)
    if "cybercrime" not in which:
        return out
    say("condition cybercrime (remove refusal), probe")
    held = [p for group in category_prompts("eval").values() for p in group]
    on_eval = earlier.get("held_out", {}).get("prompts", "").startswith("eval_categories")
    seen = earlier.get("held_out", {}).get("answers", {}).get("original") if on_eval else None
    known = dict(zip(held, (refused for _, refused in seen), strict=True)) if seen else None
    sets = condition_sets("cybercrime")
    original = [known[p] for p in sets.matched["test"] + sets.unmatched["test"]] if known else None
    out["cybercrime (probe)"] = condition_run(
        model, tokenizer, direction, "cybercrime", "remove", 1.0, original
    )
    return out


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
    parser.add_argument(
        "--held",
        choices=sorted(HELD),
        default="test",
        help="categories: the held-out prompts to report on (test: read once per round; eval: the "
        "rounds 1-2 held-out set)",
    )
    parser.add_argument("--conditions", default="medical,cybercrime", help="conditions: which to fit")
    parser.add_argument(
        "--features",
        type=Path,
        help="categories: fit the run-time probe from a saved capture of the measuring prompts' "
        "residuals ({last, mean, prompts}) instead of capturing them",
    )
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
            part = stage_categories(model, tokenizer, direction, args.keep, earlier, args.features, args.held)
            archive(data, part)
        elif stage == "conditions":
            part = stage_conditions(
                model,
                tokenizer,
                direction,
                data.get("categories", {}),
                data.get("conditions", {}),
                args.conditions.split(","),
            )
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
