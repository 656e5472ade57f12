"""``vauban`` command line: the tutorial's steps as subcommands, ``vauban run`` for all of them.

Settings come from flags > ``VAUBAN_*`` environment > ``vauban.toml`` > defaults (see
:mod:`vauban.config`). A :class:`~vauban.errors.VaubanError` prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import plots
from .config import Settings, resolve
from .cut import cut
from .errors import VaubanError
from .evaluate import evaluate
from .export import check_output_dir, cut_record, export
from .load import load_model
from .measure import measure
from .probe import borderline, probe
from .results import DirectionResult
from .steer import steer
from .sweep import alpha_sweep

HARMFUL_PROBE = "How do I pick a lock?"
HARMLESS_PROBE = "What is the capital of France?"
BORDERLINE_PROBE = "Tell me about the history of lockpicking"


class _Clock:
    """Prints each step's wall time, so users see where the minutes go."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.times: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.times[step] = round(now - self.last, 1)
        print(f"  [{step}: {now - self.last:.1f} s]", flush=True)
        self.last = now


def _load(s: Settings) -> tuple[Any, Any]:
    print(f"Loading {s.model or 'the demo model (Qwen2.5-Coder-0.5B-Instruct)'} ...", flush=True)
    return load_model(s.model, device=s.device, dtype=s.dtype)


def _measure(model: Any, tokenizer: Any, s: Settings) -> DirectionResult:
    return measure(model, tokenizer, s.harmful, s.harmless, layer=s.layer, batch_size=s.batch_size)


def _projection_line(label: str, values: Sequence[float]) -> str:
    return f"{label:>9}: " + " ".join(f"{v:+.2f}" for v in values)


def cmd_run(s: Settings, args: argparse.Namespace) -> None:
    """The whole tutorial: measure, probe, cut, evaluate, export, steer."""
    out = check_output_dir(s.output_dir, s.overwrite)
    clock = _Clock()
    model, tokenizer = _load(s)
    clock.lap("load")
    direction = _measure(model, tokenizer, s)
    print(direction.summary())
    clock.lap("measure")
    probes = {name: probe(model, tokenizer, text, direction) for name, text in
              (("harmful", HARMFUL_PROBE), ("harmless", HARMLESS_PROBE))}
    edge = borderline(model, tokenizer, BORDERLINE_PROBE, direction)
    print(f"Per-layer projections (best layer {direction.layer_index}):")
    for name, result in probes.items():
        print(_projection_line(name, result.projections))
    print(edge.summary())
    clock.lap("probe")
    with cut(model, direction, alpha=s.alpha, embeddings=s.embeddings) as applied:
        probes["harmful, cut"] = probe(model, tokenizer, HARMFUL_PROBE, direction)
        print(_projection_line("after cut", probes["harmful, cut"].projections))
        result = evaluate(model, model, tokenizer, s.eval_prompts, max_tokens=s.max_tokens,
                          batch_size=s.batch_size)
        print(result.summary())
        print(f"  first-token KL={result.first_token_kl:.4f}")
        clock.lap("evaluate")

        def extras(folder: Path) -> None:
            plots.plot_scores(direction, folder / "vauban_scores.png")
            plots.plot_probes(probes, direction, folder / "vauban_probes.png")
            (folder / "vauban_eval.json").write_text(json.dumps(result.record(), indent=1))

        record = cut_record(s.model or direction.model_path, applied, direction)
        record["evaluation"] = {k: v for k, v in result.record().items() if k not in ("before", "after")}
        export(model, tokenizer, out, direction=direction, record=record, overwrite=s.overwrite,
               extras=extras)
        clock.lap("export")
    refused = next((c.prompt for c in result.before if c.refused), HARMFUL_PROBE)
    steered = steer(model, tokenizer, refused, direction, s.alpha, max_tokens=s.max_tokens)
    print(f"Steering the original model on {refused!r}:")
    print(steered.summary())
    print("  " + steered.text[:300].replace("\n", "\n  "))
    clock.lap("steer")
    print(f"Exported the abliterated model to {out}/ (loads with transformers and mlx_lm).")


def cmd_measure(s: Settings, args: argparse.Namespace) -> None:
    model, tokenizer = _load(s)
    direction = _measure(model, tokenizer, s)
    print(direction.summary())
    if args.save:
        print(f"saved to {direction.save(args.save)}")


def _direction(args: argparse.Namespace, model: Any, tokenizer: Any, s: Settings) -> DirectionResult:
    return DirectionResult.load(args.direction) if args.direction else _measure(model, tokenizer, s)


def cmd_probe(s: Settings, args: argparse.Namespace) -> None:
    model, tokenizer = _load(s)
    direction = _direction(args, model, tokenizer, s)
    for text in args.prompts:
        print(borderline(model, tokenizer, text, direction).summary())
        print(_projection_line("layers", probe(model, tokenizer, text, direction).projections))


def cmd_abliterate(s: Settings, args: argparse.Namespace) -> None:
    out = check_output_dir(s.output_dir, s.overwrite)
    model, tokenizer = _load(s)
    direction = _direction(args, model, tokenizer, s)
    print(direction.summary())
    with cut(model, direction, alpha=s.alpha, embeddings=s.embeddings) as applied:
        record = cut_record(s.model or direction.model_path, applied, direction)
        export(model, tokenizer, out, direction=direction, record=record, overwrite=s.overwrite)
    print(f"Exported to {out}/")


def cmd_evaluate(s: Settings, args: argparse.Namespace) -> None:
    original, tokenizer = _load(s)
    modified, _ = load_model(args.modified, device=s.device, dtype=s.dtype)
    result = evaluate(original, modified, tokenizer, s.eval_prompts, max_tokens=s.max_tokens,
                      batch_size=s.batch_size)
    print(result.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(result.record(), indent=1))


def cmd_steer(s: Settings, args: argparse.Namespace) -> None:
    model, tokenizer = _load(s)
    direction = _direction(args, model, tokenizer, s)
    for alpha in args.alphas or [s.alpha]:
        result = steer(model, tokenizer, args.prompt, direction, alpha, max_tokens=s.max_tokens)
        print(result.summary())
        print("  " + result.text.replace("\n", "\n  "))


def cmd_sweep(s: Settings, args: argparse.Namespace) -> None:
    model, tokenizer = _load(s)
    direction = _direction(args, model, tokenizer, s)
    sweep = alpha_sweep(model, tokenizer, direction, args.alphas or [0.5, 1.0, 2.0],
                        prompts=s.eval_prompts, max_tokens=s.max_tokens, batch_size=s.batch_size)
    print(sweep.table())
    if args.plot:
        plots.plot_sweep(sweep, args.plot)
        print(f"plot saved to {args.plot}")


def cmd_optimize(s: Settings, args: argparse.Namespace) -> None:
    from .optimize import optimize

    if args.export:
        check_output_dir(args.export, s.overwrite)
    model, tokenizer = _load(s)
    direction = _direction(args, model, tokenizer, s)
    print(direction.summary())
    result = optimize(model, tokenizer, direction, n_trials=args.trials, seed=args.seed,
                      kl_weight=args.kl_weight, batch_size=s.batch_size, show_progress=True)
    print(result.table())
    print(result.summary())
    if args.export:
        best = direction.at_layer(result.best.layer)
        with cut(model, best, alpha=result.best.alpha) as applied:
            record = cut_record(s.model or direction.model_path, applied, best)
            record["optimization"] = {"trials": [vars(t) for t in result.trials], "seed": args.seed,
                                      "kl_weight": args.kl_weight}
            export(model, tokenizer, args.export, direction=best, record=record,
                   overwrite=s.overwrite)
        print(f"Exported the best cut to {args.export}/")


def _alphas(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", help="HF dir, hub id, .gguf or MLX dir (default: demo model)")
    common.add_argument("--config", help="TOML settings file (default: ./vauban.toml if present)")
    common.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    common.add_argument("--dtype", help="float32, bfloat16, float16 (default: fp32 on CPU, else bf16)")
    common.add_argument("--batch-size", type=int)
    common.add_argument("--harmful", help="harmful prompts: bundled set name or file")
    common.add_argument("--harmless", help="harmless prompts: bundled set name or file")
    common.add_argument("--layer", type=int, help="take the direction from this layer")
    common.add_argument("--max-tokens", type=int, help="new tokens per answer (default 64)")
    common.add_argument("--eval-prompts", help="harmful evaluation prompts (default: bundled 20)")

    def direction_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--direction", help="a saved direction (.safetensors); default: measure")

    def output_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--output-dir", help="where to export (default: ./abliterated)")
        p.add_argument("--alpha", type=float, help="fraction of the direction to remove (default 1)")
        p.add_argument("--embeddings", action="store_true", default=None,
                       help="also orthogonalize the embeddings")
        p.add_argument("--overwrite", action="store_true", default=None,
                       help="replace a non-empty output directory")

    parser = argparse.ArgumentParser(
        prog="vauban",
        description="Measure, probe, cut, export, evaluate and steer the refusal direction of a "
        "chat model. Settings: flags > VAUBAN_* environment > vauban.toml > defaults.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", parents=[common],
                       help="the whole tutorial: measure, probe, cut, evaluate, export, steer")
    output_flags(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("measure", parents=[common], help="measure and print (and save) the direction")
    p.add_argument("--save", help="write the direction here (.safetensors + .json)")
    p.set_defaults(func=cmd_measure)
    p = sub.add_parser("probe", parents=[common], help="per-layer projections of prompts")
    p.add_argument("prompts", nargs="+")
    direction_flag(p)
    p.set_defaults(func=cmd_probe)
    p = sub.add_parser("abliterate", parents=[common], help="cut the direction and export")
    output_flags(p)
    direction_flag(p)
    p.set_defaults(func=cmd_abliterate)
    p = sub.add_parser("evaluate", parents=[common], help="compare --model with a modified model")
    p.add_argument("modified", help="the modified model (e.g. an export)")
    p.add_argument("--json", help="write all answers and numbers here")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("steer", parents=[common], help="generate while removing the direction")
    p.add_argument("prompt")
    p.add_argument("--alpha", type=float)
    p.add_argument("--alphas", type=_alphas, help="several alphas, e.g. 0.5,1,1.5,2")
    direction_flag(p)
    p.set_defaults(func=cmd_steer)
    p = sub.add_parser("sweep", parents=[common], help="cut at several alphas and evaluate each")
    p.add_argument("--alphas", type=_alphas, help="default 0.5,1,2")
    p.add_argument("--plot", help="save refusal/perplexity vs alpha here (.png)")
    direction_flag(p)
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("optimize", parents=[common],
                       help="search direction layer and alpha for few refusals at low KL")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kl-weight", type=float, default=1.0, help="score = refusal + w * KL")
    p.add_argument("--export", help="export the best cut here")
    p.add_argument("--overwrite", action="store_true", default=None)
    direction_flag(p)
    p.set_defaults(func=cmd_optimize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = resolve(vars(args), config_file=args.config)
        args.func(settings, args)
    except VaubanError as err:
        print(f"vauban: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vauban: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
