"""The options that several ``vauban`` commands share, written once, and the parser's look.

:data:`OPTIONS` holds each shared option (flags and argparse keywords); :func:`options` adds a
titled group of them to a command's parser, and the ``*_flag(s)`` functions add the groups that
a few commands share (engine, condition, cut variants). :class:`Parser` turns a usage mistake
into one line naming the fix; :class:`Formatter` keeps examples line by line. The commands
themselves are in :mod:`vauban.cli.parser`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any, NoReturn

from ..exports.formats import FORMATS
from ..methods import FITTED


class Formatter(argparse.RawDescriptionHelpFormatter):
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


class Parser(argparse.ArgumentParser):
    """Usage mistakes as one line naming the fix, like every other vauban error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vauban: error: {message} (see: {self.prog} --help)\n")


def comma_list(kind: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """An argparse type: comma-separated values of ``kind`` (empty items skipped)."""

    def parse(text: str) -> list[Any]:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


alphas = comma_list(float, "numbers")
layer_list = comma_list(int, "layer numbers")


def device(text: str) -> str:
    if not re.fullmatch(r"cpu|mps|auto|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N, mps or auto, got {text!r}")
    return text


# ---------------------------------------------------------------------------------------------
# shared options, written once; a command picks the ones it reads

Option = tuple[tuple[str, ...], dict[str, Any]]

OPTIONS: dict[str, Option] = {
    # model
    "model": (("-m", "--model"), {"help": "HF dir, hub id, .gguf or MLX dir (default: demo model)"}),
    "device": (("--device",), {"type": device, "help": "cpu, cuda, cuda:N, mps or auto (default: best)"}),
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
    "alphas": (("--alphas",), {"type": alphas, "help": "several alphas, e.g. 0.5,1,1.5,2"}),
    "embeddings": (
        ("--embeddings",),
        {"action": "store_true", "default": None, "help": "also orthogonalize the embeddings"},
    ),
    "layers": (("--layers",), {"type": layer_list, "help": "comma-separated layers to cut (default: all)"}),
    # evaluation
    "judge": (
        ("--judge",),
        {
            "metavar": "SPEC",
            "help": "refusal judge: markers (default), markers:FILE, classifier:ID, "
            "chat:MODEL, endpoint:URL[#model], learned (a probe over the demo model)",
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


def options(p: argparse.ArgumentParser, title: str, *names: str, **helps: str) -> argparse._ArgumentGroup:
    """A titled group of shared options (``helps``: a command's own help for one of them)."""
    return shared(p.add_argument_group(title), *names, **helps)


def shared(group: argparse._ArgumentGroup, *names: str, **helps: str) -> argparse._ArgumentGroup:
    """Add shared options to ``group``, in the order given."""
    for name in names:
        flags, keywords = OPTIONS[name]
        group.add_argument(*flags, **keywords | ({"help": helps[name]} if name in helps else {}))
    return group


def model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model_arg", nargs="?", metavar="MODEL", help="hub id, HF dir, .gguf or MLX dir (default: demo model)"
    )


def categories_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--categories",
        metavar="FILE",
        help="prompts with a 'category' field (.jsonl; default: the bundled category sets)",
    )


def engine_flags(p: argparse.ArgumentParser) -> None:
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


def when_flags(p: argparse.ArgumentParser) -> None:
    """Conditional steering (:mod:`vauban.methods.conditional`), as a group of its own."""
    g = p.add_argument_group("condition")
    g.add_argument(
        "--when",
        metavar="CONDITION",
        help="steer only prompts that match: a bundled condition (medical), a category "
        "(cybercrime, ...) or a .jsonl of prompt/matched/split; not:CONDITION steers the others "
        "(--when not:weapons removes refusal except on weapons prompts: --keep at run time)",
    )
    g.add_argument(
        "--keep",
        metavar="CATEGORY",
        help="keep refusing CATEGORY's prompts and remove refusal from every other prompt: "
        "--when not:CATEGORY, the run-time keep (closer to the original on each category than "
        "abliterate --keep's weight edit: README, categories)",
    )
    g.add_argument(
        "--add",
        action="store_true",
        help="with --when: add refusal to matched prompts instead of removing it",
    )
    g.add_argument(
        "--condition-kind",
        choices=("probe", "cosine"),
        default="probe",
        help="with --when: a logistic probe over several layers, chosen by cross-validation "
        "(default), or the one-layer cosine condition",
    )
    g.add_argument(
        "--false-match",
        type=float,
        metavar="SHARE",
        help="with --when (probe): put the threshold where at most SHARE of the condition's "
        "unmatched example prompts match, cross-validated, instead of at the best balanced "
        "accuracy; for not:CATEGORY it bounds the other categories' prompts left unsteered "
        "(the run-time --keep: README, categories)",
    )


def variant_flags(p: argparse.ArgumentParser) -> None:
    """How ``abliterate`` shapes its cut (see :mod:`vauban.methods.cutspec`)."""
    g = options(p, "cut variants", "layers")
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
    g.add_argument(
        "--method",
        choices=["plain", "auto", *FITTED],
        default="plain",
        help="auto: the cut chosen by damage at a refusal level among layers, edit methods and "
        "settings, each scored on the held-back quarter of the prompts (docs/methods.md); "
        f"{', '.join(FITTED)}: that edit method, fitted on --harmful/--harmless with its "
        "--method-option settings; these make the whole cut, so the other flags of this group "
        "stay unset (default: plain)",
    )
    g.add_argument(
        "--method-option",
        action="append",
        metavar="KEY=VALUE",
        help="a setting of a fitted --method, repeatable: keep (λ), strength, ridge, prior, rows "
        "(preserving edits), subspace (harmless_preserving over a k-direction subspace), steps, lr, "
        "prompts (learned direction); e.g. --method-option strength=1.3",
    )


# a command's parser, made by build_parser: (name, func, help, examples) -> its parser
Command = Callable[..., argparse.ArgumentParser]
