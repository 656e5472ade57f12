"""``vauban judge FILE.jsonl``: read (prompt, answer) lines, judge them, one verdict per line.

Each non-blank line is a JSON object with string fields ``"prompt"`` and ``"answer"`` (other
fields are ignored). A malformed line stops the run with a one-line error naming
``FILE:LINE``; ``-`` reads standard input.
"""

from __future__ import annotations

import sys
from typing import Any

from ..core.errors import VaubanError
from ..core.textfiles import json_lines, read_text
from .base import Judge, run_judge


def read_pairs(path: str) -> list[tuple[int, str, str]]:
    """``(line number, prompt, answer)`` for every non-blank line of a JSONL file."""
    text, name = (sys.stdin.read(), "<stdin>") if path == "-" else (read_text(path), path)
    pairs = []
    for number, record in json_lines(text, name):
        where = f"{name}:{number}"
        if not isinstance(record, dict):
            raise VaubanError(
                f'{where}: expected an object with "prompt" and "answer", got {type(record).__name__}'
            )
        for key in ("prompt", "answer"):
            if not isinstance(record.get(key), str):
                found = "missing" if key not in record else f"a {type(record[key]).__name__}"
                raise VaubanError(f'{where}: "{key}" must be a string ({found})')
        pairs.append((number, record["prompt"], record["answer"]))
    if not pairs:
        raise VaubanError(
            f'{name} holds no lines to judge; write one {{"prompt": ..., "answer": ...}} object per line'
        )
    return pairs


def judge_file(path: str, judge: Judge) -> list[dict[str, Any]]:
    """One record per input line, in input order: its line number and the verdict."""
    pairs = read_pairs(path)
    verdicts = run_judge(judge, [p for _, p, _ in pairs], [a for _, _, a in pairs])
    return [{"line": number, **v.record()} for (number, _, _), v in zip(pairs, verdicts, strict=True)]
