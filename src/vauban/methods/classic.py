"""Today's cut variants as edit methods: each a :class:`vauban.cutspec.CutSpec` with its flags set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..edit.cutting import Cut
from .cutspec import CutSpec
from .protocol import Inputs


@dataclass(frozen=True)
class Variant:
    """Edit method of a :class:`CutSpec` with ``flags`` fixed and the rest from ``make``'s params
    (``alpha``, ``layers``, ``attention``/``mlp`` kernels, ``direction_index``...)."""

    name: str
    flags: dict[str, Any] = field(default_factory=dict)
    low_rank: bool = True

    def make(self, model: nn.Module, tokenizer: Any, direction: Any, inputs: Inputs, **params: Any) -> Cut:
        spec = CutSpec(**{**self.flags, **params})
        vector = spec.vector(
            model,
            tokenizer,
            direction,
            harmful=list(inputs.harmful),
            harmless=list(inputs.harmless),
            formatting=inputs.formatting,
            batch_size=inputs.batch_size,
        )
        return spec.apply(model, vector)


VARIANTS = (
    Variant("plain"),
    Variant("projected", {"projected": True}),
    Variant("norm_preserving", {"norm_preserving": True}, low_rank=False),
    Variant("per_layer", {"per_layer": True}),
    Variant("subspace", {"subspace": 2}),
)
