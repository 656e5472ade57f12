"""The ``vauban`` argument parser: options every command shares, flag groups, one function a command.

Each ``add_*`` function adds one subcommand with its own arguments; :func:`build_parser` lists
them in the order ``vauban --help`` shows, the pipeline's: run, measure, probe, abliterate,
evaluate, steer, sweep, plot, chat, optimize, cut, judge, verify.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any, NoReturn

from ..exports.formats import FORMATS
from .commands_cut import cmd_abliterate, cmd_optimize, cmd_stream, cmd_verify
from .commands_evaluate import cmd_evaluate, cmd_judge, cmd_sweep
from .commands_measure import cmd_measure, cmd_plot, cmd_probe
from .commands_run import cmd_run
from .commands_steer import cmd_chat, cmd_steer


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line naming the fix, like every other vauban error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vauban: error: {message} (see: {self.prog} --help)\n")


def _comma_list(kind: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """An argparse type: comma-separated values of ``kind`` (empty items skipped)."""

    def parse(text: str) -> list[Any]:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


_alphas = _comma_list(float, "numbers")
_layers = _comma_list(int, "layer numbers")


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|mps|auto|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N, mps or auto, got {text!r}")
    return text


# ---------------------------------------------------------------------------------------------
# options every command takes


def _common_parser() -> argparse.ArgumentParser:
    """Model, device, prompt sets, formatting, judge and output options (every command)."""
    common = _Parser(add_help=False)
    _model_options(common)
    _prompt_options(common)
    common.add_argument("--judge", metavar="SPEC",
                        help="refusal judge: markers (default), markers:FILE, classifier:ID, chat:MODEL, "
                             "endpoint:URL[#model]")
    common.add_argument("-q", "--quiet", action="store_true", default=None,
                        help="no progress bars, spinners or step times")
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common.add_argument("--trust-remote-code", action="store_true",
                        help="run Python code shipped with the checkpoint (off: only if you trust it)")
    common.add_argument("--overwrite", action="store_true", default=None,
                        help="replace existing output files or directories")
    return common


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="HF dir, hub id, .gguf or MLX dir (default: demo model)")
    p.add_argument("--config", help="TOML settings file (default: ./vauban.toml if present)")
    p.add_argument("--device", type=_device, help="cpu, cuda, cuda:N, mps or auto (default: best)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="compute dtype (default: float32 on CPU, bfloat16 on GPUs) and, when given, "
                        "the exported weights' dtype (default: the source's)")
    p.add_argument("--batch-size", type=int, help="prompts per forward pass")


def _prompt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--harmful", help="harmful prompts: bundled set name or file")
    p.add_argument("--harmless", help="harmless prompts: bundled set name or file")
    p.add_argument("--layer", type=int, help="take the direction from this layer")
    p.add_argument("--select", choices=["effect", "geometry"],
                   help="choose the direction's layer by the effect of its cut on held-back prompts "
                        "(default) or by cosine separation alone (fast)")
    p.add_argument("--max-tokens", type=int, help="new tokens per answer (default 128)")
    p.add_argument("--eval-prompts", help="harmful evaluation prompts (default: bundled 20)")
    p.add_argument("--system-prompt", metavar="TEXT",
                   help="system prompt for every prompt (default: none; a saved direction's own)")
    p.add_argument("--set-system-prompt", dest="system_prompts", action="append", metavar="SET=TEXT",
                   help="a system prompt for one prompt set only (harmful, harmless, eval, "
                        "reference, validation, selection, probe, steer, chat); repeatable")
    p.add_argument("--template-option", dest="template_options", action="append", metavar="KEY=VALUE",
                   help="chat-template keyword, e.g. enable_thinking=false, reasoning_effort=low; "
                        "repeatable")
    p.add_argument("--thinking-tokens", type=int, metavar="N",
                   help="new tokens a thinking model may spend before its reply (default 1024 "
                        "when it thinks, else 0)")


# ---------------------------------------------------------------------------------------------
# flag groups several commands share


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_arg", nargs="?", metavar="MODEL", help="the model (default: demo model)")


def _direction_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--direction", help="a saved direction (.safetensors); default: measure one")


def _cut_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output-dir", help="where to export (default: ./abliterated)")
    p.add_argument("--alpha", type=float, help="fraction of the direction to remove (default 1)")
    p.add_argument("--embeddings", action="store_true", default=None,
                   help="also orthogonalize the embeddings")
    _format_flags(p)


def _format_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=list(FORMATS),
                   help="export format: safetensors (default), gguf, lora (PEFT adapter), mlx")
    p.add_argument("--quant", help="export quantization: gguf q8_0, q4_k_m, ... (from a GGUF source: the "
                                   "edited tensors' type; default their own); mlx bits, e.g. 4")


def _variant_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", type=_layers, help="comma-separated layers to cut (default: all)")
    p.add_argument("--attention", metavar="WEIGHTS",
                   help="attention writers' weight per layer: 0,0.5,1,... or a kernel "
                        "peak=P,max=M,min=m,width=W (default 1 everywhere)")
    p.add_argument("--mlp", metavar="WEIGHTS", help="the same for the MLP writers")
    p.add_argument("--norm-preserving", action="store_true", help="keep every written vector's norm")
    p.add_argument("--projected", action="store_true",
                   help="remove the harmless mean's component from the direction")
    p.add_argument("--direction-index", type=float, metavar="X",
                   help="take the direction at fractional layer X (interpolated)")
    p.add_argument("--per-layer", action="store_true", help="cut every layer along its own direction")
    p.add_argument("--subspace", type=int, metavar="K", help="cut a K-dimensional subspace (measured)")
    p.add_argument("--params", metavar="FILE",
                   help="an optimize trial's cut: pareto.json (its pick, or --trial N), a trial "
                        "record, or an export's vauban.json")
    p.add_argument("--trial", type=int, metavar="N", help="with --params pareto.json: this trial")


# ---------------------------------------------------------------------------------------------
# the commands


Command = Callable[..., argparse.ArgumentParser]  # (name, func, help, json_flag=) -> its parser


def add_run(command: Command) -> None:
    p = command("run", cmd_run, "the whole tutorial: measure, probe, cut, evaluate, export, steer")
    _model_arg(p)
    _cut_flags(p)


def add_measure(command: Command) -> None:
    p = command("measure", cmd_measure, "measure the refusal direction (and save it with -o)")
    _model_arg(p)
    p.add_argument("-o", "--output", help="save the direction here (.safetensors + .json)")


def add_probe(command: Command) -> None:
    p = command("probe", cmd_probe, "per-layer projections of prompts on the direction")
    p.add_argument("prompts", nargs="+", metavar="PROMPT")
    _direction_flag(p)


def add_abliterate(command: Command) -> None:
    p = command("abliterate", cmd_abliterate, "cut the direction from the weights and export the model")
    _model_arg(p)
    _cut_flags(p)
    _direction_flag(p)
    _variant_flags(p)


def add_evaluate(command: Command) -> None:
    p = command("evaluate", cmd_evaluate,
                "compare ORIGINAL and MODIFIED: refusal, perplexity, KL (ORIGINAL defaults to the demo)")
    p.add_argument("models", nargs="+", metavar="[ORIGINAL] MODIFIED")
    p.add_argument("-o", "--output", help="save every answer and number here (.json)")
    p.add_argument("--plot", help="draw the report, original and modified side by side (.png)")
    p.add_argument("--safe-prompts",
                   help="safe prompts that sound unsafe, for the over-refusal rate (default: 16 bundled; "
                        "XSTest's xstest_prompts.csv keeps its safe rows; none: skip)")
    p.add_argument("--kl-tokens", type=int, default=16,
                   help="KL over the first K tokens of the original's own answers (default 16; 0: skip)")
    p.add_argument("--gsm8k", metavar="FILE", help="GSM8K accuracy on this test.jsonl")
    p.add_argument("--humaneval", metavar="FILE",
                   help="HumanEval pass@1 on this HumanEval.jsonl.gz (runs model-written code: needs "
                        "--allow-code-execution)")
    p.add_argument("--allow-code-execution", action="store_true",
                   help="accept running model-written code in vauban's sandbox (vauban.capability.sandbox)")
    p.add_argument("--tasks",
                   help="lm-evaluation-harness tasks, e.g. mmlu,gsm8k (pip install 'vauban[lm-eval]')")
    p.add_argument("--task-path", help="folder of your own lm-eval task YAML files")
    p.add_argument("--limit", type=int, help="first N items of each capability check (CPU runs: 20 or so)")


def add_steer(command: Command) -> None:
    p = command("steer", cmd_steer, "generate while removing the direction at run time")
    p.add_argument("prompt", metavar="PROMPT")
    p.add_argument("--alpha", type=float, help="how much of the direction to remove (default 1)")
    p.add_argument("--alphas", type=_alphas, help="several alphas, e.g. 0.5,1,1.5,2")
    _direction_flag(p)


def add_sweep(command: Command) -> None:
    p = command("sweep", cmd_sweep, "cut at several alphas: refusal and perplexity table, CSV and plot")
    _model_arg(p)
    p.add_argument("--alphas", type=_alphas, help="default 0.5,1,1.5,2")
    p.add_argument("-o", "--output", default="sweep", help="folder for sweep.csv and sweep.png")
    _direction_flag(p)


def add_plot(command: Command) -> None:
    p = command("plot", cmd_plot, "plot the characteristic shape: projections per layer, separation scores")
    _model_arg(p)
    p.add_argument("-o", "--output", default="vauban_layers.png", help="PNG file to write")
    p.add_argument("--prompts", type=int, default=48, help="prompts of each set to draw (default 48)")
    _direction_flag(p)


def add_chat(command: Command) -> None:
    p = command("chat", cmd_chat, "chat interactively, streaming tokens; optionally steered live",
                json_flag=False)
    _model_arg(p)
    p.add_argument("--alpha", type=float, help="steer with this alpha (measures a direction if none)")
    _direction_flag(p)


def add_optimize(command: Command) -> None:
    p = command("optimize", cmd_optimize,
                "search cut variants for few refusals at low KL; Pareto front, resumable study")
    _model_arg(p)
    p.add_argument("--trials", type=int, default=30, help="finished trials the study should have")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="seconds for the search and refinement together, from the search's start (after "
                        "loading and measuring): refinement gets the last third and stops at the end; the "
                        "check of the pick and the export follow")
    p.add_argument("-o", "--output", default="vauban-optimize",
                   help="folder for pareto.json, pareto.png and (default) study.db")
    p.add_argument("--study", help="SQLite study file; rerun with the same one to resume")
    p.add_argument("--validation", help="harmful prompts to search on (default: bundled eval prompts "
                                        "20-59, disjoint from what evaluate reports)")
    _search_flags(p)
    p.add_argument("--export", help="export the pick (or --export-trial N) here")
    p.add_argument("--export-trial", type=int, help="the trial number to export")
    _format_flags(p)
    _direction_flag(p)


def _search_flags(p: argparse.ArgumentParser) -> None:
    """What ``optimize`` searches, how it checks the pick and how it measures damage."""
    p.add_argument("--projected", choices=["search", "on", "off"], default="search",
                   help="project the harmless mean out of the direction")
    p.add_argument("--norm-preserving", choices=["search", "on", "off"], default="search",
                   help="restore the norm of every written vector after the cut")
    p.add_argument("--selection", help="harmful prompts the pick is checked on (default: bundled eval "
                                       "prompts 60-99)")
    p.add_argument("--check", type=int, default=4,
                   help="check at most this many candidates on the selection prompts (0: no check)")
    p.add_argument("--refine-steps", type=int, default=16,
                   help="gradient steps refining the plain cut's per-layer weights after the search "
                        "(0: skip)")
    p.add_argument("--damage", choices=["first-token", "k-tokens"], default="first-token",
                   help="damage objective: KL at the first answer token, or over the first --kl-tokens "
                        "tokens of the original's own answers (teacher-forced)")
    p.add_argument("--kl-tokens", type=int, default=16, help="k of the k-token KL (default 16)")


def add_stream(command: Command) -> None:
    p = command("stream", cmd_stream, "abliterate a safetensors checkpoint on disk into a new one, one "
                "tensor at a time, with a saved direction (models bigger than memory)")
    p.add_argument("src", metavar="SRC", help="model directory with (sharded) safetensors weights")
    p.add_argument("dst", metavar="DST", help="new model directory to write")
    p.add_argument("--direction", required=True, help="the direction to cut (.safetensors from measure -o)")
    p.add_argument("--alpha", type=float, help="fraction of the direction to remove (default 1)")
    p.add_argument("--layers", type=_layers, help="comma-separated layers to cut (default: all)")
    p.add_argument("--embeddings", action="store_true", default=None,
                   help="also orthogonalize the embeddings")


def add_judge(command: Command) -> None:
    p = command("judge", cmd_judge, "judge answers: one JSON verdict per line of a JSONL file of "
                "{\"prompt\", \"answer\"} objects (- reads stdin)")
    p.add_argument("file", metavar="FILE.jsonl")


def add_verify(command: Command) -> None:
    p = command("verify", cmd_verify, "check an export's files against the sha256 list in its vauban.json")
    p.add_argument("directory", metavar="DIR")


COMMANDS = (add_run, add_measure, add_probe, add_abliterate, add_evaluate, add_steer, add_sweep, add_plot,
            add_chat, add_optimize, add_stream, add_judge, add_verify)


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
    reporting = _Parser(add_help=False)
    reporting.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser = _Parser(
        prog="vauban",
        description="Measure, probe, cut, export, evaluate and steer the refusal direction of a "
        "chat model. Settings: flags > VAUBAN_* environment > vauban.toml > defaults.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, help: str, *, json_flag: bool = True) -> argparse.ArgumentParser:
        parents = [common, reporting] if json_flag else [common]
        p = sub.add_parser(name, parents=parents, help=help, description=help)
        p.set_defaults(func=func)
        return p

    for add in COMMANDS:
        add(command)
    return parser
