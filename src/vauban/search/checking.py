"""The check of the pick on the selection prompts, like a validation split (why: see
:mod:`vauban.search.optimizing`).

The plain cut, then the candidates lowest search KL first, answer the selection prompts until one
refuses no more than the plain cut; each refusal rate is stored in the study under a key of the
prompts and answer length, so a resumed run reuses it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from .objectives import Scores
from .searching import study_result
from .settings import OptimizeSettings
from .trials import OptimizeResult, Trial, candidates


def checked_pick(
    the_study: Any,
    scores: Scores,
    checking: list[str],
    settings: OptimizeSettings,
    info: dict[str, Any],
    say: Callable[[str], None] | None,
) -> OptimizeResult:
    """The study's result, its pick checked: the plain cut, then up to ``settings.check``
    candidates lowest KL first, answer the selection prompts ``checking``, stopping at the first
    that refuses no more than the plain cut. Each refusal rate (by trial number) is stored in the
    study, so a resumed run reuses it; ``check=0`` skips the check."""
    tokens = settings.selection_tokens
    # a check judge other than the search's has its own stored rates (older studies: none given)
    other = scores.check_judge.spec if scores.check_judge is not scores.judge else None
    checked = stored_checks(the_study, checking, tokens, other) if settings.check else {}
    result = study_result(the_study, settings.fixed, checked, **info)
    if not settings.check or result.plain is None:
        return result

    def selection_refusal(t: Trial) -> float:
        key = str(t.number)
        if key not in checked:
            t0 = time.perf_counter()
            checked[key] = scores.selection_refusal(t.params, checking, tokens)
            _store_checks(the_study, checking, tokens, checked, other)
            if say is not None:
                say(
                    f"check trial {t.number} on {len(checking)} selection prompts: refusal "
                    f"{checked[key]:.1%} ({time.perf_counter() - t0:.1f} s)"
                )
        return checked[key]

    limit = selection_refusal(result.plain)
    for t in candidates(result)[: settings.check]:
        if selection_refusal(t) <= limit:
            break
    result = study_result(the_study, settings.fixed, checked, **info)
    if say is not None:
        say(
            f"pick: trial {result.best.number} (selection refusal {result.best.selection_refusal:.1%}, "
            f"plain cut {limit:.1%})"
        )
    return result


def _checks_key(prompts: Sequence[str], max_tokens: int, judge: str | None = None) -> str:
    made = [list(prompts), max_tokens] + ([judge] if judge is not None else [])
    return hashlib.sha256(json.dumps(made).encode()).hexdigest()[:16]


def stored_checks(
    the_study: Any, prompts: Sequence[str], max_tokens: int, judge: str | None = None
) -> dict[str, float]:
    """Selection refusals already measured in this study with these prompts, answer length and
    check judge (``None``: the search's own)."""
    stored = the_study.user_attrs.get("selection") or {}
    same = stored.get("key") == _checks_key(prompts, max_tokens, judge)
    return dict(stored.get("refusal", {})) if same else {}


def _store_checks(
    the_study: Any, prompts: Sequence[str], max_tokens: int, checked: dict[str, float], judge: str | None
) -> None:
    key = _checks_key(prompts, max_tokens, judge)
    the_study.set_user_attr("selection", {"key": key, "refusal": checked})
