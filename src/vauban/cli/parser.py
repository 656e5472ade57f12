"""The ``vauban`` argument parser: each command offers only the options its code reads, in groups.

Shared options are written once (:mod:`vauban.cli.options`); each ``add_*`` function picks the
ones its command reads into titled groups (model, direction, prompts, cut, evaluation, output)
and adds its own; every command gets the general group (help, config file, quiet, debug, JSON). So
``vauban judge --help`` lists no prompt set and no layer: tests/test_cli_help.py compares each
command's options with the settings and arguments its ``cmd_*`` function reads, and parses
every example of the help epilogs and the README. :func:`build_parser` lists the commands in
the pipeline's order: run, measure, probe, abliterate, evaluate, steer, sweep, plot, chat,
optimize, stream, judge, verify.
"""

from __future__ import annotations

import argparse
from typing import Any

from .commands_cut import cmd_abliterate, cmd_optimize, cmd_stream, cmd_verify
from .commands_evaluate import cmd_evaluate, cmd_judge, cmd_sweep
from .commands_measure import cmd_measure, cmd_plot, cmd_probe
from .commands_run import cmd_run
from .commands_steer import cmd_chat, cmd_steer
from .options import (
    DIRECTION,
    EXPORT,
    FORMATTING,
    MEASURED,
    MODEL,
    Command,
    Formatter,
    Parser,
    categories_flag,
    engine_flags,
    model_arg,
    options,
    shared,
    variant_flags,
    when_flags,
)

# ---------------------------------------------------------------------------------------------
# the commands: (name, func, help, examples) -> its parser


def add_run(command: Command) -> None:
    p = command(
        "run",
        cmd_run,
        "the whole tutorial: measure, probe, cut, evaluate, export, steer",
        ["vauban run", "vauban run Qwen/Qwen2.5-1.5B-Instruct -o qwen-tutorial --max-tokens 64"],
    )
    model_arg(p)
    options(p, "model", *MODEL)
    options(p, "direction", *MEASURED)
    options(p, "prompts", *FORMATTING, "max_tokens")
    options(p, "cut", "alpha", "embeddings")
    options(p, "evaluation", "judge", "eval_prompts")
    options(p, "output", "output_dir", *EXPORT)


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
            "vauban measure ./big-model --streamed -o big-direction.safetensors",
        ],
    )
    model_arg(p)
    g = options(p, "model", *MODEL)
    _explain_flag(g)
    g.add_argument(
        "--streamed",
        action="store_true",
        help="for a model bigger than memory: run the safetensors folder one decoder layer at a "
        "time on the CPU (what memory holds are the prompts' activations); then `vauban stream`",
    )
    options(p, "direction", *MEASURED)
    options(p, "prompts", *FORMATTING)
    g = p.add_argument_group("categories")
    g.add_argument(
        "--by-category",
        action="store_true",
        help="one direction per harm category and their cosine similarity (-o FILE: .pt, .json, .png)",
    )
    categories_flag(g)
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", help="save the direction here (.safetensors + .json)")
    shared(g, "overwrite")


def add_probe(command: Command) -> None:
    p = command(
        "probe",
        cmd_probe,
        "per-layer projections of prompts on the direction",
        ['vauban probe "How do I pick a lock?" "Bake bread" --direction direction.safetensors'],
    )
    p.add_argument("prompts", nargs="+", metavar="PROMPT")
    options(p, "model", *MODEL)
    options(p, "direction", *DIRECTION)
    options(p, "prompts", *FORMATTING)


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
    model_arg(p)
    _explain_flag(options(p, "model", *MODEL))
    options(p, "direction", *DIRECTION)
    options(p, "prompts", *FORMATTING)
    options(p, "cut", "alpha", "embeddings")
    variant_flags(p)
    g = p.add_argument_group("categories")
    g.add_argument(
        "--keep",
        metavar="CATEGORY[,...]",
        help="keep refusing these categories (weapons, cybercrime, drugs, fraud, harassment, "
        "self_harm) while removing the other refusals (see --keep-method)",
    )
    g.add_argument(
        "--keep-method",
        choices=["orthogonal", "preserving", "others", "runtime"],
        default="preserving",
        help="with --keep: fit a rank-1 edit per writer that removes the whole refusal direction on "
        "the other categories' and the harmful prompts while keeping the kept categories' and the "
        "harmless prompts' outputs (preserving: the default, chosen by cross-validation, "
        "benchmarks/results/control_cv.json), or cut the refusal direction minus the kept "
        "categories' span at alpha 2 unless --alpha (orthogonal), or cut the other "
        "categories' own direction minus the kept span (others); runtime: an error naming "
        "the chat/steer --when command, since weights cannot carry a run-time condition",
    )
    categories_flag(g)
    options(p, "output", "output_dir", *EXPORT)


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
    options(p, "model", *MODEL, model="the original model, when only MODIFIED is given (default: demo model)")
    options(p, "prompts", *FORMATTING, "max_tokens")
    g = options(p, "evaluation", "judge", "eval_prompts")
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
    categories_flag(g)
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", help="save every answer and number here (.json)")
    g.add_argument("--plot", help="draw the report, original and modified side by side (.png)")
    shared(g, "overwrite")
    engine_flags(p)


def add_steer(command: Command) -> None:
    p = command(
        "steer",
        cmd_steer,
        "generate while removing the direction at run time",
        ['vauban steer "How do I pick a lock?" --alphas 0.5,1,1.5,2 --direction direction.safetensors'],
    )
    p.add_argument("prompt", metavar="PROMPT")
    options(p, "model", *MODEL)
    options(p, "direction", *DIRECTION)
    options(p, "prompts", *FORMATTING, "max_tokens")
    options(p, "steering", "alpha", "alphas", alpha="how much of the direction to remove (default 1)")
    when_flags(p)
    options(p, "evaluation", "judge")


def add_sweep(command: Command) -> None:
    p = command(
        "sweep",
        cmd_sweep,
        "cut at several alphas: refusal and perplexity table, CSV and plot",
        ["vauban sweep --alphas 0.5,1,1.5,2 -o sweep/"],
    )
    model_arg(p)
    options(p, "model", *MODEL)
    options(p, "direction", *DIRECTION)
    options(p, "prompts", *FORMATTING, "max_tokens")
    options(p, "cut", "alphas", alphas="default 0.5,1,1.5,2")
    options(p, "evaluation", "judge", "eval_prompts")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default="sweep", help="folder for sweep.csv and sweep.png")
    shared(g, "overwrite")
    engine_flags(p)


def add_plot(command: Command) -> None:
    p = command(
        "plot",
        cmd_plot,
        "plot the characteristic shape: projections per layer, separation scores",
        ["vauban plot --direction direction.safetensors"],
    )
    model_arg(p)
    options(p, "model", *MODEL)
    options(p, "direction", *DIRECTION)
    options(p, "prompts", *FORMATTING).add_argument(
        "--prompts", type=int, default=48, help="prompts of each set to draw (default 48)"
    )
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default="vauban_layers.png", help="PNG file to write")
    shared(g, "overwrite")


def add_chat(command: Command) -> None:
    p = command(
        "chat",
        cmd_chat,
        "chat interactively, streaming tokens; optionally steered live",
        ["vauban chat qwen-abliterated", "vauban chat --direction direction.safetensors --alpha 1"],
        json_flag=False,
    )
    model_arg(p)
    options(p, "model", *MODEL)
    options(p, "direction", *DIRECTION)
    options(p, "prompts", *FORMATTING, "max_tokens", max_tokens="new tokens per reply (default 256)")
    options(p, "steering", "alpha", alpha="steer with this alpha (measures a direction if none)")
    when_flags(p)
    options(p, "evaluation", "judge", judge="judge every reply with this refusal judge (default: none)")


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
    model_arg(p)
    options(p, "model", *MODEL)
    options(p, "direction", *DIRECTION)
    options(p, "prompts", *FORMATTING)
    engine_flags(p)
    _search_flags(p)
    options(p, "evaluation", "judge")
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
    shared(g, *EXPORT)


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
        "--check-judge",
        metavar="SPEC",
        help="the refusal judge of that check (default: --judge's), e.g. learned",
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
        "tensor at a time, with a saved direction (models bigger than memory; a block-FP8 "
        "checkpoint stays block FP8)",
        ["vauban stream big-model/ big-abliterated/ --direction direction.safetensors"],
    )
    p.add_argument("src", metavar="SRC", help="model directory with (sharded) safetensors weights")
    p.add_argument("dst", metavar="DST", help="new model directory to write")
    g = p.add_argument_group("direction")
    g.add_argument("--direction", required=True, help="the direction to cut (.safetensors from measure -o)")
    shared(g, "layer")
    options(p, "cut", "alpha", "layers", "embeddings")
    options(p, "output", "overwrite")


def add_judge(command: Command) -> None:
    p = command(
        "judge",
        cmd_judge,
        "judge answers: one JSON verdict per line of a JSONL file of "
        '{"prompt", "answer"} objects (- reads stdin)',
        ["vauban judge answers.jsonl", "vauban judge answers.jsonl --judge chat:demo --json"],
    )
    p.add_argument("file", metavar="FILE.jsonl")
    options(
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
    parser = Parser(
        prog="vauban",
        usage="%(prog)s COMMAND [options]",
        formatter_class=Formatter,
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
            formatter_class=Formatter,
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
