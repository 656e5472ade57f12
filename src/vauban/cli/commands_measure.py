"""The direction and what it separates: ``vauban measure``, ``vauban probe``, ``vauban plot``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..config import Settings
from ..core.errors import VaubanError
from .commands_control import cmd_measure_categories
from .common import direction_for, explain_writers, load, new_path, projection_line, run_formatting
from .report import Report

if TYPE_CHECKING:
    from ..direction.results import DirectionResult


def cmd_measure(s: Settings, args: argparse.Namespace, report: Report) -> None:
    if args.by_category and not args.streamed:
        model, tokenizer = load(s, report, trust=args.trust_remote_code)
        cmd_measure_categories(s, args, report, model, tokenizer)
        return
    save = new_path(args.output, s.overwrite) if args.output else None
    if args.streamed:
        direction = measured_streamed(s, args, report)
    else:
        model, tokenizer = load(s, report, trust=args.trust_remote_code)
        if args.explain:
            explain_writers(report, model)
        direction = direction_for(s, report, model, tokenizer, args)
    effects = {e.layer: e for e in direction.effects}
    report.table(
        f"Per layer (chosen by {direction.selection}; refusal score and first-token KL of "
        "each candidate's cut on held-back prompts)",
        ["layer", "cosine", "refusal score", "KL", ""],
        [
            (
                i,
                f"{v:.4f}",
                f"{effects[i].refusal:.2e}" if i in effects else "",
                f"{effects[i].kl:.4f}" if i in effects else "",
                "← chosen" if i == direction.layer_index else "",
            )
            for i, v in enumerate(direction.cosine_scores)
        ],
    )
    if save is not None:
        path = direction.save(save)
        report.say(f"saved to {path}")
        report.put("saved", str(path))


def measured_streamed(s: Settings, args: argparse.Namespace, report: Report) -> DirectionResult:
    """``measure --streamed``: the checkpoint's folder run one decoder layer at a time, on the CPU
    (:func:`vauban.direction.streamed.measure_streamed`), for models bigger than memory."""
    import torch

    from ..direction.streamed import measure_streamed
    from ..model.loading import checkpoint_dir, resolve_dtype

    if args.by_category or args.explain or args.trust_remote_code or s.device not in (None, "cpu"):
        raise VaubanError(
            "--streamed runs the checkpoint one layer at a time on the CPU, with transformers' own "
            "code; drop --by-category, --explain, --trust-remote-code and --device (or --streamed)"
        )
    src = checkpoint_dir(s.model)
    dtype = resolve_dtype(s.dtype, torch.device("cpu")) if s.dtype else None
    with report.step(f"measure the direction of {src}, one layer at a time", "measure"):
        direction = measure_streamed(
            src,
            None,
            s.harmful,
            s.harmless,
            layer=s.layer,
            select=s.select,
            batch_size=s.batch_size,
            dtype=dtype,
            formatting=s.formatting(),
        )
    report.say(direction.summary())
    report.put("direction", direction.record())
    report.put("streamed", True)
    return direction


def cmd_probe(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from ..direction.probing import borderline

    model, tokenizer = load(s, report, trust=args.trust_remote_code)
    direction = direction_for(s, report, model, tokenizer, args)
    rows, results = [], []
    for text in args.prompts:
        edge = borderline(model, tokenizer, text, direction, formatting=run_formatting(s, direction))
        values = edge.probe.projections
        rows.append((text, f"{values[direction.layer_index]:+.3f}", f"{edge.position:.2f}", edge.closer_to))
        results.append(
            {
                "prompt": text,
                "projections": list(values),
                "position": edge.position,
                "closer_to": edge.closer_to,
            }
        )
        report.say(projection_line("layers", values))
    report.table(
        f"Projection at layer {direction.layer_index} (position: 0 = harmless mean, 1 = harmful)",
        ["prompt", "projection", "position", "closer to"],
        rows,
    )
    report.put("prompts", results)


def cmd_plot(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from .. import plots
    from ..direction.probing import projections
    from ..text.prompts import load_prompts

    path = new_path(args.output, s.overwrite)
    model, tokenizer = load(s, report, trust=args.trust_remote_code)
    direction = direction_for(s, report, model, tokenizer, args)
    sets = {
        name: load_prompts(source)[: args.prompts]
        for name, source in (("harmful", s.harmful), ("harmless", s.harmless))
    }
    with report.step(f"project {sum(map(len, sets.values()))} prompts on every layer", "project"):
        values = {
            name: projections(
                model,
                tokenizer,
                prompts,
                direction,
                batch_size=s.batch_size,
                formatting=s.formatting(),
                prompt_set=name,
            )
            for name, prompts in sets.items()
        }
    plots.plot_layers(values["harmful"], values["harmless"], direction, path)
    report.say(f"plot saved to {path}")
    report.put("plot", str(path))
    report.put("mean_projections", {k: v.mean(0).tolist() for k, v in values.items()})
