"""HumanEval (Chen et al., 2021): Python functions from their docstrings, scored by unit tests.

Each problem's ``prompt`` (signature and docstring) goes to the model as one chat turn asking
for the complete function in a Python code block; the answer is greedy (``max_tokens``,
stopping at end of turn), so pass@1 is the share of problems whose single answer passes. The
program run is the problem's prompt, then the model's code (the first fenced block, else the
whole answer; a complete ``def`` replaces the prompt's stub, a bare body completes it), then the
dataset's ``check`` function called on the entry point. It runs in the sandbox of
:mod:`vauban.capability.sandbox`, and only with ``allow_code_execution=True``: it is code a model
wrote.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import VaubanError
from ..runtime.generating import generate
from . import CapabilityScore, check_limit, read_records
from .sandbox import run_untrusted

PROMPT = (
    "Complete the following Python function. Reply with the complete function, imports included, "
    "in one ```python code block.\n\n```python\n{prompt}```"
)
_FENCE = re.compile(r"```(?:python|py)?[^\n]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(answer: str) -> str:
    """The first fenced code block of ``answer`` (to the end if unclosed), else the answer."""
    found = _FENCE.search(answer)
    return found.group(1) if found else answer


def program(problem: dict[str, Any], answer: str) -> str:
    """The script whose exit status says whether ``answer`` solves ``problem``."""
    return (
        f"{problem['prompt']}\n{extract_code(answer)}\n\n{problem['test']}\n\n"
        f"check({problem['entry_point']})\n"
    )


@dataclass(frozen=True)
class HumanEval:
    """HumanEval pass@1 on the first ``limit`` problems of ``path`` (``HumanEval.jsonl.gz``)."""

    path: str | Path
    limit: int | None = None
    allow_code_execution: bool = False
    max_tokens: int = 384
    timeout: float = 10.0
    name: str = "humaneval"

    def __post_init__(self) -> None:
        check_limit(self.limit)
        if not self.allow_code_execution:
            raise VaubanError(
                "HumanEval runs model-written code: pass allow_code_execution=True "
                "(--allow-code-execution) to accept that (see vauban.capability.sandbox)"
            )

    def run(
        self, model: nn.Module, tokenizer: Any, *, batch_size: int | None = None
    ) -> list[CapabilityScore]:
        problems = read_records(self.path, self.limit, "HumanEval")
        t0 = time.perf_counter()
        answers = generate(
            model,
            tokenizer,
            [PROMPT.format(prompt=p["prompt"]) for p in problems],
            max_tokens=self.max_tokens,
            batch_size=batch_size,
            desc="humaneval",
        )
        details = []
        for problem, answer in zip(problems, answers, strict=True):
            outcome = run_untrusted(program(problem, answer), timeout=self.timeout)
            details.append(
                {
                    "task_id": problem["task_id"],
                    "status": outcome.status,
                    "answer": answer,
                    "output": outcome.output[-300:],
                }
            )
        passed = sum(d["status"] == "passed" for d in details)
        return [
            CapabilityScore(
                self.name,
                "pass@1",
                passed / len(details),
                len(details),
                round(time.perf_counter() - t0, 1),
                tuple(details),
            )
        ]
