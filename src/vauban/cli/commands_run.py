"""``vauban run``: the whole tutorial (measure, probe, cut, evaluate, export, steer) in one command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import Settings
from .common import (
    BORDERLINE_PROBE,
    HARMFUL_PROBE,
    HARMLESS_PROBE,
    LOADS_WITH,
    direction_for,
    format_options,
    judge_for,
    load,
    numbers,
    projection_line,
    run_formatting,
)
from .report import Report


def cmd_run(s: Settings, args: argparse.Namespace, report: Report) -> None:
    """The whole tutorial: measure, probe, cut, evaluate, export, steer."""
    from .. import plots
    from ..direction.probing import borderline, probe
    from ..edit.cutting import cut
    from ..evaluation.evaluating import evaluate
    from ..exports.exporting import check_output_dir, cut_record, export
    from ..methods.steering import steer

    out = check_output_dir(s.output_dir, s.overwrite)
    model, tokenizer = load(s, report, trust=args.trust_remote_code)
    judge = judge_for(s, report)
    direction = direction_for(s, report, model, tokenizer, args)
    with report.step("probe", "probe"):
        fmt = run_formatting(s, direction)
        probes = {
            name: probe(model, tokenizer, text, direction, formatting=fmt)
            for name, text in (("harmful", HARMFUL_PROBE), ("harmless", HARMLESS_PROBE))
        }
        edge = borderline(model, tokenizer, BORDERLINE_PROBE, direction, formatting=fmt)
    report.say(f"Per-layer projections (best layer {direction.layer_index}):")
    for name, probed in probes.items():
        report.say(projection_line(name, probed.projections))
    report.say(edge.summary())
    with cut(model, direction, alpha=s.alpha, embeddings=s.embeddings) as applied:
        probes["harmful, cut"] = probe(model, tokenizer, HARMFUL_PROBE, direction, formatting=fmt)
        report.say(projection_line("after cut", probes["harmful, cut"].projections))
        with report.step(f"evaluate ({s.eval_prompts or 'bundled'} prompts)", "evaluate"):
            result = evaluate(
                model,
                model,
                tokenizer,
                s.eval_prompts,
                max_tokens=s.max_tokens,
                batch_size=s.batch_size,
                judge=judge,
                formatting=fmt,
            )
        report.say(result.summary())
        report.say(f"  first-token KL={result.first_token_kl:.4f}, refusals judged by {judge.spec}")

        def extras(folder: Path) -> None:
            plots.plot_scores(direction, folder / "vauban_scores.png")
            plots.plot_probes(probes, direction, folder / "vauban_probes.png")
            (folder / "vauban_eval.json").write_text(json.dumps(result.record(), indent=1))

        record = cut_record(s.model or direction.model_path, applied, direction)
        record["evaluation"] = numbers(result.record())
        with report.step(f"export to {out}/", "export"):
            export(
                model,
                tokenizer,
                out,
                direction=direction,
                record=record,
                overwrite=s.overwrite,
                extras=extras,
                **format_options(s),
            )
    refused = next((c.prompt for c in result.before if c.refused), HARMFUL_PROBE)
    with report.step("steer", "steer"):
        steered = steer(
            model,
            tokenizer,
            refused,
            direction,
            s.alpha,
            max_tokens=s.max_tokens,
            judge=judge,
            formatting=fmt,
        )
    report.say(f"Steering the original model on {refused!r}:")
    report.say(steered.summary())
    report.say("  " + steered.text[:300].replace("\n", "\n  "))
    report.say(f"Exported the abliterated model to {out}/ ({LOADS_WITH[s.format]}).")
    report.put("probes", {k: list(v.projections) for k, v in probes.items()})
    report.put("borderline", {"prompt": BORDERLINE_PROBE, "position": edge.position})
    report.put("evaluation", numbers(result.record()))
    report.put("output_dir", str(out))
    report.put(
        "steer", {"prompt": refused, "alpha": s.alpha, "text": steered.text, "refused": steered.refused}
    )
