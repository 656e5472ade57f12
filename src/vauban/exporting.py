"""Export a model as a complete, self-describing directory, atomically.

The directory loads with ``AutoModelForCausalLM.from_pretrained`` and with ``mlx_lm.load``:
safetensors weights, a config without quantization entries (plus the legacy RoPE keys that
mlx_lm reads), tokenizer files with the chat template, the generation config, the direction and
a JSON record of how the model was made, with every file's sha256. Everything is written into a
temporary sibling directory that is flushed, checked and renamed into place only when complete
(:mod:`vauban.atomic`), so an interrupted export leaves nothing half-written and an existing
directory is never clobbered unless asked (and then replaced in one atomic step).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import nn

from .atomic import building_dir, temp_name
from .cutting import Cut
from .errors import VaubanError
from .loading import clear_quantizer
from .results import DirectionResult
from .verifying import RECORD_FILE, check_weights, file_hashes

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
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=temp_name(out)))  # named so a kill's leftover is swept
    except OSError as err:
        raise VaubanError(
            f"cannot write to {probe} ({err.strerror or err}); choose another output_dir"
        ) from None
    return out


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape the exported bytes, for the record."""
    out = {"python": platform.python_version()}
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
        "formatting": None if direction.formatting is None else direction.formatting.record(),
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
    into place, so they appear atomically with the weights. The record ``vauban.json`` lists
    every file's sha256 (:func:`vauban.verify` checks them) and the library versions; the files
    it lists are byte-identical for the same model, tokenizer and direction.
    """
    out = check_output_dir(output_dir, overwrite)
    with building_dir(out, overwrite=overwrite) as tmp:
        clear_quantizer(model)
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config_file = tmp / "config.json"
        config = mlx_compatible_config(json.loads(config_file.read_text()))
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if direction is not None:
            direction.save(tmp / DIRECTION_FILE)
        if extras is not None:
            extras(tmp)
        if not list(tmp.glob("model*.safetensors")):
            raise VaubanError(f"export to {out} produced no weight files")
        check_weights(tmp)
        full_record = {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": versions(),
            **(record or {}),
            "files": file_hashes(tmp),
        }
        (tmp / RECORD_FILE).write_text(json.dumps(full_record, indent=2) + "\n")
    return out
