"""Export a model as a complete, self-describing directory, atomically, in any format.

The format (:mod:`vauban.exports.formats`: a transformers directory, a GGUF file, a PEFT adapter, an
mlx-lm directory) writes the weights; this module wraps every format alike: the direction, a
model card (``README.md``) and a JSON record of how the model was made (format, quantization,
dtype, the cut, library versions), with every file's sha256. Everything is written into a
temporary sibling directory that is flushed, checked and renamed into place only when complete
(:mod:`vauban.core.atomic`), so an interrupted export leaves nothing half-written and an existing
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

import torch
from torch import nn

from ..core.atomic import building_dir, temp_name
from ..core.errors import VaubanError
from ..core.version import __version__
from ..direction.results import DirectionResult
from ..edit.cutting import Cut, active_cuts
from ..model.loading import model_label
from . import formats
from .formats.base import mlx_compatible_config
from .formats.card import write_card
from .verifying import RECORD_FILE, file_hashes

__all__ = ["DIRECTION_FILE", "check_output_dir", "cut_record", "export", "mlx_compatible_config", "versions"]

DIRECTION_FILE = "vauban_direction.safetensors"


def check_output_dir(output_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Refuse, before any work is done, a target that exists and is not empty (unless
    ``overwrite``) or whose parent cannot be written."""
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise VaubanError(f"output {out} exists and is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise VaubanError(f"output directory {out} is not empty; choose another path or pass overwrite=True")
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


_FORMAT_PACKAGES = {"gguf": ("gguf", "llama_cpp_python"), "lora": ("peft",), "mlx": ("mlx", "mlx-lm")}


def versions(fmt: str = "safetensors") -> dict[str, str]:
    """Versions of Python and of the packages that shape the exported bytes, for the record."""
    # vauban's own version from the code that ran (a source checkout on PYTHONPATH has no metadata)
    out = {"python": platform.python_version(), "vauban": __version__}
    for package in ("torch", "transformers", "safetensors", *_FORMAT_PACKAGES.get(fmt, ())):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[package] = metadata.version(package)
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
        "cut": applied.record(),
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
    format: str = "safetensors",
    quant: str | None = None,
    dtype: str | torch.dtype | None = None,
) -> Path:
    """Write ``model`` (as it is in memory, its cut applied) to ``output_dir`` in ``format``.

    ``format``: ``safetensors`` (a transformers directory), ``gguf`` (llama.cpp, Ollama, LM
    Studio), ``lora`` (a PEFT adapter holding only the cut) or ``mlx`` (an mlx-lm directory);
    see :mod:`vauban.exports.formats`. ``quant``: the quantization (``gguf``: ``q8_0``, ``q4_k_m``, ...;
    from a GGUF source, the type of the re-quantized edited tensors; ``mlx``: bits, ``"4"``).
    ``dtype``: the float dtype written; by default the source's (see
    :mod:`vauban.exports.formats.base`). ``extras`` may write more files (reports, plots) into the
    directory before it is renamed into place, so they appear atomically with the weights.
    Every export gets a model card (``README.md``) and the record ``vauban.json``, which says
    the format and quantization and lists every file's sha256 (:func:`vauban.verify` checks
    them); the files it lists are byte-identical for the same model, tokenizer and direction.
    """
    writer = formats.check_options(format, quant)
    out = check_output_dir(output_dir, overwrite)
    job = formats.ExportJob.of(model, tokenizer, quant=quant, dtype=dtype, name=out.name)
    with building_dir(out, overwrite=overwrite) as tmp:
        written = writer.write(job, tmp)
        if direction is not None:
            direction.save(tmp / DIRECTION_FILE)
        if extras is not None:
            extras(tmp)
        cuts = active_cuts(model)
        full_record = {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": versions(writer.NAME),
            "source": model_label(model),
            **({"cut": cuts[-1].record()} if cuts else {}),
            **({"direction": direction.record()} if direction is not None else {}),
            **(record or {}),
            "format": writer.NAME,
            **written,
        }
        write_card(tmp, full_record, job.source)
        writer.check(tmp)
        full_record["files"] = file_hashes(tmp)
        (tmp / RECORD_FILE).write_text(json.dumps(full_record, indent=2) + "\n")
    return out
