"""Export formats: one interface, one module per format.

Every format module has a ``NAME``, ``write(job, folder) -> dict`` and ``check(folder) -> int``
(:class:`Format`). ``write`` fills an empty temporary directory from an :class:`ExportJob` (the
model with its cut applied, the tokenizer, where it came from, the quantization and dtype asked
for) and returns what the record should say about it (``dtype``, ``quantization``, sizes);
``check`` reopens what was written, so :func:`vauban.verify` can tell a complete export from a
truncated one. :func:`vauban.exports.exporting.export` wraps them all: the atomic directory, the model
card, the ``vauban.json`` record with every file's sha256, never overwriting unless asked.

=============  =============================================================  ==============
format         what it writes                                                 needs
=============  =============================================================  ==============
safetensors    a transformers directory in the source's dtype                 (core)
               (``quant="fp8"``: a block-FP8 source kept block FP8)
gguf           one ``.gguf`` for llama.cpp / Ollama / LM Studio               ``[llamacpp]``
lora           a PEFT adapter: ``W' = W + B·A`` with ``B = -a·Q``, ``A = QᵀW``  ``[lora]``
mlx            an mlx-lm directory (4-bit with ``quant="4"``)                 ``[mlx]``
=============  =============================================================  ==============
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from ...core.errors import VaubanError

if TYPE_CHECKING:
    from .base import ExportJob

# Importing this package is cheap (the CLI reads FORMATS before parsing); the format modules,
# which import torch, load on first use.
FORMATS = ("safetensors", "gguf", "lora", "mlx")

__all__ = ["FORMATS", "ExportJob", "Format", "check_options", "get"]


class Format(Protocol):
    NAME: str

    def write(self, job: ExportJob, folder: Path) -> dict[str, Any]: ...

    def check(self, folder: Path) -> int: ...


def get(name: str | None) -> ModuleType:
    """The module writing format ``name`` (``None``: safetensors)."""
    key = (name or "safetensors").lower()
    if key not in FORMATS:
        raise VaubanError(f"unknown export format {name!r}; use one of {', '.join(FORMATS)}")
    return importlib.import_module(f"{__name__}.{key}")


def check_options(name: str | None, quant: str | None) -> ModuleType:
    """The format's module, after checking ``quant`` names something it writes (before any
    model is loaded, so a typo fails in a second)."""
    module = get(name)
    if quant is not None:
        checker = getattr(module, "check_quant", None)
        if checker is None:
            raise VaubanError(
                f"the {module.NAME} format is not quantized (got --quant {quant}); "
                "use --format gguf or --format mlx for a quantized export"
            )
        checker(quant)
    return module


def __getattr__(name: str) -> Any:
    if name == "ExportJob":
        from .base import ExportJob

        return ExportJob
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
