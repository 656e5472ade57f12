"""One error family for everything a user can get wrong.

Every message names the problem and the fix in one line, so the CLI can print it without a
traceback and library users can catch a single type. :func:`check_int` is the one integer
check of arguments (here, below every module that takes one).
"""

from __future__ import annotations

import math
import numbers
from typing import Any


class VaubanError(Exception):
    """Bad input or environment; the message says what was wrong and how to fix it."""


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low``, or a one-line error (bools, floats and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise VaubanError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_layer(layer: Any, num_layers: int) -> int:
    """``layer`` as an int in ``0..num_layers-1``, or a clear error (floats and strings included)."""
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not 0 <= int(layer) < num_layers:
        raise VaubanError(
            f"layer {layer!r} out of range: the model has {num_layers} layers; use one within "
            f"0..{num_layers - 1}"
        )
    return int(layer)


MAX_ALPHA = 1000.0  # far past any useful strength; beyond it float weights overflow to inf


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise VaubanError(f"alpha must be a finite number, got {alpha!r}")
    if abs(alpha) > MAX_ALPHA:
        raise VaubanError(
            f"alpha {alpha:g} is out of range -{MAX_ALPHA:g}..{MAX_ALPHA:g} (1 removes the "
            "direction once); pick a smaller value"
        )
    return float(alpha)
