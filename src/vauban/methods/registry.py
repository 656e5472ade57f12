"""Edit methods found by name: one module per kind, each behind :class:`.protocol.EditMethod`.

- ``plain``, ``projected``, ``norm_preserving``, ``per_layer``, ``subspace``: the cut variants of
  :mod:`.cutspec` (:mod:`.classic`), any of them with per-layer kernels (``attention``/``mlp``);
- ``harmless_preserving``: the least-squares edit that keeps harmless outputs (:mod:`.preserving`);
- ``keep_preserving``: the same edit keeping the outputs on chosen categories' prompts too, so
  their refusals stay (:mod:`.keeping`, ``abliterate --keep CATEGORY --keep-method preserving``);
- ``norm_preserving_leak_free``: the norm-preserving cut without its leak (:mod:`.leak`);
- ``learned``: the direction moved by gradient for refusal likelihood and KL (:mod:`.learned`);
- ``learned_preserving``: the harmless-preserving edit along that learned direction (:mod:`.learned`).
"""

from __future__ import annotations

from ..core.errors import VaubanError
from .classic import VARIANTS
from .keeping import KeepPreserving
from .leak import LeakFree
from .learned import Learned, LearnedPreserving
from .preserving import HarmlessPreserving
from .protocol import EditMethod

METHODS: dict[str, EditMethod] = {
    m.name: m
    for m in (*VARIANTS, HarmlessPreserving(), KeepPreserving(), LeakFree(), Learned(), LearnedPreserving())
}


def get_method(name: str) -> EditMethod:
    """The edit method called ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise VaubanError(f"no edit method {name!r}; choose one of {', '.join(METHODS)}") from None
