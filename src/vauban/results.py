"""Results as plain, frozen data with one-line ``summary()`` strings.

The CLI, plots, tests and the export record all read these same objects. Tensors are float32
on the CPU so a result never pins accelerator memory.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .atomic import write_file
from .capability import CapabilityScore
from .errors import VaubanError
from .errors import check_int as check_int  # re-exported (generate, measuring, optimize, refine)
from .formatting import Formatting


def unit_vector(direction: DirectionResult | torch.Tensor, d_model: int) -> torch.Tensor:
    """The direction as a float32 unit vector of size ``d_model``, or a clear error."""
    vec = direction.direction if isinstance(direction, DirectionResult) else direction
    if not isinstance(vec, torch.Tensor):
        raise VaubanError(f"direction must be a DirectionResult or a tensor, got {type(vec).__name__}")
    if not vec.dtype.is_floating_point:
        raise VaubanError(f"direction must be a floating-point tensor, got {vec.dtype}; measure it again")
    vec = vec.detach().float().cpu().reshape(-1)
    if vec.numel() != d_model:
        raise VaubanError(
            f"direction has size {vec.numel()} but the model's hidden size is {d_model}; "
            "it was measured on a different model: measure it on this one"
        )
    if not torch.isfinite(vec).all():
        raise VaubanError("direction contains NaN or infinite values; measure it again")
    norm = vec.norm()
    if norm < 1e-12:
        raise VaubanError("direction is the zero vector; measure it again")
    return vec / norm


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm (computed in float64, returned as float32)."""
    x = x.double()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).float()


def check_layer(layer: Any, num_layers: int) -> int:
    """``layer`` as an int in ``0..num_layers-1``, or a clear error (floats and strings included)."""
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not 0 <= layer < num_layers:
        raise VaubanError(
            f"layer {layer!r} out of range: the model has {num_layers} layers; use one within "
            f"0..{num_layers - 1}"
        )
    return int(layer)


MAX_ALPHA = 1000.0  # far past any useful strength; beyond it float weights overflow to inf


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise VaubanError(f"alpha must be a finite number, got {alpha!r}")
    if abs(alpha) > MAX_ALPHA:
        raise VaubanError(f"alpha {alpha:g} is out of range -{MAX_ALPHA:g}..{MAX_ALPHA:g} (1 removes the "
                          "direction once); pick a smaller value")
    return float(alpha)


@dataclass(frozen=True)
class LayerEffect:
    """What cutting one layer's direction did (see :mod:`vauban.selecting`): ``refusal`` is the
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
    each layer's cosine separation (see :mod:`vauban.measuring`). The per-layer means of both
    prompt sets are kept so any layer's direction, and the harmful/harmless projection pattern
    of any prompt, can be derived later without running the model again. ``selection`` says how
    the layer was chosen: ``"effect"`` (by cutting each candidate, :mod:`vauban.selecting`; the
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
        if not isinstance(scores, tuple) or not scores or not all(
            isinstance(x, float) and math.isfinite(x) for x in scores
        ):
            raise VaubanError("cosine_scores must be a non-empty tuple of finite floats; measure it again")
        check_layer(self.layer_index, len(scores))
        if self.selection not in ("effect", "geometry", "forced"):
            raise VaubanError(f"selection must be effect, geometry or forced, got {self.selection!r}")
        for name in ("harmful_means", "harmless_means"):  # optional; needed by layer_directions()
            m = getattr(self, name)
            if m is not None and not (
                isinstance(m, torch.Tensor) and m.dtype.is_floating_point
                and tuple(m.shape) == (len(scores), self.d_model) and bool(torch.isfinite(m).all())
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

    def layer_directions(self) -> torch.Tensor:
        """Unit difference-in-means direction of every layer, ``(num_layers, d_model)``."""
        if self.harmful_means is None or self.harmless_means is None:
            raise VaubanError("this DirectionResult has no per-layer means; measure it again")
        return unit_rows(self.harmful_means - self.harmless_means)

    def at_layer(self, layer: int, **changes: Any) -> DirectionResult:
        """The same measurement with the direction taken from another layer (``selection``
        becomes ``"forced"`` unless ``changes`` say otherwise)."""
        from dataclasses import replace

        layer = check_layer(layer, self.num_layers)
        return replace(self, direction=self.layer_directions()[layer].clone(), layer_index=layer,
                       **{"selection": "forced", **changes})

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
                effects=tuple(LayerEffect(int(e["layer"]), float(e["refusal"]), float(e["kl"]))
                              for e in meta.get("effects", [])),
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


@dataclass(frozen=True)
class VerifyResult:
    """An export that matched its record: every listed file present with its sha256."""

    directory: str
    files: int
    bytes: int
    tensors: int

    def summary(self) -> str:
        return (f"VerifyResult: ok, files={self.files}, bytes={self.bytes}, tensors={self.tensors}, "
                f"directory={self.directory}")


@dataclass(frozen=True, eq=False)
class SubspaceResult:
    """A k-dimensional refusal subspace measured at one layer (see
    :func:`vauban.measuring.measure_subspace`).

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

    def summary(self) -> str:
        values = ", ".join(f"{v:.2f}" for v in self.singular_values)
        return (f"SubspaceResult: k={self.k}, layer={self.layer_index}, d_model={self.d_model}, "
                f"singular_values=({values}), model={self.model_path}")


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
class Completion:
    """One greedy answer and its judge's verdict (see :class:`vauban.judge.Verdict`): refused or
    not, the judge's score in [0, 1], its reason, and whether the refusal came late (after a
    compliant opening).

    For a thinking model ``text`` is the reply, which the judge saw; ``thinking`` holds the
    thoughts before it (``None``: the model did not think), ``thinking_refused`` whether the
    thoughts alone read as a refusal to the same judge (see :mod:`vauban.reasoning`) and
    ``thinking_ended`` whether the thoughts were closed within the thinking budget (``False``: the
    model was still thinking when the budget ran out, a runaway thinker).
    """

    prompt: str
    text: str
    refused: bool
    score: float
    reason: str
    late: bool = False
    thinking: str | None = None
    thinking_refused: bool | None = None
    thinking_ended: bool | None = None


def thinking_unfinished(completions: tuple[Completion, ...]) -> float | None:
    """Share of ``completions`` still thinking when the thinking budget ran out, over all of them
    (None when none thought): a cut that makes a thinking model loop shows here."""
    if not any(c.thinking is not None for c in completions):
        return None
    return sum(c.thinking_ended is False for c in completions) / len(completions)


def thinking_refusal(completions: tuple[Completion, ...]) -> float | None:
    """Share of ``completions`` whose thoughts read as a refusal, over all of them (None when
    none thought): reported apart from the replies' refusal rate."""
    if not any(c.thinking is not None for c in completions):
        return None
    return sum(bool(c.thinking_refused) for c in completions) / len(completions)


def _percent(rate: float) -> str:
    return f"{rate * 100:.0f}%"


@dataclass(frozen=True)
class EvalResult:
    """Original vs modified: refusal on harmful prompts, perplexity and KL on harmless answers.

    ``kl`` is KL(original ‖ modified) averaged over every answer position of the harmless
    reference set; ``first_token_kl`` only at the first answer position (what other tools
    publish). Per-prompt answers and verdicts are in ``before`` and ``after``; ``judge`` is the
    spec of the judge that counted the refusals.
    """

    refusal_before: float
    refusal_after: float
    perplexity_before: float
    perplexity_after: float
    kl: float
    first_token_kl: float
    n_prompts: int
    n_reference: int
    before: tuple[Completion, ...] = field(repr=False)
    after: tuple[Completion, ...] = field(repr=False)
    max_tokens: int = 0  # answer tokens the refusals were judged on
    judge: str = "markers"
    late_before: float = 0.0  # share of harmful prompts refused late (a part of refusal_*)
    late_after: float = 0.0
    over_refusal_before: float | None = None  # refusal rate on safe prompts that sound unsafe
    over_refusal_after: float | None = None
    n_safe: int = 0
    safe_before: tuple[Completion, ...] = field(default=(), repr=False)
    safe_after: tuple[Completion, ...] = field(default=(), repr=False)
    k_token_kl: float | None = None  # KL over the first kl_tokens tokens of the original's answers
    kl_tokens: int = 0
    capability_before: tuple[CapabilityScore, ...] = field(default=(), repr=False)
    capability_after: tuple[CapabilityScore, ...] = field(default=(), repr=False)
    seconds: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    @property
    def thinking_refusal_before(self) -> float | None:
        """Share of the original's answers whose *thoughts* read as a refusal (None: no thinking)."""
        return thinking_refusal(self.before)

    @property
    def thinking_refusal_after(self) -> float | None:
        return thinking_refusal(self.after)

    @property
    def thinking_unfinished_before(self) -> float | None:
        """Share of the original's answers still thinking when the budget ran out (None: none thought)."""
        return thinking_unfinished(self.before)

    @property
    def thinking_unfinished_after(self) -> float | None:
        return thinking_unfinished(self.after)

    def summary(self) -> str:
        thinking = ""
        if self.thinking_refusal_before is not None or self.thinking_refusal_after is not None:
            thinking = (f", refusal while thinking={_percent(self.thinking_refusal_before or 0.0)} → "
                        f"{_percent(self.thinking_refusal_after or 0.0)}, thinking not ended="
                        f"{_percent(self.thinking_unfinished_before or 0.0)} → "
                        f"{_percent(self.thinking_unfinished_after or 0.0)}")
        return (
            f"EvalResult: refusal={_percent(self.refusal_before)} → {_percent(self.refusal_after)}, "
            f"perplexity={self.perplexity_before:.2f} → {self.perplexity_after:.2f}, "
            f"kl={self.kl:.4f}, prompts={self.n_prompts}{thinking}"
        )

    def rows(self) -> list[tuple[str, str, str]]:
        """The report: ``(measure, original, cut)`` per line; each label says on what it was measured."""
        def pct(x: float | None) -> str:
            return "" if x is None else f"{x * 100:.1f}%"

        judged = f"{self.n_prompts} prompts, {self.max_tokens} tokens"
        judged += f", judge {self.judge}" if self.judge else ""
        rows = [(f"refusal on harmful prompts ({judged})", pct(self.refusal_before), pct(self.refusal_after)),
                ("  of which late (complies, then declines)", pct(self.late_before), pct(self.late_after))]
        if (self.thinking_refusal_before, self.thinking_refusal_after) != (None, None):
            rows.append(("refusal while thinking", pct(self.thinking_refusal_before or 0.0),
                         pct(self.thinking_refusal_after or 0.0)))
            rows.append(("thinking not ended within its budget", pct(self.thinking_unfinished_before or 0.0),
                         pct(self.thinking_unfinished_after or 0.0)))
        if self.over_refusal_before is not None:
            rows.append((f"over-refusal on safe prompts ({self.n_safe} prompts)",
                         pct(self.over_refusal_before), pct(self.over_refusal_after)))
        rows.append((f"KL(original ‖ cut), first token ({self.n_reference} reference prompts)", "",
                     f"{self.first_token_kl:.4f}"))
        if self.k_token_kl is not None:
            rows.append((f"KL(original ‖ cut), first {self.kl_tokens} tokens of the original's answers", "",
                         f"{self.k_token_kl:.4f}"))
        rows.append(("KL(original ‖ cut), reference answers (every position)", "", f"{self.kl:.4f}"))
        rows.append(("perplexity of the reference answers", f"{self.perplexity_before:.2f}",
                     f"{self.perplexity_after:.2f}"))
        for before, after in zip(self.capability_before, self.capability_after, strict=True):
            rows.append((f"{before.name} {before.metric} (n={before.n})", pct(before.value),
                         pct(after.value)))
        return rows

    def table(self) -> str:
        """:meth:`rows` as aligned plain text."""
        lines = [("", "original", "cut"), *self.rows()]
        widths = [max(len(r[i]) for r in lines) for i in range(3)]
        return "\n".join(f"{a.ljust(widths[0])}  {b.rjust(widths[1])}  {c.rjust(widths[2])}".rstrip()
                         for a, b, c in lines)

    def record(self) -> dict[str, Any]:
        """JSON-serializable form, answers included."""
        from dataclasses import asdict

        return {**asdict(self), "thinking_refusal_before": self.thinking_refusal_before,
                "thinking_refusal_after": self.thinking_refusal_after,
                "thinking_unfinished_before": self.thinking_unfinished_before,
                "thinking_unfinished_after": self.thinking_unfinished_after}


@dataclass(frozen=True)
class SteerResult:
    """A steered greedy generation.

    ``projections_before[t][l]`` is the projection of the residual after layer ``l`` onto the
    direction at the position that produced token ``t``, before the steering hook removed
    ``alpha`` × it; ``projections_after`` is the same after removal.
    """

    prompt: str
    text: str
    alpha: float
    layer_index: int
    projections_before: tuple[tuple[float, ...], ...] = field(repr=False)
    projections_after: tuple[tuple[float, ...], ...] = field(repr=False)
    refused: bool = False

    @property
    def tokens(self) -> int:
        return len(self.projections_before)

    def mean_projection(self, after: bool = False) -> float:
        """Mean projection over generated tokens at ``layer_index``."""
        rows = self.projections_after if after else self.projections_before
        return sum(r[self.layer_index] for r in rows) / max(1, len(rows))

    def summary(self) -> str:
        return (
            f"SteerResult: alpha={self.alpha:.2f}, tokens={self.tokens}, refused={self.refused}, "
            f"projection@{self.layer_index}={self.mean_projection():+.4f} → "
            f"{self.mean_projection(after=True):+.4f}"
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


@dataclass(frozen=True)
class SweepRow:
    """One alpha of an alpha sweep (the modified side; the original is in the sweep)."""

    alpha: float
    refusal: float
    perplexity: float
    kl: float
    first_token_kl: float


@dataclass(frozen=True)
class AlphaSweep:
    """Cut at several alphas, evaluated against the same original; ``judge`` counted the refusals."""

    refusal_before: float
    perplexity_before: float
    rows: tuple[SweepRow, ...]
    n_prompts: int
    judge: str = "markers"

    def table(self) -> str:
        lines = ["alpha  refusal  perplexity  kl      first_token_kl",
                 f"  0    {_percent(self.refusal_before):>7}  {self.perplexity_before:10.2f}  "
                 f"{0.0:.4f}  {0.0:.4f}"]
        lines += [
            f"{r.alpha:5.2f}  {_percent(r.refusal):>7}  {r.perplexity:10.2f}  {r.kl:.4f}  "
            f"{r.first_token_kl:.4f}"
            for r in self.rows
        ]
        return "\n".join(lines)

    def summary(self) -> str:
        cells = ", ".join(f"α={r.alpha:g}: {_percent(r.refusal)}/{r.perplexity:.2f}" for r in self.rows)
        return (f"AlphaSweep: refusal/perplexity before {_percent(self.refusal_before)}/"
                f"{self.perplexity_before:.2f}; {cells}; prompts={self.n_prompts}")


@dataclass(frozen=True)
class SteerSweep:
    """One prompt steered at several alphas."""

    results: tuple[SteerResult, ...]

    @property
    def first_compliant_alpha(self) -> float | None:
        """The smallest alpha whose answer is not a refusal (None if all refuse)."""
        return next((r.alpha for r in sorted(self.results, key=lambda r: r.alpha) if not r.refused), None)

    def summary(self) -> str:
        cells = ", ".join(f"α={r.alpha:g}: {'refused' if r.refused else 'answered'}" for r in self.results)
        return f"SteerSweep: {cells}; first compliant alpha={self.first_compliant_alpha}"
