"""GSM8K (Cobbe et al., 2021): grade-school maths word problems, scored by the final number.

Each question goes to the model as one chat turn asking for step-by-step reasoning and a last
line ``The answer is N.``; the answer is greedy (``max_tokens``, stopping at end of turn). The
predicted number is, in order of preference, the one after "the answer is", after ``####``, in a
LaTeX ``\\boxed{}``, or else the last number in the text; the gold number is the one after
``####`` in the dataset's answer. Both are normalised (thousands separators, ``$`` and a
trailing ``.0`` dropped) and compared exactly: accuracy is the share that match. Zero-shot, so
it measures what the chat model does when asked, not few-shot pattern completion (use the
harness's ``gsm8k`` task for the standard few-shot number).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..runtime.generating import generate
from . import CapabilityScore, check_limit, read_records

PROMPT = (
    "{question}\n\nSolve this step by step. On the last line, give only the final number as: The answer is N."
)
_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"


def normalize(number: str) -> str:
    """``"$1,234.50"`` → ``"1234.5"``; ``"3.0"`` → ``"3"``."""
    text = number.replace(",", "").replace("$", "").rstrip(".")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or number


def final_number(text: str) -> str | None:
    """The answer's final number (see the module docstring), normalised; ``None`` if none."""
    patterns = (rf"answer is[:\s]*\**\s*({_NUMBER})", rf"####\s*({_NUMBER})", rf"\\boxed\{{\s*({_NUMBER})")
    for pattern in patterns:
        found = re.findall(pattern, text, flags=re.IGNORECASE)
        if found:
            return normalize(found[-1])
    numbers = re.findall(_NUMBER, text)
    return normalize(numbers[-1]) if numbers else None


def gold_number(answer: str) -> str:
    return normalize(answer.split("####")[-1].strip())


@dataclass(frozen=True)
class GSM8K:
    """GSM8K accuracy on the first ``limit`` problems of ``path`` (the dataset's ``test.jsonl``)."""

    path: str | Path
    limit: int | None = None
    max_tokens: int = 256
    name: str = "gsm8k"

    def __post_init__(self) -> None:
        check_limit(self.limit)

    def run(
        self, model: nn.Module, tokenizer: Any, *, batch_size: int | None = None
    ) -> list[CapabilityScore]:
        problems = read_records(self.path, self.limit, "GSM8K")
        t0 = time.perf_counter()
        answers = generate(
            model,
            tokenizer,
            [PROMPT.format(question=p["question"]) for p in problems],
            max_tokens=self.max_tokens,
            batch_size=batch_size,
            desc="gsm8k",
        )
        details = []
        for problem, answer in zip(problems, answers, strict=True):
            gold, predicted = gold_number(problem["answer"]), final_number(answer)
            details.append(
                {
                    "question": problem["question"],
                    "gold": gold,
                    "predicted": predicted,
                    "correct": predicted == gold,
                    "answer": answer,
                }
            )
        correct = sum(d["correct"] for d in details)
        return [
            CapabilityScore(
                self.name,
                "accuracy",
                correct / len(details),
                len(details),
                round(time.perf_counter() - t0, 1),
                tuple(details),
            )
        ]
