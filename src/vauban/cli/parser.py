"""The ``vauban`` argument parser: each command offers only the options its code reads, in groups.

Shared options are written once (:data:`OPTIONS`); each ``add_*`` function picks the ones its
command reads into titled groups (model, direction, prompts, cut, evaluation, output) and adds
its own; every command gets the general group (help, config file, quiet, debug, JSON). So
``vauban judge --help`` lists no prompt set and no layer: tests/test_cli_help.py compares each
command's options with the settings and arguments its ``cmd_*`` function reads, and parses
every example of the help epilogs and the README. :func:`build_parser` lists the commands in
the pipeline's order: run, measure, probe, abliterate, evaluate, steer, sweep, plot, chat,
optimize, stream, judge, verify.
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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept line by line; a command's usage is ``vauban CMD POSITIONALS [options]`` (its
    option groups follow)."""

    def _format_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any) -> str:
        if usage is None and any(a.option_strings for a in actions):
            words = [
                self._format_args(a, self._get_default_metavar_for_positional(a))
                for a in actions
                if not a.option_strings
            ]
            usage = " ".join(["%(prog)s", *words, "[options]"])
        return super()._format_usage(usage, actions, groups, prefix)


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
# shared options, written once; a command picks the ones it reads

Option = tuple[tuple[str, ...], dict[str, Any]]

OPTIONS: dict[str, Option] = {
    # model
    "model": (("-m", "--model"), {"help": "HF dir, hub id, .gguf or MLX dir (default: demo model)"}),
    "device": (("--device",), {"type": _device, "help": "cpu, cuda, cuda:N, mps or auto (default: best)"}),
    "dtype": (
        ("--dtype",),
        {
            "choices": ["float32", "bfloat16", "float16"],
            "help": "compute dtype (default: float32 on CPU, bfloat16 on GPUs) and, when "
            "given, the exported weights' dtype (default: the source's)",
        },
    ),
    "batch_size": (("--batch-size",), {"type": int, "help": "prompts per forward pass"}),
    "trust_remote_code": (
        ("--trust-remote-code",),
        {
            "action": "store_true",
            "help": "run Python code shipped with the checkpoint (off: only if you trust it)",
        },
    ),
    # direction
    "direction": (("--direction",), {"help": "a saved direction (.safetensors); default: measure one"}),
    "harmful": (("--harmful",), {"help": "harmful prompts: bundled set name or file"}),
    "harmless": (("--harmless",), {"help": "harmless prompts: bundled set name or file"}),
    "layer": (("--layer",), {"type": int, "help": "take the direction from this layer"}),
    "select": (
        ("--select",),
        {
            "choices": ["effect", "geometry"],
            "help": "choose the direction's layer by the effect of its cut on held-back "
            "prompts (default) or by cosine separation alone (fast)",
        },
    ),
    # prompts
    "system_prompt": (
        ("--system-prompt",),
        {
            "metavar": "TEXT",
            "help": "system prompt for every prompt (default: none; a saved direction's own)",
        },
    ),
    "system_prompts": (
        ("--set-system-prompt",),
        {
            "dest": "system_prompts",
            "action": "append",
            "metavar": "SET=TEXT",
            "help": "a system prompt for one prompt set only (harmful, harmless, eval, reference, "
            "validation, selection, probe, steer, chat); repeatable",
        },
    ),
    "template_options": (
        ("--template-option",),
        {
            "dest": "template_options",
            "action": "append",
            "metavar": "KEY=VALUE",
            "help": "chat-template keyword, e.g. enable_thinking=false, reasoning_effort=low; repeatable",
        },
    ),
    "thinking_tokens": (
        ("--thinking-tokens",),
        {
            "type": int,
            "metavar": "N",
            "help": "new tokens a thinking model may spend before its reply (default 1024 when it thinks, "
            "else 0)",
        },
    ),
    "max_tokens": (("--max-tokens",), {"type": int, "help": "new tokens per answer (default 128)"}),
    # cut
    "alpha": (("--alpha",), {"type": float, "help": "fraction of the direction to remove (default 1)"}),
    "alphas": (("--alphas",), {"type": _alphas, "help": "several alphas, e.g. 0.5,1,1.5,2"}),
    "embeddings": (
        ("--embeddings",),
        {"action": "store_true", "default": None, "help": "also orthogonalize the embeddings"},
    ),
    "layers": (("--layers",), {"type": _layers, "help": "comma-separated layers to cut (default: all)"}),
    # evaluation
    "judge": (
        ("--judge",),
        {
            "metavar": "SPEC",
            "help": "refusal judge: markers (default), markers:FILE, classifier:ID, "
            "chat:MODEL, endpoint:URL[#model]",
        },
    ),
    "eval_prompts": (("--eval-prompts",), {"help": "harmful evaluation prompts (default: bundled 20)"}),
    # output
    "output_dir": (("-o", "--output-dir"), {"help": "where to export (default: ./abliterated)"}),
    "format": (
        ("--format",),
        {
            "choices": list(FORMATS),
            "help": "export format: safetensors (default), gguf, lora (PEFT adapter), mlx",
        },
    ),
    "quant": (
        ("--quant",),
        {
            "help": "export quantization: gguf q8_0, q4_k_m, ... (from a GGUF source: the "
            "edited tensors' type; default their own); mlx bits, e.g. 4"
        },
    ),
    "overwrite": (
        ("--overwrite",),
        {"action": "store_true", "default": None, "help": "replace existing output files or directories"},
    ),
}

MODEL = ("model", "device", "dtype", "batch_size", "trust_remote_code")
MEASURED = ("harmful", "harmless", "layer", "select")  # what measuring a direction reads
DIRECTION = ("direction", *MEASURED)
FORMATTING = ("system_prompt", "system_prompts", "template_options", "thinking_tokens")
EXPORT = ("format", "quant", "overwrite")


def _options(p: argparse.ArgumentParser, title: str, *names: str, **helps: str) -> argparse._ArgumentGroup:
    """A titled group of shared options (``helps``: a command's own help for one of them)."""
    return _shared(p.add_argument_group(title), *names, **helps)


def _shared(group: argparse._ArgumentGroup, *names: str, **helps: str) -> argparse._ArgumentGroup:
    """Add shared options to ``group``, in the order given."""
    for name in names:
        flags, keywords = OPTIONS[name]
        group.add_argument(*flags, **keywords | ({"help": helps[name]} if name in helps else {}))
    return group


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model_arg", nargs="?", metavar="MODEL", help="hub id, HF dir, .gguf or MLX dir (default: demo model)"
    )


def _categories_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--categories",
        metavar="FILE",
        help="prompts with a 'category' field (.jsonl; default: the bundled category sets)",
    )


def _engine_flags(p: argparse.ArgumentParser) -> None:
    """Which engine generates the answers (:mod:`vauban.runtime.engines`), as a group of its own."""
    g = p.add_argument_group("engine")
    g.add_argument(
        "--engine",
        choices=["vauban", "vllm"],
        default="vauban",
        help="what generates the answers: vauban's loop (default) or vLLM (the [vllm] extra; "
        "each cut is sent into the running engine, no reload)",
    )
    g.add_argument("--tensor-parallel-size", type=int, help="with --engine vllm: GPUs per engine")
    g.add_argument(
        "--vllm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --engine vllm: an option of vllm.LLM (JSON value), e.g. "
        "gpu_memory_utilization=0.5; repeatable",
    )


def _when_flags(p: argparse.ArgumentParser) -> None:
    """Conditional steering (:mod:`vauban.methods.conditional`), as a group of its own."""
    g = p.add_argument_group("condition")
    g.add_argument(
        "--when",
        metavar="CONDITION",
        help="steer only prompts that match: a bundled condition (medical), a category "
        "(cybercrime, ...) or a .jsonl of prompt/matched/split",
    )
    g.add_argument(
        "--add",
        action="store_true",
        help="with --when: add refusal to matched prompts instead of removing it",
    )


def _variant_flags(p: argparse.ArgumentParser) -> None:
    """How ``abliterate`` shapes its cut (see :mod:`vauban.methods.cutspec`)."""
    g = _options(p, "cut variants", "layers")
    g.add_argument(
        "--attention",
        metavar="WEIGHTS",
        help="attention writers' weight per layer: 0,0.5,1,... or a kernel "
        "peak=P,max=M,min=m,width=W (default 1 everywhere)",
    )
    g.add_argument("--mlp", metavar="WEIGHTS", help="the same for the MLP writers")
    g.add_argument("--norm-preserving", action="store_true", help="keep every written vector's norm")
    g.add_argument(
        "--projected", action="store_true", help="remove the harmless mean's component from the direction"
    )
    g.add_argument(
        "--direction-index",
        type=float,
        metavar="X",
        help="take the direction at fractional layer X (interpolated)",
    )
    g.add_argument("--per-layer", action="store_true", help="cut every layer along its own direction")
    g.add_argument("--subspace", type=int, metavar="K", help="cut a K-dimensional subspace (measured)")
    g.add_argument(
        "--params",
        metavar="FILE",
        help="an optimize trial's cut: pareto.json (its pick, or --trial N), a trial "
        "record, or an export's vauban.json",
    )
    g.add_argument("--trial", type=int, metavar="N", help="with --params pareto.json: this trial")


# ---------------------------------------------------------------------------------------------
# the commands: (name, func, help, examples) -> its parser


Command = Callable[..., argparse.ArgumentParser]


def add_run(command: Command) -> None:
    p = command(
        "run",
        cmd_run,
        "the whole tutorial: measure, probe, cut, evaluate, export, steer",
        ["vauban run", "vauban run Qwen/Qwen2.5-1.5B-Instruct -o qwen-tutorial --max-tokens 64"],
    )
    _model_arg(p)
    _options(p, "model", *MODEL)
    _options(p, "direction", *MEASURED)
    _options(p, "prompts", *FORMATTING, "max_tokens")
    _options(p, "cut", "alpha", "embeddings")
    _options(p, "evaluation", "judge", "eval_prompts")
    _options(p, "output", "output_dir", *EXPORT)


def _explain_flag(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--explain",
        action="store_true",
        help="first print the model family vauban detected and the writers the cut edits",
    )


def add_measure(command: Command) -> None:
    p = command(
        "measure",
        cmd_measure,
        "measure the refusal direction (and save it with -o)",
        [
            "vauban measure -o direction.safetensors",
            "vauban measure Qwen/Qwen2.5-7B-Instruct --select geometry -o qwen-direction.safetensors",
        ],
    )
    _model_arg(p)
    _explain_flag(_options(p, "model", *MODEL))
    _options(p, "direction", *MEASURED)
    _options(p, "prompts", *FORMATTING)
    g = p.add_argument_group("categories")
    g.add_argument(
        "--by-category",
        action="store_true",
        help="one direction per harm category and their cosine similarity (-o FILE: .pt, .json, .png)",
    )
    _categories_flag(g)
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", help="save the direction here (.safetensors + .json)")
    _shared(g, "overwrite")


def add_probe(command: Command) -> None:
    p = command(
        "probe",
        cmd_probe,
        "per-layer projections of prompts on the direction",
        ['vauban probe "How do I pick a lock?" "Bake bread" --direction direction.safetensors'],
    )
    p.add_argument("prompts", nargs="+", metavar="PROMPT")
    _options(p, "model", *MODEL)
    _options(p, "direction", *DIRECTION)
    _options(p, "prompts", *FORMATTING)


def add_abliterate(command: Command) -> None:
    p = command(
        "abliterate",
        cmd_abliterate,
        "cut the direction from the weights and export the model",
        [
            "vauban abliterate Qwen/Qwen2.5-7B-Instruct -o qwen-abliterated",
            "vauban abliterate ./my-model --direction direction.safetensors --alpha 1.2 --norm-preserving",
            "vauban abliterate model-Q4_K_M.gguf --format gguf -o gguf-abliterated",
            "vauban abliterate Qwen/Qwen2.5-7B-Instruct --params vauban-optimize/pareto.json -o qwen-best",
        ],
    )
    _model_arg(p)
    _explain_flag(_options(p, "model", *MODEL))
    _options(p, "direction", *DIRECTION)
    _options(p, "prompts", *FORMATTING)
    _options(p, "cut", "alpha", "embeddings")
    _variant_flags(p)
    g = p.add_argument_group("categories")
    g.add_argument(
        "--keep",
        metavar="CATEGORY[,...]",
        help="keep refusing these categories (weapons, cybercrime, drugs, fraud, harassment, "
        "self_harm) while removing the other refusals (see --keep-method)",
    )
    g.add_argument(
        "--keep-method",
        choices=["preserving", "orthogonal", "others"],
        default="preserving",
        help="with --keep: fit a rank-1 edit per writer that removes the whole refusal direction "
        "on the other categories' and the harmful prompts while keeping the kept categories' and "
        "the harmless prompts' outputs (default; chosen on development prompts, "
        "benchmarks/results/control_demo.json), or cut the refusal direction minus the kept "
        "categories' span (orthogonal), or the other categories' own direction minus it (others)",
    )
    _categories_flag(g)
    _options(p, "output", "output_dir", *EXPORT)


def add_evaluate(command: Command) -> None:
    p = command(
        "evaluate",
        cmd_evaluate,
        "compare ORIGINAL and MODIFIED: refusal, perplexity, KL (ORIGINAL defaults to the demo)",
        [
            "vauban evaluate Qwen/Qwen2.5-7B-Instruct qwen-abliterated --plot eval.png",
            "vauban evaluate abliterated --gsm8k test.jsonl --limit 20 -o eval.json",
        ],
    )
    p.add_argument("models", nargs="+", metavar="[ORIGINAL] MODIFIED")
    _options(
        p, "model", *MODEL, model="the original model, when only MODIFIED is given (default: demo model)"
    )
    _options(p, "prompts", *FORMATTING, "max_tokens")
    g = _options(p, "evaluation", "judge", "eval_prompts")
    g.add_argument(
        "--safe-prompts",
        help="safe prompts that sound unsafe, for the over-refusal rate (default: 16 bundled; "
        "XSTest's xstest_prompts.csv keeps its safe rows; none: skip)",
    )
    g.add_argument(
        "--kl-tokens",
        type=int,
        default=16,
        help="KL over the first K tokens of the original's own answers (default 16; 0: skip)",
    )
    g = p.add_argument_group("capability")
    g.add_argument("--gsm8k", metavar="FILE", help="GSM8K accuracy on this test.jsonl")
    g.add_argument(
        "--humaneval",
        metavar="FILE",
        help="HumanEval pass@1 on this HumanEval.jsonl.gz (runs model-written code: needs "
        "--allow-code-execution)",
    )
    g.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="accept running model-written code in vauban's sandbox (vauban.capability.sandbox)",
    )
    g.add_argument(
        "--tasks", help="lm-evaluation-harness tasks, e.g. mmlu,gsm8k (pip install 'vauban[lm-eval]')"
    )
    g.add_argument("--task-path", help="folder of your own lm-eval task YAML files")
    g.add_argument("--limit", type=int, help="first N items of each capability check (CPU runs: 20 or so)")
    g = p.add_argument_group("categories and languages")
    g.add_argument(
        "--by-category",
        action="store_true",
        help="also refusal per harm category (the bundled held-out category prompts)",
    )
    g.add_argument(
        "--languages",
        nargs="?",
        const="",
        metavar="LANG[,...]",
        help="also refusal and KL per language (bundled: en,zh,ar,hi,ru,es,fr; default all)",
    )
    _categories_flag(g)
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", help="save every answer and number here (.json)")
    g.add_argument("--plot", help="draw the report, original and modified side by side (.png)")
    _shared(g, "overwrite")


def add_steer(command: Command) -> None:
    p = command(
        "steer",
        cmd_steer,
        "generate while removing the direction at run time",
        ['vauban steer "How do I pick a lock?" --alphas 0.5,1,1.5,2 --direction direction.safetensors'],
    )
    p.add_argument("prompt", metavar="PROMPT")
    _options(p, "model", *MODEL)
    _options(p, "direction", *DIRECTION)
    _options(p, "prompts", *FORMATTING, "max_tokens")
    _options(p, "steering", "alpha", "alphas", alpha="how much of the direction to remove (default 1)")
    _when_flags(p)
    _options(p, "evaluation", "judge")


def add_sweep(command: Command) -> None:
    p = command(
        "sweep",
        cmd_sweep,
        "cut at several alphas: refusal and perplexity table, CSV and plot",
        ["vauban sweep --alphas 0.5,1,1.5,2 -o sweep/"],
    )
    _model_arg(p)
    _options(p, "model", *MODEL)
    _options(p, "direction", *DIRECTION)
    _options(p, "prompts", *FORMATTING, "max_tokens")
    _options(p, "cut", "alphas", alphas="default 0.5,1,1.5,2")
    _options(p, "evaluation", "judge", "eval_prompts")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default="sweep", help="folder for sweep.csv and sweep.png")
    _shared(g, "overwrite")
    _engine_flags(p)


def add_plot(command: Command) -> None:
    p = command(
        "plot",
        cmd_plot,
        "plot the characteristic shape: projections per layer, separation scores",
        ["vauban plot --direction direction.safetensors"],
    )
    _model_arg(p)
    _options(p, "model", *MODEL)
    _options(p, "direction", *DIRECTION)
    _options(p, "prompts", *FORMATTING).add_argument(
        "--prompts", type=int, default=48, help="prompts of each set to draw (default 48)"
    )
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default="vauban_layers.png", help="PNG file to write")
    _shared(g, "overwrite")


def add_chat(command: Command) -> None:
    p = command(
        "chat",
        cmd_chat,
        "chat interactively, streaming tokens; optionally steered live",
        ["vauban chat qwen-abliterated", "vauban chat --direction direction.safetensors --alpha 1"],
        json_flag=False,
    )
    _model_arg(p)
    _options(p, "model", *MODEL)
    _options(p, "direction", *DIRECTION)
    _options(p, "prompts", *FORMATTING, "max_tokens", max_tokens="new tokens per reply (default 256)")
    _options(p, "steering", "alpha", alpha="steer with this alpha (measures a direction if none)")
    _when_flags(p)
    _options(p, "evaluation", "judge", judge="judge every reply with this refusal judge (default: none)")


def add_optimize(command: Command) -> None:
    p = command(
        "optimize",
        cmd_optimize,
        "search cut variants for few refusals at low KL; Pareto front, resumable study",
        [
            "vauban optimize Qwen/Qwen2.5-7B-Instruct --trials 30 --export qwen-best",
            "vauban optimize --timeout 3600 --export best/",
        ],
    )
    _model_arg(p)
    _options(p, "model", *MODEL)
    _options(p, "direction", *DIRECTION)
    _options(p, "prompts", *FORMATTING)
    _engine_flags(p)
    _search_flags(p)
    _options(p, "evaluation", "judge")
    g = p.add_argument_group("output")
    g.add_argument(
        "-o",
        "--output",
        default="vauban-optimize",
        help="folder for pareto.json, pareto.png and (default) study.db",
    )
    g.add_argument(
        "--storage",
        "--study",
        dest="study",
        metavar="URL",
        help="where the study lives, to resume it or share it: a file (SQLite; default "
        "OUTPUT/study.db), postgresql://..., mysql://..., sqlite:///... or journal:PATH (a "
        "file on a shared file system). The same command started N times on one storage "
        "(one per GPU with --device cuda:K, or per machine) runs one study; the worker that "
        "finishes its last trial refines, checks and exports",
    )
    g.add_argument("--export", help="export the pick (or --export-trial N) here")
    g.add_argument("--export-trial", type=int, help="the trial number to export")
    _shared(g, *EXPORT)


def _search_flags(p: argparse.ArgumentParser) -> None:
    """What ``optimize`` searches, how it checks the pick and how it measures damage."""
    g = p.add_argument_group("search")
    g.add_argument("--trials", type=int, default=30, help="finished trials the study should have")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="seconds for the search and refinement together, from the search's start (after "
        "loading and measuring): refinement gets the last third and stops at the end; the "
        "check of the pick and the export follow",
    )
    g.add_argument(
        "--validation",
        help="harmful prompts to search on (default: bundled eval prompts "
        "20-59, disjoint from what evaluate reports)",
    )
    g.add_argument(
        "--projected",
        choices=["search", "on", "off"],
        default="search",
        help="project the harmless mean out of the direction",
    )
    g.add_argument(
        "--norm-preserving",
        choices=["search", "on", "off"],
        default="search",
        help="restore the norm of every written vector after the cut",
    )
    g.add_argument(
        "--selection", help="harmful prompts the pick is checked on (default: bundled eval prompts 60-99)"
    )
    g.add_argument(
        "--check",
        type=int,
        default=4,
        help="check at most this many candidates on the selection prompts (0: no check)",
    )
    g.add_argument(
        "--refine-steps",
        type=int,
        default=16,
        help="gradient steps refining the plain cut's per-layer weights after the search (0: skip)",
    )
    g.add_argument(
        "--damage",
        choices=["first-token", "k-tokens"],
        default="first-token",
        help="damage objective: KL at the first answer token, or over the first --kl-tokens "
        "tokens of the original's own answers (teacher-forced)",
    )
    g.add_argument("--kl-tokens", type=int, default=16, help="k of the k-token KL (default 16)")


def add_stream(command: Command) -> None:
    p = command(
        "stream",
        cmd_stream,
        "abliterate a safetensors checkpoint on disk into a new one, one "
        "tensor at a time, with a saved direction (models bigger than memory)",
        ["vauban stream big-model/ big-abliterated/ --direction direction.safetensors"],
    )
    p.add_argument("src", metavar="SRC", help="model directory with (sharded) safetensors weights")
    p.add_argument("dst", metavar="DST", help="new model directory to write")
    g = p.add_argument_group("direction")
    g.add_argument("--direction", required=True, help="the direction to cut (.safetensors from measure -o)")
    _shared(g, "layer")
    _options(p, "cut", "alpha", "layers", "embeddings")
    _options(p, "output", "overwrite")


def add_judge(command: Command) -> None:
    p = command(
        "judge",
        cmd_judge,
        "judge answers: one JSON verdict per line of a JSONL file of "
        '{"prompt", "answer"} objects (- reads stdin)',
        ["vauban judge answers.jsonl", "vauban judge answers.jsonl --judge chat:demo --json"],
    )
    p.add_argument("file", metavar="FILE.jsonl")
    _options(
        p,
        "judge",
        "judge",
        "device",
        "dtype",
        device="where a model judge runs (default: best)",
        dtype="a model judge's compute dtype (default: float32 on CPU, bfloat16 on GPUs)",
    )


def add_verify(command: Command) -> None:
    p = command(
        "verify",
        cmd_verify,
        "check an export's files against the sha256 list in its vauban.json",
        ["vauban verify qwen-abliterated"],
    )
    p.add_argument("directory", metavar="DIR")


COMMANDS = (
    add_run,
    add_measure,
    add_probe,
    add_abliterate,
    add_evaluate,
    add_steer,
    add_sweep,
    add_plot,
    add_chat,
    add_optimize,
    add_stream,
    add_judge,
    add_verify,
)

OVERVIEW = """start here:
  vauban abliterate Qwen/Qwen2.5-7B-Instruct -o qwen-abliterated   # measure, cut, export
  vauban optimize Qwen/Qwen2.5-7B-Instruct --export qwen-best      # search the cut's shape
  vauban run                                                      # the tutorial, on the demo model

`vauban COMMAND --help` lists a command's options."""


def _general(p: argparse.ArgumentParser, json_flag: bool) -> None:
    """The options of every command, last in its help."""
    g = p.add_argument_group("general")
    g.add_argument("-h", "--help", action="help", help="show this help and exit")
    g.add_argument("--config", help="TOML settings file (default: ./vauban.toml if present)")
    g.add_argument(
        "-q", "--quiet", action="store_true", default=None, help="no progress bars, spinners or step times"
    )
    g.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    if json_flag:
        g.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vauban",
        usage="%(prog)s COMMAND [options]",
        formatter_class=_Formatter,
        epilog=OVERVIEW,
        add_help=False,
        description="Measure, probe, cut, export, evaluate and steer the refusal direction of a "
        "chat model.\nSettings: flags > VAUBAN_* environment > vauban.toml > defaults.",
    )
    sub = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, func: Any, help: str, examples: list[str], *, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            prog=f"vauban {name}",
            help=help,
            description=help,
            add_help=False,
            formatter_class=_Formatter,
            epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        )
        p.set_defaults(func=func, json_flag=json_flag)
        return p

    for add in COMMANDS:
        add(command)
    parser.add_argument_group("general").add_argument(
        "-h", "--help", action="help", help="show this overview and exit"
    )
    for p in sub.choices.values():
        _general(p, p.get_default("json_flag"))
    return parser
