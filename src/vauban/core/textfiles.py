"""Reading the text files a user points vauban at (prompt files, JSON Lines of answers to judge):
UTF-8, and every failure a one-line :class:`VaubanError` naming the file, or ``file:line`` inside
JSON Lines. Light on purpose (no torch, no transformers): ``vauban judge FILE`` imports it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import VaubanError


def read_text(path: str | os.PathLike[str]) -> str:
    """A UTF-8 text file's contents; a file that cannot be read or decoded is a one-line error."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise VaubanError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as err:
        raise VaubanError(f"cannot read {path}: {err.strerror or err}") from None


def parse_json(text: str, where: str) -> Any:
    """``json.loads(text)``; invalid JSON is a one-line error that starts with ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise VaubanError(f"{where}: invalid JSON ({err.msg}, column {err.colno})") from None


def json_lines(text: str, name: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` for each non-blank line of JSON Lines ``text``, parsed as it is
    reached; an error names ``name:line``."""
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield n, parse_json(line, f"{name}:{n}")
