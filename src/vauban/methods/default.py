"""The default's rule: damage at a refusal level, not refusals under a loose damage cap.

Every candidate cut (a layer's direction, an edit method and its settings) is scored on
held-back prompts only (:mod:`vauban.direction.selecting`: refusal score ``r`` = mean probability of
opening with the original's own refusal on held-back harmful prompts the original refuses;
damage ``k`` = first-token KL on held-back harmless prompts). The rule:

    acceptable = { c : r(c) ≤ min r + TOLERANCE };   choose  argmin_{acceptable} k   (ties: lower r)

Why: the old rule (lowest ``r`` among ``k ≤ 0.2``) pays any KL below the cap for the last
thousandth of refusal probability; on the demo model it picked 1/100 refused at first-token KL
0.047 while a cut at 4/100 cost 0.011. Refusal likelihoods within ``TOLERANCE = 0.01`` of each
other differ by one expected refusal per hundred prompts, the resolution of the goal itself
(≤ 1/100 refused), and at that resolution the candidates are equals: among them, the one that
changes the model least wins. The tolerance is absolute (a probability), fixed before any
report prompt was looked at, and the same for every model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import VaubanError

TOLERANCE = 0.01  # refusal likelihood within this of the best counts as the same refusal level


@dataclass(frozen=True)
class Candidate:
    """One scored candidate: what it is (``settings``), its held-back refusal score and KL."""

    name: str
    refusal: float
    kl: float
    settings: dict[str, Any] = field(default_factory=dict)


def choose_by_damage(candidates: Sequence[Candidate], tolerance: float = TOLERANCE) -> Candidate:
    """The lowest-KL candidate among those within ``tolerance`` of the best refusal score."""
    if not candidates:
        raise VaubanError("no candidate cuts to choose from; give at least one")
    best = min(c.refusal for c in candidates)
    acceptable = [c for c in candidates if c.refusal <= best + tolerance]
    return min(acceptable, key=lambda c: (c.kl, c.refusal, c.name))
