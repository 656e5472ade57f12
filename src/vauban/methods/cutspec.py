"""A cut described as data: every variant :func:`vauban.cut` has, from flags or an optimize trial.

``vauban abliterate`` builds a :class:`CutSpec` from its flags, or from ``--params FILE``: the
JSON of an optimize trial (``pareto.json`` with ``--trial N`` or its pick, one trial's record,
an export's ``vauban.json``, or a bare cut record), so any point of a study is reproduced from
the shell. The spec computes the vector the same way :meth:`vauban.search.optimizing.CutParams.vector`
does (:meth:`vauban.DirectionResult.direction_at`), so the export is the trial's cut, bit for bit.

What the fields mean (formulas in :mod:`vauban.edit.cutting` and :mod:`vauban.direction.measuring`):

- ``alpha``, ``layers``, ``embeddings``: how much, where, and whether the embeddings too;
- ``attention`` / ``mlp``: per-layer weights of the attention and MLP writers, one number per
  layer or a :class:`~vauban.edit.cutting.LayerKernel`;
- ``norm_preserving``: every written vector keeps its norm;
- ``direction_index``: the direction at a fractional layer (default: the measured layer);
- ``projected``: the harmless mean's component removed from the direction;
- ``per_layer``: every layer cut along its own direction;
- ``subspace``: a ``k``-dimensional subspace measured at the direction's layer.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import VaubanError, check_alpha, check_int
from ..direction.measuring import measure_subspace
from ..direction.results import DirectionResult
from ..edit.cutting import Cut, Direction, LayerKernel, LayerWeights, cut
from ..text.formatting import Formatting
from ..text.prompts import Prompts

_KERNEL_KEYS = {
    "peak": "peak",
    "max": "max_weight",
    "max_weight": "max_weight",
    "min": "min_weight",
    "min_weight": "min_weight",
    "width": "width",
}


@dataclass(frozen=True)
class CutSpec:
    """Every argument of a cut, as data (see the module docstring)."""

    alpha: float = 1.0
    layers: tuple[int, ...] | None = None
    embeddings: bool = False
    attention: LayerWeights | None = None
    mlp: LayerWeights | None = None
    norm_preserving: bool = False
    direction_index: float | None = None
    projected: bool = False
    per_layer: bool = False
    subspace: int | None = None
    source: dict[str, Any] = field(default_factory=dict, compare=False)  # where --params came from

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        if self.per_layer and (self.direction_index is not None or self.subspace):
            raise VaubanError("per-layer directions exclude --direction-index and --subspace; pick one")
        if self.subspace is not None:
            check_int("subspace", self.subspace, 1)
        if self.subspace and (self.direction_index is not None or self.projected):
            raise VaubanError(
                "a subspace is measured at the direction's layer; drop --direction-index and --projected"
            )

    def vector(
        self,
        model: nn.Module,
        tokenizer: Any,
        direction: DirectionResult,
        *,
        harmful: Prompts = "harmful",
        harmless: Prompts = "harmless",
        formatting: Formatting | None = None,
        batch_size: int | None = None,
    ) -> Direction:
        """What the cut removes: the direction (maybe moved or projected), one per layer, or a
        subspace measured now (the only variant that runs the model)."""
        if self.subspace:
            return measure_subspace(
                model,
                tokenizer,
                harmful,
                harmless,
                k=self.subspace,
                layer=direction.layer_index,
                batch_size=batch_size,
                formatting=formatting if formatting is not None else direction.formatting,
            )
        if self.per_layer:
            return direction.directions_per_layer(projected=self.projected)
        if self.direction_index is None and not self.projected:
            return direction
        index = direction.layer_index if self.direction_index is None else self.direction_index
        return direction.direction_at(index, projected=self.projected)

    def apply(self, model: nn.Module, vector: Direction) -> Cut:
        """Apply the cut of ``vector`` (from :meth:`vector`) to ``model``."""
        return cut(
            model,
            vector,
            alpha=self.alpha,
            layers=self.layers,
            embeddings=self.embeddings,
            attention=self.attention,
            mlp=self.mlp,
            norm_preserving=self.norm_preserving,
        )

    def record(self) -> dict[str, Any]:
        def weights(spec: LayerWeights | None) -> Any:
            return vars(spec) if isinstance(spec, LayerKernel) else None if spec is None else list(spec)

        return {
            "alpha": self.alpha,
            "layers": None if self.layers is None else list(self.layers),
            "embeddings": self.embeddings,
            "attention": weights(self.attention),
            "mlp": weights(self.mlp),
            "norm_preserving": self.norm_preserving,
            "direction_index": self.direction_index,
            "projected": self.projected,
            "per_layer": self.per_layer,
            "subspace": self.subspace,
            "params": self.source or None,
        }

    @classmethod
    def from_params(cls, path: str | os.PathLike[str], trial: int | None = None) -> CutSpec:
        """The cut of an optimize trial, from a JSON file: ``pareto.json`` (trial ``trial``, or
        the study's pick), one trial's record, an export's ``vauban.json``, or a bare cut
        record (``direction_index``, ``attention``, ``mlp``, ``projected``, ``norm_preserving``)."""
        file = Path(path).expanduser()
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except OSError as err:
            raise VaubanError(f"cannot read --params {file}: {err.strerror or err}") from None
        except ValueError as err:
            raise VaubanError(f"--params {file} is not JSON ({err})") from None
        record, number = _trial_cut(data, trial, str(file))
        try:
            return cls(
                direction_index=float(record["direction_index"]),
                attention=_weights(record["attention"], "attention"),
                mlp=_weights(record["mlp"], "mlp"),
                projected=bool(record.get("projected", False)),
                norm_preserving=bool(record.get("norm_preserving", False)),
                source={"file": str(file), "trial": number},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise VaubanError(
                f"--params {file}: not an optimize trial's cut ({type(err).__name__}: {err})"
            ) from None


def _trial_cut(data: Any, trial: int | None, where: str) -> tuple[Mapping[str, Any], int | None]:
    """The cut record inside any of the JSON shapes :meth:`CutSpec.from_params` takes."""
    if not isinstance(data, Mapping):
        raise VaubanError(f"--params {where}: expected a JSON object")
    if isinstance(data.get("optimization"), Mapping):  # an export's vauban.json
        data = data["optimization"].get("trial", {})
    if isinstance(data.get("trials"), list):  # pareto.json
        number = data.get("best") if trial is None else trial
        trials = [t for t in data["trials"] if isinstance(t, Mapping)]
        chosen = next((t for t in trials if t.get("number") == number), None)
        if chosen is None:
            numbers = [t.get("number") for t in trials]
            raise VaubanError(f"--params {where}: no trial {number}; trials: {numbers}")
        data = chosen
    elif trial is not None and data.get("number") not in (None, trial):
        raise VaubanError(f"--params {where} holds trial {data.get('number')}, not {trial}")
    number = data.get("number")
    record = data.get("cut", data)
    if not isinstance(record, Mapping) or "direction_index" not in record:
        raise VaubanError(
            f"--params {where}: no cut found (expected pareto.json, a trial record, an "
            "export's vauban.json, or a record with direction_index/attention/mlp)"
        )
    return record, number


def _weights(spec: Any, what: str) -> LayerWeights:
    if isinstance(spec, Mapping):
        return LayerKernel(**{_KERNEL_KEYS[k]: float(v) for k, v in spec.items()})
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        return tuple(float(w) for w in spec)
    raise VaubanError(f"{what} weights must be a kernel object or a list, got {spec!r}")


def parse_weights(text: str) -> LayerWeights:
    """``--attention`` / ``--mlp``: comma-separated weights, one per layer (``0,0.5,1,1``), or a
    kernel ``peak=P,max=M,min=m,width=W`` (``max`` defaults to 1, ``min`` to 0, ``width`` to
    every layer)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise VaubanError(f"no weights in {text!r}; give numbers per layer or peak=P,max=M,min=m,width=W")
    try:
        if any("=" in p for p in parts):
            pairs = dict(p.split("=", 1) for p in parts)
            unknown = sorted(set(pairs) - set(_KERNEL_KEYS))
            if unknown:
                raise VaubanError(f"unknown kernel keys {unknown} in {text!r}; use peak, max, min, width")
            values = {_KERNEL_KEYS[k]: float(v) for k, v in pairs.items()}
            if "peak" not in values:
                raise VaubanError(f"kernel {text!r} needs peak=LAYER")
            values.setdefault("width", math.inf)
            return LayerKernel(**values)
        return tuple(float(p) for p in parts)
    except ValueError:
        raise VaubanError(
            f"cannot read weights {text!r}; give numbers per layer or peak=P,max=M,min=m,width=W"
        ) from None


_VARIANT_FLAGS = (
    "layers",
    "attention",
    "mlp",
    "norm_preserving",
    "direction_index",
    "projected",
    "per_layer",
    "subspace",
)


def cut_spec(args: Any, *, alpha: float, embeddings: bool) -> CutSpec:
    """The :class:`CutSpec` of ``vauban abliterate``'s flags (an ``argparse`` namespace)."""
    given = [f"--{name.replace('_', '-')}" for name in _VARIANT_FLAGS if getattr(args, name, None)]
    if getattr(args, "trial", None) is not None and not getattr(args, "params", None):
        raise VaubanError("--trial N picks a trial of --params pareto.json; give --params too")
    if getattr(args, "params", None):
        if given or alpha != 1.0 or embeddings:
            extra = given + (["--alpha"] if alpha != 1.0 else []) + (["--embeddings"] if embeddings else [])
            raise VaubanError(f"--params fixes the whole cut; drop {', '.join(extra)}")
        return CutSpec.from_params(args.params, args.trial)
    return CutSpec(
        alpha=alpha,
        layers=tuple(args.layers) if args.layers else None,
        embeddings=embeddings,
        attention=parse_weights(args.attention) if args.attention else None,
        mlp=parse_weights(args.mlp) if args.mlp else None,
        norm_preserving=bool(args.norm_preserving),
        direction_index=args.direction_index,
        projected=bool(args.projected),
        per_layer=bool(args.per_layer),
        subspace=args.subspace,
    )
