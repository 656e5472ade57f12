"""Export a model as a complete, self-describing directory, atomically.

The directory loads with ``AutoModelForCausalLM.from_pretrained`` and with ``mlx_lm.load``:
safetensors weights, a config without quantization entries (plus the legacy RoPE keys that
mlx_lm reads), tokenizer files with the chat template, the generation config, the direction and
a JSON record of how the model was made. Everything is written into a temporary sibling
directory that is renamed into place only when complete, so an interrupted export leaves
nothing half-written and an existing directory is never clobbered unless asked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import nn

from .cut import Cut
from .errors import VaubanError
from .load import clear_quantizer
from .results import DirectionResult

RECORD_FILE = "vauban.json"
DIRECTION_FILE = "vauban_direction.safetensors"


def check_output_dir(output_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Refuse, before any work is done, a target that exists and is not empty (unless
    ``overwrite``) or whose parent cannot be written."""
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise VaubanError(f"output {out} exists and is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise VaubanError(
            f"output directory {out} is not empty; choose another path or pass overwrite=True"
        )
    probe = out.absolute().parent
    while not probe.exists():
        probe = probe.parent
    try:  # really try: access() says yes to root even on read-only file systems
        tempfile.TemporaryDirectory(dir=probe, prefix=".vauban-write-test-").cleanup()
    except OSError as err:
        raise VaubanError(
            f"cannot write to {probe} ({err.strerror or err}); choose another output_dir"
        ) from None
    return out


def versions() -> dict[str, str]:
    out = {}
    for package in ("vauban", "torch", "transformers", "safetensors"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[package] = metadata.version(package)
    return out


def mlx_compatible_config(config: dict[str, Any]) -> dict[str, Any]:
    """Add the pre-v5 RoPE keys (``rope_theta``, ``rope_scaling``, ``rope_local_base_freq``)
    that mlx_lm reads; transformers 5 writes them only inside ``rope_parameters``."""
    params = config.get("rope_parameters")
    if not isinstance(params, dict):
        return config
    out = dict(config)
    per_type = all(isinstance(v, dict) for v in params.values())
    main = params.get("full_attention", {}) if per_type else params
    if "rope_theta" in main:
        out.setdefault("rope_theta", main["rope_theta"])
    if main.get("rope_type", "default") != "default":
        out.setdefault("rope_scaling", {k: v for k, v in main.items() if k != "rope_theta"})
    if per_type and "rope_theta" in params.get("sliding_attention", {}):
        out.setdefault("rope_local_base_freq", params["sliding_attention"]["rope_theta"])
    return out


def cut_record(source: str, applied: Cut, direction: DirectionResult) -> dict[str, Any]:
    """How an abliterated export was made: the JSON record that travels with its weights."""
    return {
        "source": source,
        "method": "directional ablation (weight orthogonalization)",
        "alpha": applied.alpha,
        "layers": applied.layers,
        "embeddings": applied.embeddings,
        "edited_tensors": len(applied.edited),
        "direction": direction.record(),
    }


def export(
    model: nn.Module,
    tokenizer: Any,
    output_dir: str | os.PathLike[str],
    *,
    direction: DirectionResult | None = None,
    record: dict[str, Any] | None = None,
    overwrite: bool = False,
    extras: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``model`` (as it is in memory, in its current dtype) to ``output_dir``.

    ``extras`` may write more files (reports, plots) into the directory before it is renamed
    into place, so they appear atomically with the weights.
    """
    out = check_output_dir(output_dir, overwrite)
    tmp = None
    try:
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.absolute().parent))
        clear_quantizer(model)
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config_file = tmp / "config.json"
        config = mlx_compatible_config(json.loads(config_file.read_text()))
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if direction is not None:
            direction.save(tmp / DIRECTION_FILE)
        full_record = {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": versions(),
            **(record or {}),
        }
        (tmp / RECORD_FILE).write_text(json.dumps(full_record, indent=2) + "\n")
        if extras is not None:
            extras(tmp)
        if not list(tmp.glob("*.safetensors")):
            raise VaubanError(f"export to {out} produced no weight files")
        _move_into_place(tmp, out)
    except OSError as err:
        raise VaubanError(f"could not write {out}: {err.strerror or err}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is set aside first and removed last."""
    backup = None
    if out.exists():
        backup = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(backup)
    try:
        tmp.rename(out)
    except OSError:
        if backup is not None:
            backup.rename(out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
