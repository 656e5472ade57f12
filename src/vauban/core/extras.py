"""Optional dependencies: heavy packages that only one feature needs live in extras.

``require("optuna", "optimize", "vauban optimize")`` imports and returns the module, or raises
one :class:`VaubanError` line naming the extra that brings it (``pip install 'vauban[optimize]'``).
The extras and what they are for are listed in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import VaubanError


def require(module: str, extra: str, feature: str) -> ModuleType:
    """``module`` imported, or a one-line error: ``feature`` needs it, install ``vauban[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise VaubanError(
            f"{feature} needs {top}, which is not installed: pip install 'vauban[{extra}]'"
        ) from None
