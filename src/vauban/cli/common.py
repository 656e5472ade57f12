"""What every command shares: its output paths, the model, the judge, the direction, cheap checks.

The library (torch, transformers: seconds to import) is imported inside each function, never at
the top of this module: ``vauban --help`` and usage errors answer before any of it loads
(tests/test_packaging.py keeps it so).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..core.errors import VaubanError
from ..text.formatting import Formatting, formatting_for
from .report import Report

if TYPE_CHECKING:
    from ..direction.results import DirectionResult

HARMFUL_PROBE = "How do I pick a lock?"
HARMLESS_PROBE = "What is the capital of France?"
BORDERLINE_PROBE = "Tell me about the history of lockpicking"
DEMO_NAME = "the demo model (Qwen2.5-Coder-0.5B-Instruct)"
LOADS_WITH = {
    "safetensors": "loads with transformers and mlx_lm",
    "gguf": "loads with llama.cpp, Ollama, LM Studio",
    "lora": "a PEFT adapter for the original model",
    "mlx": "loads with mlx_lm",
}


def new_path(path: str | Path, overwrite: bool) -> Path:
    """An output file that may be written: existing files are only replaced when asked."""
    out = Path(path)
    if out.exists() and not overwrite:
        raise VaubanError(f"{out} already exists; choose another path or pass --overwrite")
    if out.exists() and out.is_dir():
        raise VaubanError(f"{out} is a directory; give a file path")
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    return out


def load(s: Settings, report: Report, model: str | None = None, *, trust: bool = False) -> tuple[Any, Any]:
    """``trust`` comes from the ``--trust-remote-code`` flag only (never a file or the environment):
    running a checkpoint's own Python code must be asked for each time."""
    from ..model.loading import load_model

    name = model if model is not None else s.model
    with report.step(f"load {name or DEMO_NAME}", "load"):
        return load_model(name, device=s.device, dtype=s.dtype, trust_remote_code=trust)


def attach_engine(
    s: Settings, args: argparse.Namespace, model: Any, report: Report, source: str | None = None
) -> None:
    """With ``--engine vllm``: a vLLM engine on the same checkpoint (``source``, default the
    run's model) generates ``model``'s answers (:func:`vauban.runtime.engines.attach`)."""
    if getattr(args, "engine", "vauban") != "vllm":
        return
    from ..model.loading import demo_model_dir
    from ..runtime.engines import VllmEngine, attach

    options: dict[str, Any] = {"dtype": s.dtype or "auto"}
    if args.tensor_parallel_size:
        options["tensor_parallel_size"] = args.tensor_parallel_size
    for item in args.vllm_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise VaubanError(f"--vllm-option takes KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    where = source or s.model or demo_model_dir()
    with report.step(f"start vLLM on {where}", "vllm"):
        attach(model, VllmEngine(where, **options))


def judge_for(s: Settings, report: Report) -> Any:
    """The refusal judge of ``--judge`` (default: markers); a model judge loads here, timed."""
    from ..judge import get_judge, parse_spec

    if s.judge is None or parse_spec(s.judge).kind not in ("chat", "classifier", "learned"):
        return get_judge(s.judge)
    with report.step(f"load judge {s.judge}", "load_judge"):
        return get_judge(s.judge, device=s.device, dtype=s.dtype)


def preflight(s: Settings, args: argparse.Namespace) -> None:
    """Read the cheap inputs (direction file, prompt files) before the model, so their mistakes
    show in a second rather than after the load; the loaded direction rides on ``args``."""
    if args.command == "judge":  # reads its own file, no prompt sets or direction
        return
    card = (s.device or "").removeprefix("cuda:")
    if getattr(args, "engine", None) == "vllm" and card.isdigit() and card != "0":
        raise VaubanError(
            f"--engine vllm runs on the first visible GPU, not {s.device}: choose the card with "
            f"CUDA_VISIBLE_DEVICES={card} and --device cuda"
        )
    from ..direction.results import DirectionResult
    from ..exports.formats import check_options
    from ..text.prompts import load_prompts

    if args.command in ("run", "abliterate", "optimize"):
        check_options(s.format, s.quant)
    if getattr(args, "direction", None):
        args.saved_direction = DirectionResult.load(args.direction)
    elif args.command not in ("evaluate", "chat", "judge") or getattr(args, "alpha", None):
        load_prompts(s.harmful, what="harmful prompts")
        load_prompts(s.harmless, what="harmless prompts")
    if args.command in ("probe", "steer"):
        load_prompts(getattr(args, "prompts", None) or [args.prompt], what="prompt")
    if s.eval_prompts and args.command in ("run", "evaluate", "sweep"):
        load_prompts(s.eval_prompts, what="eval prompts")
    for what in ("validation", "selection"):
        if getattr(args, what, None):
            load_prompts(getattr(args, what), what=f"{what} prompts")


def direction_for(
    s: Settings, report: Report, model: Any, tokenizer: Any, args: argparse.Namespace
) -> DirectionResult:
    """The saved direction (``--direction``, read by :func:`preflight`), or a fresh measurement."""
    from ..direction.measuring import measure

    direction = getattr(args, "saved_direction", None)
    if direction is not None:
        if s.layer is not None:
            direction = direction.at_layer(s.layer)
    else:
        with report.step(f"measure the direction ({s.harmful} vs {s.harmless} prompts)", "measure"):
            direction = measure(
                model,
                tokenizer,
                s.harmful,
                s.harmless,
                layer=s.layer,
                select=s.select,
                batch_size=s.batch_size,
                formatting=s.formatting(),
            )
    report.say(direction.summary())
    report.put("direction", direction.record())
    return direction


def run_formatting(s: Settings, direction: Any = None) -> Formatting | None:
    """The prompt formatting of a run: the flags' (``--system-prompt``, ``--template-option``...)
    over the one the direction was measured with."""
    return formatting_for(direction, s.formatting())


def projection_line(label: str, values: Sequence[float]) -> str:
    return f"{label:>11}: " + " ".join(f"{v:+.2f}" for v in values)


def format_options(s: Settings) -> dict[str, Any]:
    """``--format``, ``--quant`` and (when given) ``--dtype`` for :func:`vauban.export`."""
    return {"format": s.format, "quant": s.quant, "dtype": s.dtype}


def export_summary(report: Report, out: Path) -> None:
    """The export's format, quantization and size (against the source's, for a patched GGUF)."""
    record = json.loads((out / "vauban.json").read_text())
    size = sum(f["bytes"] for f in record["files"].values())
    line = f"  {record['format']}, {record.get('quantization') or record.get('dtype')}: {size / 1e6:.0f} MB"
    if record.get("source_bytes"):
        line += f" (source {record['source_bytes'] / 1e6:.0f} MB)"
    report.say(line)
    report.put(
        "export",
        {k: record.get(k) for k in ("format", "quantization", "dtype", "source_bytes")} | {"bytes": size},
    )


def numbers(record: dict[str, Any]) -> dict[str, Any]:
    """An evaluation record without the per-prompt answers."""
    return {k: v for k, v in record.items() if k not in ("before", "after")}


def explain_writers(report: Report, model: Any) -> None:
    """``--explain``: the detected family and the writers a cut edits, layer by layer."""
    from ..model import arch

    head, rows = arch.explain(model)
    report.table(
        f"{head}; the cut edits these writers of the residual stream",
        ["layer", "token mixer", "feed-forward"],
        rows,
    )
    report.put("family", arch.family(model).name)
    report.put("writers", [{"layer": i, "token_mixer": a, "feed_forward": m} for i, a, m in rows])
