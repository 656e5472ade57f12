"""One error family for everything a user can get wrong.

Every message names the problem and the fix in one line, so the CLI can print it without a
traceback and library users can catch a single type. :func:`check_int` is the one integer
check of arguments (here, below every module that takes one).
"""

from __future__ import annotations

import numbers
from typing import Any


class VaubanError(Exception):
    """Bad input or environment; the message says what was wrong and how to fix it."""


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low``, or a one-line error (bools, floats and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise VaubanError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)
