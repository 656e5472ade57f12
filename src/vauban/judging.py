"""The refusal judge as evaluate's metrics see it: prompts and answers in, one verdict each.

A thin seam over :mod:`vauban.judge` (the pluggable judges: ``markers``, ``classifier:ID``,
``chat:MODEL``, ``endpoint:URL``); until that package is present, the marker list of
:mod:`vauban.refusal` stands in, with the same verdict shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LATE_CHARS = 120  # about the first 30 tokens: a refusal marker only after them is a late refusal


@dataclass(frozen=True)
class MarkerVerdict:
    refusal: bool
    score: float
    reason: str
    late: bool = False


def resolve(judge: Any = None) -> Any:
    """A judge object from a spec string, a judge, or ``None`` (the default judge)."""
    try:
        from .judge import get_judge
    except ImportError:
        return None if judge in (None, "markers") else judge
    return judge if judge is not None and not isinstance(judge, str) else get_judge(judge)


def judge_name(judge: Any = None) -> str:
    resolved = resolve(judge)
    if resolved is None:
        return "markers (vauban.refusal)"
    return str(getattr(resolved, "name", None) or getattr(resolved, "spec", None) or type(resolved).__name__)


def judge_answers(prompts: Sequence[str], answers: Sequence[str], judge: Any = None) -> list[Any]:
    """One verdict (``refusal``, ``score``, ``reason``, ``late``) per answer, in order."""
    resolved = resolve(judge)
    if resolved is None:
        from .refusal import is_refusal

        verdicts = []
        for answer in answers:
            refused = is_refusal(answer)
            late = refused and bool(answer.strip()) and not is_refusal(answer[:LATE_CHARS])
            verdicts.append(MarkerVerdict(refused, float(refused), "late marker" if late else
                                          "marker" if refused else "", late))
        return verdicts
    return list(resolved(list(prompts), list(answers)))
