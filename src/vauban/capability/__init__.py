"""Can the cut model still do things? Capability checks run on both sides of a comparison.

One protocol: a check has a ``name`` and ``run(model, tokenizer, *, batch_size)`` returning
its :class:`CapabilityScore` list (one per metric); :func:`vauban.evaluation.evaluating.evaluate` runs each
check on the original and on the cut model (one model object with the cut undone and re-applied
serves both).

- :class:`~vauban.capability.gsm8k.GSM8K`: grade-school maths, greedy, exact match of the final
  number (no extra dependency; pass the ``test.jsonl`` file).
- :class:`~vauban.capability.humaneval.HumanEval`: Python problems, greedy pass@1; the model's
  code and the tests run only in a sandboxed subprocess (:mod:`vauban.capability.sandbox`) and
  only with ``allow_code_execution=True``.
- :class:`~vauban.capability.harness.Harness`: any lm-evaluation-harness task (``mmlu``,
  ``gsm8k``, ``arc_easy`` ...) on the in-memory model (extra ``vauban[lm-eval]``).

Every check takes ``limit`` (the first N items): on the project's 2-core CPU a full GSM8K or
HumanEval run takes hours, a ``limit`` of 20 minutes.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from ..core.errors import VaubanError, check_int


@dataclass(frozen=True)
class CapabilityScore:
    """One check on one model: ``value`` of ``metric`` over ``n`` items, and how long it took."""

    name: str
    metric: str
    value: float
    n: int
    seconds: float
    details: tuple[dict[str, Any], ...] = field(default=(), repr=False, compare=False)

    def summary(self) -> str:
        return f"{self.name}: {self.metric}={self.value:.1%} (n={self.n}, {self.seconds:.0f} s)"

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "value": self.value,
            "n": self.n,
            "seconds": self.seconds,
            "details": list(self.details),
        }


class Capability(Protocol):
    name: str

    def run(
        self, model: nn.Module, tokenizer: Any, *, batch_size: int | None = None
    ) -> list[CapabilityScore]: ...


def read_records(path: str | Path, limit: int | None, what: str) -> list[dict[str, Any]]:
    """The first ``limit`` records of a ``.jsonl`` or ``.jsonl.gz`` file, with file:line errors."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise VaubanError(f"{what}: no file at {file}; pass the path of its .jsonl (or .jsonl.gz) file")
    check_limit(limit)
    opener = gzip.open if file.suffix == ".gz" else open
    records = []
    with opener(file, "rt", encoding="utf-8") as handle:
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise VaubanError(f"{file}:{n}: invalid JSON ({err.msg})") from None
            if limit is not None and len(records) >= limit:
                break
    if not records:
        raise VaubanError(f"{what}: {file} holds no records")
    return records


def check_limit(limit: int | None) -> int | None:
    return None if limit is None else check_int("limit", limit, 1)
