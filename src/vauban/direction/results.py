"""Results as plain, frozen data with one-line ``summary()`` strings.

The CLI, plots, tests and the export record all read these same objects. Tensors are float32
on the CPU so a result never pins accelerator memory.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..core.atomic import write_file
from ..core.errors import VaubanError, check_int, check_layer
from ..edit.vectors import unit_rows, unit_vector
from ..text.formatting import Formatting


@dataclass(frozen=True)
class LayerEffect:
    """What cutting one layer's direction did (see :mod:`vauban.direction.selecting`): ``refusal`` is the
    mean probability of still opening with the original's refusal on held-back harmful
    prompts, ``kl`` the first-token KL(original ‖ cut) on held-back harmless prompts."""

    layer: int
    refusal: float
    kl: float

    def record(self) -> dict[str, Any]:
        return {"layer": self.layer, "refusal": self.refusal, "kl": self.kl}


@dataclass(frozen=True, eq=False)
class DirectionResult:
    """A measured refusal direction.

    ``direction`` is the unit difference-in-means at ``layer_index``; ``cosine_scores`` holds
    each layer's cosine separation (see :mod:`vauban.direction.measuring`). The per-layer means of both
    prompt sets are kept so any layer's direction, and the harmful/harmless projection pattern
    of any prompt, can be derived later without running the model again. ``selection`` says how
    the layer was chosen: ``"effect"`` (by cutting each candidate, :mod:`vauban.direction.selecting`; the
    candidates' ``effects`` and the KL limit ``max_kl`` are kept), ``"geometry"`` (the best
    cosine separation) or ``"forced"`` (a layer asked for).
    ``formatting`` is how
    the prompts were formatted (system prompt, template options, thinking budget): probing,
    steering and evaluating with the direction reuse it unless told otherwise.
    """

    direction: torch.Tensor
    layer_index: int
    cosine_scores: tuple[float, ...]
    d_model: int
    model_path: str
    harmful_means: torch.Tensor | None = field(default=None, repr=False)  # float64 (layers, d)
    harmless_means: torch.Tensor | None = field(default=None, repr=False)
    n_harmful: int = 0
    n_harmless: int = 0
    selection: str = "geometry"
    effects: tuple[LayerEffect, ...] = field(default=(), repr=False)
    max_kl: float | None = None
    formatting: Formatting | None = None

    def __post_init__(self) -> None:
        """Reject a malformed direction when it is made, not deep inside a cut or a hook."""
        check_int("d_model", self.d_model, 1)
        unit_vector(self.direction, self.d_model)  # a finite, non-zero float tensor of d_model values
        if tuple(self.direction.shape) != (self.d_model,):
            raise VaubanError(
                f"the direction has shape {tuple(self.direction.shape)} but d_model is {self.d_model}; "
                "measure it again"
            )
        scores = self.cosine_scores
        if (
            not isinstance(scores, tuple)
            or not scores
            or not all(isinstance(x, float) and math.isfinite(x) for x in scores)
        ):
            raise VaubanError("cosine_scores must be a non-empty tuple of finite floats; measure it again")
        check_layer(self.layer_index, len(scores))
        if self.selection not in ("effect", "geometry", "forced"):
            raise VaubanError(f"selection must be effect, geometry or forced, got {self.selection!r}")
        for name in ("harmful_means", "harmless_means"):  # optional; needed by layer_directions()
            m = getattr(self, name)
            if m is not None and not (
                isinstance(m, torch.Tensor)
                and m.dtype.is_floating_point
                and tuple(m.shape) == (len(scores), self.d_model)
                and bool(torch.isfinite(m).all())
            ):
                raise VaubanError(
                    f"{name} must be a finite ({len(scores)}, {self.d_model}) float tensor or None; "
                    "measure it again"
                )

    @property
    def max_cosine(self) -> float:
        return self.cosine_scores[self.layer_index]

    @property
    def num_layers(self) -> int:
        return len(self.cosine_scores)

    def summary(self) -> str:
        return (
            f"DirectionResult: layer={self.layer_index}, d_model={self.d_model}, "
            f"shape={tuple(self.direction.shape)}, max_cosine={self.max_cosine:.4f}, "
            f"model={self.model_path}"
        )

    def cut_vectors(self) -> torch.Tensor:
        """The direction a cut removes (see :class:`vauban.edit.cutting.Vectors`)."""
        return self.direction

    def layer_directions(self) -> torch.Tensor:
        """Unit difference-in-means direction of every layer, ``(num_layers, d_model)``."""
        if self.harmful_means is None or self.harmless_means is None:
            raise VaubanError("this DirectionResult has no per-layer means; measure it again")
        return unit_rows(self.harmful_means - self.harmless_means)

    def directions_per_layer(self, *, projected: bool = False) -> torch.Tensor:
        """Every layer's own direction as ``(num_layers, 1, d)``, the shape a cut reads per layer;
        ``projected``: each with its component along that layer's harmless mean removed."""
        directions = self.layer_directions()
        if projected:
            m = unit_rows(self.harmless_means).double()  # type: ignore[arg-type]
            u = directions.double()
            directions = unit_rows(u - (u * m).sum(-1, keepdim=True) * m)
        return directions.unsqueeze(1)

    def direction_at(self, index: float, *, projected: bool = False) -> torch.Tensor:
        """The unit direction at fractional layer ``index``: layer ``⌊index⌋``'s direction moved
        linearly toward the next layer's and renormalized (the directions optimize searches)."""
        last = self.num_layers - 1
        if not 0 <= index <= last:
            raise VaubanError(f"direction index {index} out of range 0..{last}")
        low = min(int(index), last - 1) if last > 0 else 0
        t = index - low
        directions = self.directions_per_layer(projected=projected)[:, 0].double()
        if t == 0 or last == 0:
            return directions[low].float()
        return unit_rows((1 - t) * directions[low] + t * directions[low + 1]).reshape(-1)

    def at_layer(self, layer: int, **changes: Any) -> DirectionResult:
        """The same measurement with the direction taken from another layer (``selection``
        becomes ``"forced"`` unless ``changes`` say otherwise)."""
        from dataclasses import replace

        layer = check_layer(layer, self.num_layers)
        return replace(
            self,
            direction=self.layer_directions()[layer].clone(),
            layer_index=layer,
            **{"selection": "forced", **changes},
        )

    def record(self) -> dict[str, Any]:
        """JSON-serializable description (everything but the tensors)."""
        return {
            "formatting": None if self.formatting is None else self.formatting.record(),
            "layer_index": self.layer_index,
            "d_model": self.d_model,
            "model_path": self.model_path,
            "max_cosine": self.max_cosine,
            "cosine_scores": list(self.cosine_scores),
            "n_harmful": self.n_harmful,
            "n_harmless": self.n_harmless,
            "selection": self.selection,
            "max_kl": self.max_kl,
            "effects": [e.record() for e in self.effects],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (safetensors, metadata inside) and a readable ``.json`` beside it.

        Each file is written to a temporary sibling and renamed into place, so a crash leaves
        the previous file (or none), never a truncated one.
        """
        out = Path(path).expanduser()
        if out.suffix != ".safetensors":
            out = out.with_suffix(".safetensors")
        if out.is_dir():
            raise VaubanError(f"{out} is a directory; pass a file path for the direction")
        tensors = {"direction": self.direction.contiguous()}
        if self.harmful_means is not None and self.harmless_means is not None:
            tensors["harmful_means"] = self.harmful_means.contiguous()
            tensors["harmless_means"] = self.harmless_means.contiguous()
        metadata = {"vauban": json.dumps(self.record())}
        text = json.dumps(self.record(), indent=2) + "\n"
        write_file(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        write_file(out.with_suffix(".json"), lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DirectionResult:
        """Read a direction written by :meth:`save`, checking every field (see ``__post_init__``)."""
        file = Path(path).expanduser()
        if file.suffix != ".safetensors":
            file = file.with_suffix(".safetensors")
        if not file.is_file():
            raise VaubanError(f"no direction file at {file}; pass the .safetensors path written by save()")
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {})["vauban"])
            tensors = load_file(str(file))
            return cls(
                direction=tensors["direction"],
                layer_index=int(meta["layer_index"]),
                cosine_scores=tuple(float(x) for x in meta["cosine_scores"]),
                d_model=int(meta["d_model"]),
                model_path=str(meta["model_path"]),
                harmful_means=tensors.get("harmful_means"),
                harmless_means=tensors.get("harmless_means"),
                n_harmful=int(meta.get("n_harmful", 0)),
                n_harmless=int(meta.get("n_harmless", 0)),
                selection=str(meta.get("selection", "geometry")),
                effects=tuple(
                    LayerEffect(int(e["layer"]), float(e["refusal"]), float(e["kl"]))
                    for e in meta.get("effects", [])
                ),
                max_kl=None if meta.get("max_kl") is None else float(meta["max_kl"]),
                formatting=Formatting.from_record(meta.get("formatting")),
            )
        except VaubanError as err:
            raise VaubanError(f"{file}: {err}") from None
        except Exception as err:  # safetensors' own error type, bad JSON, missing or mistyped keys
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise VaubanError(
                f"{file} is not a valid vauban direction file ({type(err).__name__}: {reason}); "
                "save it again with DirectionResult.save"
            ) from None


@dataclass(frozen=True, eq=False)
class SubspaceResult:
    """A k-dimensional refusal subspace measured at one layer (see
    :func:`vauban.direction.measuring.measure_subspace`).

    ``basis`` holds ``k`` orthonormal rows; row 0 is the difference-in-means direction, the
    others the strongest directions of the per-prompt differences orthogonal to it, in order.
    ``singular_values`` says how much of those differences each row carries.
    """

    basis: torch.Tensor  # float32 (k, d_model)
    layer_index: int
    singular_values: tuple[float, ...]
    d_model: int
    model_path: str
    formatting: Formatting | None = None

    @property
    def k(self) -> int:
        return int(self.basis.shape[0])

    def cut_vectors(self) -> torch.Tensor:
        """The subspace a cut removes (see :class:`vauban.edit.cutting.Vectors`)."""
        return self.basis

    def summary(self) -> str:
        values = ", ".join(f"{v:.2f}" for v in self.singular_values)
        return (
            f"SubspaceResult: k={self.k}, layer={self.layer_index}, d_model={self.d_model}, "
            f"singular_values=({values}), model={self.model_path}"
        )


@dataclass(frozen=True)
class ProbeResult:
    """Projection of one prompt's last-token residual onto the direction, after every layer."""

    prompt: str
    projections: tuple[float, ...]
    layer_index: int
    model_path: str

    def summary(self) -> str:
        peak = max(range(len(self.projections)), key=lambda i: self.projections[i])
        return (
            f"ProbeResult: layers={len(self.projections)}, "
            f"at_layer_{self.layer_index}={self.projections[self.layer_index]:+.4f}, "
            f"peak={self.projections[peak]:+.4f}@{peak}, prompt={self.prompt!r}"
        )


@dataclass(frozen=True)
class BorderlineResult:
    """A probe set against the measured harmful and harmless patterns (per-layer means)."""

    probe: ProbeResult
    harmful: tuple[float, ...]
    harmless: tuple[float, ...]

    @property
    def position(self) -> float:
        """At the direction's layer: 0 = the harmless mean, 1 = the harmful mean."""
        layer = self.probe.layer_index
        span = self.harmful[layer] - self.harmless[layer]
        return (self.probe.projections[layer] - self.harmless[layer]) / span if span else 0.0

    @property
    def closer_to(self) -> str:
        return "harmful" if self.position > 0.5 else "harmless"

    def summary(self) -> str:
        layer = self.probe.layer_index
        return (
            f"BorderlineResult: layer={layer}, projection={self.probe.projections[layer]:+.4f}, "
            f"harmless_mean={self.harmless[layer]:+.4f}, harmful_mean={self.harmful[layer]:+.4f}, "
            f"position={self.position:.2f}, closer_to={self.closer_to}, prompt={self.probe.prompt!r}"
        )


def directions_per_layer(result: DirectionResult, *, projected: bool = False) -> torch.Tensor:
    """``vauban.directions_per_layer``: :meth:`DirectionResult.directions_per_layer`."""
    return result.directions_per_layer(projected=projected)


def direction_at(result: DirectionResult, index: float, *, projected: bool = False) -> torch.Tensor:
    """``vauban.direction_at``: :meth:`DirectionResult.direction_at`."""
    return result.direction_at(index, projected=projected)
