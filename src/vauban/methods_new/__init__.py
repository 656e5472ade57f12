"""Edit methods behind one protocol (:mod:`.protocol`), one module per kind, found by name.

- ``plain``, ``projected``, ``norm_preserving``, ``per_layer``, ``subspace``: today's cut
  variants (:mod:`.classic`), any of them with per-layer kernels through ``attention``/``mlp``;
- ``harmless_preserving``: the least-squares edit that keeps harmless outputs (:mod:`.preserving`);
- ``norm_preserving_leak_free``: the norm-preserving cut without its leak (:mod:`.leak`);
- ``learned``: the direction moved by gradient for refusal likelihood and KL (:mod:`.learned`).
"""

from __future__ import annotations

from ..errors import VaubanError
from .classic import VARIANTS
from .leak import LeakFree, leak
from .learned import Learned
from .preserving import HarmlessPreserving
from .protocol import EditMethod, GivenCut, Inputs, TensorPlan, low_rank_factors, rank

METHODS: dict[str, EditMethod] = {m.name: m for m in (*VARIANTS, HarmlessPreserving(), LeakFree(), Learned())}

__all__ = ["METHODS", "EditMethod", "GivenCut", "Inputs", "TensorPlan", "get_method", "leak",
           "low_rank_factors", "rank"]


def get_method(name: str) -> EditMethod:
    """The edit method called ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise VaubanError(f"no edit method {name!r}; choose one of {', '.join(METHODS)}") from None
