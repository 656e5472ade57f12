"""Categories, conditions and languages on the command line (issue 28): ``measure --by-category``,
``abliterate --keep``, ``evaluate --by-category`` / ``--languages``, ``steer`` / ``chat --when``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..config import Settings
from ..core.errors import VaubanError
from .common import new_path
from .report import Report

_KEEP_EXCLUDES = ("params", "subspace", "per_layer", "direction_index", "projected")


def categories_source(args: argparse.Namespace) -> str:
    """``--categories FILE`` (prompts with a ``category`` field) or the bundled measuring set."""
    return getattr(args, "categories", None) or "measure"


def cmd_measure_categories(
    s: Settings, args: argparse.Namespace, report: Report, model: Any, tokenizer: Any
) -> None:
    """``vauban measure --by-category``: one direction per category, their similarity, a plot."""
    from .. import plots
    from ..direction.categories import measure_categories

    save = new_path(Path(args.output).with_suffix(".pt"), s.overwrite) if args.output else None
    with report.step("measure one direction per category", "measure_categories"):
        cats = measure_categories(
            model,
            tokenizer,
            categories_source(args),
            s.harmless,
            layer=s.layer,
            batch_size=s.batch_size,
            formatting=s.formatting(),
        )
    sim = cats.similarity()
    report.table(
        f"Cosine similarity of the category directions at layer {cats.layer_index}",
        ["", *cats.categories],
        [(c, *(f"{float(x):+.2f}" for x in sim[i])) for i, c in enumerate(cats.categories)],
    )
    report.put("categories", cats.record())
    if save is not None:
        path = cats.save(save)
        png = plots.plot_similarity(cats, path.with_suffix(".png"))
        report.say(f"saved to {path} (+ .json), plot {png}")
        report.put("saved", str(path))


def check_keep(args: argparse.Namespace, spec: Any = None) -> list[str]:
    """The categories of ``--keep`` (empty when not given), with the flags it excludes refused
    (``--keep-method preserving`` fits its own edit: only ``--layers`` of ``spec`` applies)."""
    keep = [k.strip() for k in (getattr(args, "keep", None) or "").split(",") if k.strip()]
    if keep and getattr(args, "keep_method", None) == "runtime":
        raise VaubanError(
            f"an exported model cannot carry the run-time keep (a probe decides per prompt); "
            f"run `vauban chat {runtime_when(keep)}` (or steer) on the original model instead"
        )
    clash = [f"--{name.replace('_', '-')}" for name in _KEEP_EXCLUDES if keep and getattr(args, name, None)]
    if keep and spec is not None and getattr(args, "keep_method", None) == "preserving":
        clash += [
            flag
            for flag, on in (
                ("--alpha", spec.alpha != 1.0),
                ("--embeddings", spec.embeddings),
                ("--attention", spec.attention is not None),
                ("--mlp", spec.mlp is not None),
                ("--norm-preserving", spec.norm_preserving),
            )
            if on
        ]
    if clash:
        raise VaubanError(f"--keep makes its own direction; drop {', '.join(clash)}")
    return keep


# --keep's probe threshold: at most this share of the other categories' example prompts matched,
# out of fold (the rule benchmarks/control_cv.py's gate stage chose in round 3; round 2 chose the
# best balanced accuracy, which plain --when not:CATEGORY keeps)
KEEP_FALSE_MATCH = 0.05


def runtime_when(keep: list[str]) -> str:
    """The ``chat`` / ``steer`` option of the run-time keep of ``keep`` (``--keep CATEGORY`` =
    ``--when not:CATEGORY --false-match`` :data:`KEEP_FALSE_MATCH`)."""
    if len(keep) > 1:
        return "--when not:FILE.jsonl (the kept categories as matched)"
    return f"--keep {keep[0]}"


def when_of(args: argparse.Namespace) -> str | None:
    """``steer`` / ``chat``'s condition: ``--when``, or ``not:CATEGORY`` for ``--keep CATEGORY``
    (whose probe threshold, unless ``--false-match``, is :data:`KEEP_FALSE_MATCH`: set on ``args``)."""
    keep = getattr(args, "keep", None)
    if keep and args.when:
        raise VaubanError("--keep CATEGORY is --when not:CATEGORY; give one of them")
    if keep and "," in keep:
        raise VaubanError("steer/chat --keep takes one category; for several, --when not:FILE.jsonl")
    if keep and args.false_match is None and args.condition_kind == "probe":
        args.false_match = KEEP_FALSE_MATCH
    return f"not:{keep}" if keep else args.when


def say_runtime_route(report: Report, keep: list[str]) -> None:
    """Say what each ``--keep`` route leaves, and the run-time route's command."""
    when = runtime_when(keep)
    report.say(
        f"note: a weight edit keeps {', '.join(keep)} only in part and leaves some refusals of the "
        f"other categories (their directions share refusal); at run time `vauban chat {when}` "
        "removes the others' more fully, per prompt (benchmarks/results/control_demo.json)"
    )


def keep_cut(
    s: Settings,
    args: argparse.Namespace,
    report: Report,
    model: Any,
    tokenizer: Any,
    direction: Any,
    keep: list[str],
    spec: Any,
) -> Any:
    """The applied cut of ``abliterate --keep``: the vector of
    :func:`vauban.direction.categories.keep_vector` cut as ``spec`` says (``orthogonal``,
    ``others``), or the edit of :func:`vauban.methods.keeping.keep_cut` (``preserving``)."""
    from ..direction.categories import KEEP_ALPHA, check_categories, keep_vector, measure_categories

    if args.keep_method == "preserving":
        return keep_preserving_cut(s, args, report, model, tokenizer, direction, keep, spec)
    with report.step(f"measure category directions to keep {', '.join(keep)}", "measure_categories"):
        cats = measure_categories(
            model,
            tokenizer,
            categories_source(args),
            s.harmless,
            layer=direction.layer_index,
            batch_size=s.batch_size,
            formatting=s.formatting(),
        )
    check_categories(keep, cats.categories)
    say_runtime_route(report, keep)
    alpha = spec.alpha if args.alpha is not None or spec.alpha != 1.0 else KEEP_ALPHA[args.keep_method]
    record = {"categories": keep, "method": args.keep_method, "alpha": alpha, "measured": cats.record()}
    report.put("keep", record)
    return dataclasses.replace(spec, alpha=alpha).apply(
        model, keep_vector(direction, cats, keep, args.keep_method)
    )


def keep_preserving_cut(
    s: Settings,
    args: argparse.Namespace,
    report: Report,
    model: Any,
    tokenizer: Any,
    direction: Any,
    keep: list[str],
    spec: Any,
) -> Any:
    """``abliterate --keep --keep-method preserving``: the whole direction, removed on the other
    categories' prompts and kept on the kept ones' (:mod:`vauban.methods.keeping`)."""
    from ..methods.keeping import keep_cut as fit_keep_cut

    say_runtime_route(report, keep)
    with report.step(f"fit the edit that keeps refusing {', '.join(keep)}", "keep_preserving"):
        applied = fit_keep_cut(
            model,
            tokenizer,
            direction,
            keep,
            categories=categories_source(args),
            harmful=s.harmful,
            harmless=s.harmless,
            formatting=s.formatting(),
            batch_size=s.batch_size,
            layers=spec.layers,
        )
    report.put("keep", {"categories": keep, "method": args.keep_method, "edit": applied.record()})
    return applied


def group_prompts(s: Settings, args: argparse.Namespace) -> list[tuple[str, dict, dict | None]]:
    """The groups ``evaluate --by-category`` / ``--languages`` ask for: (kind, harmful, harmless)."""
    from ..direction.categories import category_prompts
    from ..evaluation.groups import language_prompts

    out: list[tuple[str, dict, dict | None]] = []
    if getattr(args, "by_category", False):
        out.append(("category", category_prompts(getattr(args, "categories", None) or "eval"), None))
    if getattr(args, "languages", None) is not None:
        chosen = [x.strip() for x in args.languages.split(",") if x.strip()] or None
        out.append(("language", language_prompts(chosen), language_prompts(chosen, "harmless")))
    return out


def evaluate_by_group(
    s: Settings,
    args: argparse.Namespace,
    report: Report,
    original: Any,
    modified: Any,
    tokenizer: Any,
    judge: Any,
    formatting: Any,
) -> None:
    """Refusal (and for languages KL) per group, after ``evaluate``'s own report."""
    from ..evaluation.groups import evaluate_groups, language_judge

    for kind, harmful, harmless in group_prompts(s, args):
        use = language_judge() if kind == "language" and s.judge is None else judge
        with report.step(f"evaluate per {kind}", f"evaluate_{kind}"):
            result = evaluate_groups(
                original,
                modified,
                tokenizer,
                harmful,
                harmless,
                kind=kind,
                max_tokens=s.max_tokens,
                kl_tokens=args.kl_tokens,
                batch_size=s.batch_size,
                judge=use,
                formatting=formatting,
            )
        header, rows = result.table()
        report.table(
            f"Per {kind} (refusals judged by {result.judge}, {result.max_tokens} answer tokens)", header, rows
        )
        report.put(f"by_{kind}", result.record(answers=False))


def condition_for(
    s: Settings,
    report: Report,
    model: Any,
    tokenizer: Any,
    when: str,
    kind: str = "probe",
    false_match: float | None = None,
) -> Any:
    """The condition of ``--when`` (a bundled condition, a category or a file; ``not:`` before
    it: the prompts that do not match), fitted now: the probe (its threshold by ``false_match``
    when given), or the cosine condition."""
    from ..methods.conditional import condition_sets, measure_condition
    from ..methods.gating import fit_probe_condition

    if false_match is not None and kind != "probe":
        raise VaubanError("--false-match sets the probe's threshold; drop it or use --condition-kind probe")
    negate = when.startswith("not:")
    sets = condition_sets(when.removeprefix("not:") if negate else when)
    options: dict[str, Any] = {"batch_size": s.batch_size, "formatting": s.formatting()}
    condition: Any  # a ProbeCondition or a CosineCondition (frozen: not the settable Protocol)
    with report.step(f"fit the condition {sets.name!r} ({kind})", "condition"):
        if kind == "probe":
            condition = fit_probe_condition(model, tokenizer, sets, false_match=false_match, **options)
        else:
            condition = measure_condition(model, tokenizer, sets, **options)
    if negate:
        condition = condition.negated()
    record = condition.record()
    if kind == "probe":
        layers = record["layers"]
        span = f"layers {layers[0]}-{layers[-1]} ({len(layers)})"
        where = f"{record['pooling']} pooling, {span}, C {record['penalty']:g}"
        accuracy, how = record["cv_balanced_accuracy"], "cross-validated on its example prompts"
    else:
        where, accuracy = f"layer {record['layer']}", record["tune_balanced_accuracy"]
        how = "on held-back prompts"
    report.say(
        f"condition {condition.name!r} ({kind}): {where}, threshold {condition.threshold:+.3f}, "
        f"balanced accuracy {how} {accuracy:.0%}"
    )
    report.put("condition", record)
    return condition


def cmd_steer_when(
    s: Settings,
    args: argparse.Namespace,
    report: Report,
    model: Any,
    tokenizer: Any,
    direction: Any,
    judge: Any,
) -> None:
    """``vauban steer PROMPT --when CONDITION``: steer only if the prompt matches."""
    from ..judge import run_judge
    from ..methods.conditional import condition_scores, conditional_generate
    from ..text.reasoning import split_reasoning

    condition = condition_for(s, report, model, tokenizer, args.when, args.condition_kind, args.false_match)
    mode = "add" if args.add else "remove"
    alpha = args.alpha if args.alpha is not None else 1.0
    score = float(condition_scores(model, tokenizer, condition, [args.prompt])[0])
    (answer,), (matched,) = conditional_generate(
        model,
        tokenizer,
        [args.prompt],
        condition,
        direction,
        mode=mode,
        alpha=alpha,
        max_tokens=s.max_tokens,
        formatting=s.formatting(),
    )
    (verdict,) = run_judge(judge, [args.prompt], [split_reasoning(answer)[1]])
    action = f"{mode} refusal, alpha={alpha:g}" if matched else "not steered"
    report.say(
        f"score {score:+.3f} vs threshold {condition.threshold:+.3f}: "
        f"{'matched' if matched else 'not matched'} ({action}); {judge.spec}: "
        f"{'refusal' if verdict.refusal else 'no refusal'}"
    )
    report.say("  " + answer.replace("\n", "\n  "))
    report.put("prompt", args.prompt)
    report.put(
        "results",
        [
            {
                "matched": matched,
                "score": score,
                "mode": mode,
                "alpha": alpha,
                "text": answer,
                "refused": verdict.refusal,
            }
        ],
    )
    report.put("judge", judge.spec)
