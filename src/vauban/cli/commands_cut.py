"""Cutting and exporting: ``vauban abliterate`` (in memory), ``vauban stream`` (streamed from disk),
``vauban optimize`` (search the cut's parameters) and ``vauban verify`` (check an export)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..core.errors import VaubanError
from .commands_control import check_keep, keep_cut
from .common import (
    attach_engine,
    direction_for,
    explain_writers,
    export_summary,
    format_options,
    judge_for,
    load,
    run_formatting,
)
from .report import Report

if TYPE_CHECKING:
    from ..judge import Judge
    from ..methods.cutspec import CutSpec
    from ..search.settings import OptimizeSettings


def cmd_abliterate(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from ..exports.exporting import check_output_dir, cut_record, export
    from ..methods.cutspec import cut_spec

    out = check_output_dir(s.output_dir, s.overwrite)
    spec = cut_spec(args, alpha=s.alpha, embeddings=s.embeddings)  # flag mistakes before the load
    keep = check_keep(args, spec)
    check_method(args, spec, keep)
    model, tokenizer = load(s, report, trust=args.trust_remote_code)
    if args.explain:
        explain_writers(report, model)
    direction = direction_for(s, report, model, tokenizer, args)
    chosen = None
    if keep:
        applied = keep_cut(s, args, report, model, tokenizer, direction, keep, spec)
    elif args.method == "auto":
        applied, chosen = auto_cut(s, report, model, tokenizer, direction)
    elif args.method != "plain":
        applied = fitted_cut(s, args, report, model, tokenizer, direction)
    else:
        vector = spec.vector(
            model,
            tokenizer,
            direction,
            harmful=s.harmful,
            harmless=s.harmless,
            formatting=run_formatting(s, direction),
            batch_size=s.batch_size,
        )
        applied = spec.apply(model, vector)
    with applied:
        record = cut_record(s.model or direction.model_path, applied, direction)
        record |= {"cut": applied.record(), "cut_spec": spec.record()}
        if keep:
            record["keep"] = {"categories": keep, "method": args.keep_method}
        if chosen is not None:
            record["method"] = {"auto": chosen}
        elif args.method != "plain":
            record["method"] = {args.method: method_options(args)}
        with report.step(f"export to {out}/", "export"):
            export(
                model,
                tokenizer,
                out,
                direction=direction,
                record=record,
                overwrite=s.overwrite,
                **format_options(s),
            )
    alpha = getattr(applied, "alpha", spec.alpha) if keep else spec.alpha  # --keep's cut may choose its own
    report.say(f"Cut alpha={alpha:g} from {len(applied.edited)} tensors; exported to {out}/ ({s.format})")
    export_summary(report, out)
    report.put("cut", spec.record())
    report.put("output_dir", str(out))
    report.put("alpha", s.alpha)
    report.put("edited_tensors", len(applied.edited))


def check_method(args: argparse.Namespace, spec: CutSpec, keep: list[str] | None) -> None:
    """``--method`` other than plain makes the whole cut: no cut flag and no ``--keep`` beside it;
    ``--method-option`` only with a fitted method, each ``KEY=NUMBER``."""
    from ..methods.cutspec import CutSpec

    options = method_options(args)  # its one-line errors first
    if args.method == "plain":
        if options:
            raise VaubanError("--method-option sets a fitted --method's settings; add --method NAME")
        return
    if args.method == "auto" and options:
        raise VaubanError("--method auto chooses its settings; drop --method-option")
    foreign = sorted(set(options) - set(METHOD_OPTIONS.get(args.method, ())))
    if foreign:
        takes = ", ".join(METHOD_OPTIONS[args.method])
        raise VaubanError(f"--method {args.method} takes no {', '.join(foreign)}; its options: {takes}")
    if keep or spec != CutSpec(alpha=1.0):
        raise VaubanError(
            f"--method {args.method} makes the whole cut (layer, edit method, settings); drop the other "
            "cut flags (--alpha, --layers, --keep, --params, ...) or leave out --method"
        )


def method_options(args: argparse.Namespace) -> dict[str, float]:
    """``--method-option KEY=VALUE`` as numbers (those of :data:`INTEGER_OPTIONS` as integers)."""
    out: dict[str, float] = {}
    for item in getattr(args, "method_option", None) or []:
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        known = dict.fromkeys(k for keys in METHOD_OPTIONS.values() for k in keys)
        if not sep or not key or math.isnan(number) or key not in known:
            keys = ", ".join(known)
            raise VaubanError(f"--method-option {item!r}: give KEY=NUMBER with KEY one of {keys}")
        out[key] = int(number) if key in INTEGER_OPTIONS else number
    return out


_PRESERVING, _LEARNING = ("keep", "strength", "ridge", "prior", "rows"), ("steps", "lr", "prompts")
INTEGER_OPTIONS = ("rows", "steps", "prompts", "subspace")  # counts: given as integers to the method
METHOD_OPTIONS = {  # the settings each fitted --method takes
    "harmless_preserving": (*_PRESERVING, "subspace"),
    "learned": _LEARNING,
    "learned_preserving": _PRESERVING + _LEARNING,
}


def fitted_cut(
    s: Settings, args: argparse.Namespace, report: Report, model: Any, tokenizer: Any, direction: Any
) -> Any:
    """``--method NAME``: the edit method ``NAME`` fitted on the run's harmful and harmless prompts
    (:mod:`vauban.methods`) with ``--method-option`` settings, applied."""
    from ..methods.protocol import Inputs
    from ..methods.registry import get_method
    from ..text.prompts import load_prompts

    harmful, harmless = load_prompts(s.harmful or "harmful"), load_prompts(s.harmless or "harmless")
    inputs = Inputs(harmful, harmless, run_formatting(s, direction), s.batch_size)
    with report.step(f"fit the {args.method} edit", "fit"):
        return get_method(args.method).make(model, tokenizer, direction, inputs, **method_options(args))


def auto_cut(
    s: Settings, report: Report, model: Any, tokenizer: Any, direction: Any
) -> tuple[Any, dict[str, Any]]:
    """The cut ``--method auto`` chooses (:func:`vauban.methods.choosing.default_cut`), applied, and
    its candidate as a record (``None`` for the scores of a direction with no effects to score)."""
    from ..methods.choosing import default_cut
    from ..text.prompts import load_prompts

    harmful, harmless = load_prompts(s.harmful or "harmful"), load_prompts(s.harmless or "harmless")
    with report.step("choose the cut by damage at a refusal level (held-back prompts)", "choose"):
        applied, candidate = default_cut(model, tokenizer, direction, harmful, harmless)
    chosen = {
        k: None if isinstance(v, float) and math.isnan(v) else v
        for k, v in dataclasses.asdict(candidate).items()
    }
    if chosen["refusal"] is None:
        report.say("Chose the plain cut: the direction has no measured effects to score candidates on")
    else:
        report.say(
            f"Chose {candidate.name}: refusal score {candidate.refusal:.4f}, first-token KL "
            f"{candidate.kl:.4f} on the held-back prompts"
        )
    report.put("chosen", chosen)
    return applied, chosen


def cmd_stream(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from ..exports.streaming import stream_export

    direction = args.saved_direction if s.layer is None else args.saved_direction.at_layer(s.layer)
    with report.step(f"abliterate {args.src} into {args.dst}/, one tensor at a time", "stream"):
        out = stream_export(
            args.src,
            args.dst,
            direction,
            alpha=s.alpha,
            layers=args.layers,
            embeddings=s.embeddings,
            overwrite=s.overwrite,
        )
    edited = json.loads((out / "vauban.json").read_text())["edited_tensors"]
    report.say(f"Cut alpha={s.alpha:g} from {edited} tensors; wrote {out}/")
    report.put("output_dir", str(out))
    report.put("alpha", s.alpha)
    report.put("edited_tensors", edited)


def cmd_optimize(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from .. import plots
    from ..exports.exporting import check_output_dir
    from ..search.optimizing import export_trial, optimize

    folder = Path(args.output)
    from ..search.studies import describe

    study = args.study or str(folder / "study.db")
    shown = describe(study)  # a URL's password hidden
    if args.export_trial is not None and not args.export:
        raise VaubanError("--export-trial needs --export DIR (where to write that trial's model)")
    if args.export:
        check_output_dir(args.export, s.overwrite)
    model, tokenizer = load(s, report, trust=args.trust_remote_code)
    attach_engine(s, args, model, report)
    judge = judge_for(s, report)
    direction = direction_for(s, report, model, tokenizer, args)
    log = None if s.quiet or report.as_json else (lambda line: report.err.print(line, markup=False))
    with report.step(f"optimize ({args.trials} trials, study {shown})", "optimize"):
        result = optimize(model, tokenizer, direction, _optimize_settings(s, args, study, judge), log=log)
    if not result.finished_here:
        report.say(
            f"{len(result.trials)} trials in the study {shown}; the worker that finished its last "
            "trial refines, checks and exports (with --export)"
        )
        report.put("trials", result.record()["trials"])
        report.put("finished_here", False)
        return
    report.table(
        f"Pareto front ({len(result.trials)} trials; refusal on {result.n_prompts} validation "
        f"prompts, first-token KL on {result.n_harmless} harmless prompts; * = the pick, "
        f"checked on {result.n_selection} selection prompts)",
        *result.rows(),
    )
    report.say(result.summary())
    files = {"json": result.save_json(folder / "pareto.json"), "png": folder / "pareto.png"}
    plots.plot_pareto(result, files["png"])
    report.say(f"study: {shown}  front: {files['json']}  plot: {files['png']}")
    record = result.record()
    report.put("trials", record["trials"])
    report.put("pareto", record["pareto"])
    report.put("best", result.best.record())
    report.put("seconds_per_trial", result.seconds_per_trial)
    report.put("files", {k: str(v) for k, v in files.items()} | {"study": shown})
    if args.export:
        number = result.best.number if args.export_trial is None else args.export_trial
        export_trial(
            model,
            tokenizer,
            direction,
            result,
            number,
            args.export,
            source=s.model or direction.model_path,
            overwrite=s.overwrite,
            **format_options(s),
        )
        report.say(f"Exported trial {number} to {args.export}/")
        report.put("output_dir", str(args.export))
        report.put("exported_trial", number)


def _optimize_settings(s: Settings, args: argparse.Namespace, study: str, judge: Judge) -> OptimizeSettings:
    """The search's options from the command line and the settings (validated when made)."""
    from ..search.settings import OptimizeSettings

    flags = {"search": None, "on": True, "off": False}
    return OptimizeSettings(
        n_trials=args.trials,
        seed=args.seed,
        study=study,
        projected=flags[args.projected],
        norm_preserving=flags[args.norm_preserving],
        prompts=args.validation,
        harmless=s.harmless,
        selection=args.selection,
        check=args.check,
        refine_steps=args.refine_steps,
        batch_size=s.batch_size,
        damage=args.damage.replace("-", "_"),
        kl_tokens=args.kl_tokens,
        judge=judge,
        check_judge=args.check_judge,
        formatting=s.formatting(),
        timeout=args.timeout,
    )


def cmd_verify(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from ..exports.verifying import verify

    with report.step(f"verify {args.directory}", "verify"):
        result = verify(args.directory)
    report.say(result.summary())
    report.put("verify", dataclasses.asdict(result))
