"""What a cut changed: ``vauban evaluate``, ``vauban sweep`` (several alphas) and ``vauban judge``
(refusal verdicts on a file of answers)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from ..config import Settings
from ..core.errors import VaubanError
from ..text.formatting import Formatting
from .commands_control import evaluate_by_group
from .common import attach_engine, direction_for, judge_for, load, new_path, numbers, run_formatting
from .report import Report


def cmd_evaluate(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from .. import plots
    from ..core.atomic import write_file
    from ..evaluation.evaluating import evaluate

    if len(args.models) > 2:
        raise VaubanError("evaluate takes ORIGINAL MODIFIED (or just MODIFIED, against the demo model)")
    *first, modified_name = args.models
    original_name = first[0] if first else s.model
    save = new_path(args.output, s.overwrite) if args.output else None
    plot = new_path(args.plot, s.overwrite) if args.plot else None
    checks = capability_checks(args)
    original, tokenizer = load(s, report, original_name, trust=args.trust_remote_code)
    modified, _ = load(s, report, modified_name, trust=args.trust_remote_code)
    attach_engine(s, args, original, report, original_name)
    attach_engine(s, args, modified, report, modified_name)
    safe = False if args.safe_prompts == "none" else args.safe_prompts
    judge = judge_for(s, report)
    with report.step("evaluate", "evaluate"):
        result = evaluate(
            original,
            modified,
            tokenizer,
            s.eval_prompts,
            max_tokens=s.max_tokens,
            batch_size=s.batch_size,
            safe=safe,
            kl_tokens=args.kl_tokens,
            capability=checks,
            judge=judge,
            formatting=run_formatting(s, export_formatting(modified_name)),
        )
    report.table(
        f"{original_name or 'demo model'} → {modified_name} (refusals judged by {judge.spec})",
        ["", "original", "modified"],
        result.rows(),
    )
    report.say(result.summary())
    report.put("evaluation", numbers(result.record()))
    if save is not None:
        text = json.dumps(result.record(), indent=1) + "\n"
        write_file(save, lambda tmp: tmp.write_text(text))
        report.say(f"answers and numbers saved to {save}")
    if plot is not None:
        plots.plot_eval(result, plot)
        report.say(f"plot saved to {plot}")
    evaluate_by_group(
        s,
        args,
        report,
        original,
        modified,
        tokenizer,
        judge,
        run_formatting(s, export_formatting(modified_name)),
    )


def capability_checks(args: argparse.Namespace) -> list[Any]:
    """The capability checks the evaluate flags ask for (see :mod:`vauban.capability`)."""
    checks: list[Any] = []
    if args.gsm8k:
        from ..capability.gsm8k import GSM8K

        checks.append(GSM8K(args.gsm8k, limit=args.limit))
    if args.humaneval:
        from ..capability.humaneval import HumanEval

        checks.append(
            HumanEval(args.humaneval, limit=args.limit, allow_code_execution=args.allow_code_execution)
        )
    if args.tasks:
        from ..capability.harness import Harness

        checks.append(
            Harness(
                tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
                limit=args.limit,
                include_path=args.task_path,
            )
        )
    return checks


def export_formatting(path: str | None) -> Formatting | None:
    """The formatting a vauban export records in its ``vauban.json`` (reused unless overridden)."""
    record = Path(path or "") / "vauban.json"
    if not path or not record.is_file():
        return None
    try:
        saved = json.loads(record.read_text()).get("formatting")
    except (OSError, ValueError, AttributeError):
        return None
    try:
        return Formatting.from_record(saved)
    except VaubanError:
        return None


def cmd_sweep(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from .. import plots
    from ..core.atomic import write_file
    from ..evaluation.sweeping import alpha_sweep

    folder = Path(args.output)
    files = {kind: new_path(folder / f"sweep.{kind}", s.overwrite) for kind in ("csv", "png")}
    model, tokenizer = load(s, report, trust=args.trust_remote_code)
    attach_engine(s, args, model, report)
    judge = judge_for(s, report)
    direction = direction_for(s, report, model, tokenizer, args)
    alphas = args.alphas or [0.5, 1.0, 1.5, 2.0]
    with report.step(f"cut and evaluate at {len(alphas)} alphas", "sweep"):
        sweep = alpha_sweep(
            model,
            tokenizer,
            direction,
            alphas,
            prompts=s.eval_prompts,
            max_tokens=s.max_tokens,
            batch_size=s.batch_size,
            judge=judge,
            formatting=s.formatting(),
        )
    header = ["alpha", "refusal", "perplexity", "kl", "first_token_kl"]
    rows = [(0.0, sweep.refusal_before, sweep.perplexity_before, 0.0, 0.0)]
    rows += [(r.alpha, r.refusal, r.perplexity, r.kl, r.first_token_kl) for r in sweep.rows]
    report.table(
        f"Alpha sweep ({sweep.n_prompts} prompts, refusals judged by {sweep.judge}; alpha 0 = original)",
        header,
        [(f"{a:g}", f"{ref:.0%}", f"{ppl:.2f}", f"{kl:.4f}", f"{fk:.4f}") for a, ref, ppl, kl, fk in rows],
    )

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])

    write_file(files["csv"], write_csv)
    plots.plot_sweep(sweep, files["png"])
    report.say(f"table: {files['csv']}  plot: {files['png']}")
    report.put("judge", sweep.judge)
    report.put("rows", [dict(zip(header, row, strict=True)) for row in rows])
    report.put("files", {k: str(v) for k, v in files.items()})


def cmd_judge(s: Settings, args: argparse.Namespace, report: Report) -> None:
    """One verdict per line of a JSONL file of {"prompt", "answer"} (see vauban.judge.files): JSON
    lines on stdout, or with --json one document holding them all."""
    from ..judge.files import judge_file

    judge = judge_for(s, report)
    with report.step(f"judge {args.file} with {judge.spec}", "judge"):
        verdicts = judge_file(args.file, judge)
    refusals, late = sum(v["refusal"] for v in verdicts), sum(v["late"] for v in verdicts)
    if not report.as_json:
        sys.stdout.write("".join(json.dumps(v) + "\n" for v in verdicts))
    if not s.quiet:
        report.err.print(
            f"{refusals} of {len(verdicts)} answers are refusals ({late} late), judged by {judge.spec}",
            markup=False,
            style="dim",
        )
    report.put("judge", judge.spec)
    report.put("refusals", refusals)
    report.put("late", late)
    report.put("verdicts", verdicts)
