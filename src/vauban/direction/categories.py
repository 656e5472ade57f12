"""Refusal per harm category: one direction per category, how alike they are, and a cut that keeps
the refusals of chosen categories.

For category ``c`` with harmful prompts ``H_c`` and the harmless set ``B``, the direction at layer
``l`` is the difference in means ``u_c(l) = normalize(mean(H_c, l) - mean(B, l))`` (the same
estimator as :mod:`vauban.measuring`, per category); their cosine matrix says how much of refusal
the categories share.

A cut that keeps the refusals of the categories ``K`` (``vauban abliterate --keep``) removes
instead of the refusal direction ``r`` one of:

- ``orthogonal``: ``r' = normalize(r - Q Qᵀ r)``, ``Q`` an orthonormal basis of ``{u_k : k ∈ K}``
  at ``r``'s layer: the cut no longer touches what the kept categories' directions span;
- ``others``: the same with ``r`` replaced by the difference in means of the *other*
  categories' prompts pooled, ``u_{¬K}``, so the removed direction is measured only on what is
  to be removed.

Both cut one vector from every output, and the category directions share refusal itself, so
orthogonalizing against the kept ones removes refusal from the cut too: at ``alpha`` 1 the cut
keeps (or adds) refusal everywhere. ``abliterate --keep --keep-method orthogonal`` cuts at ``alpha`` 2
unless ``--alpha`` (:data:`KEEP_ALPHA`): the written component along
``r'`` is turned round instead of removed, which removes the other categories' refusals and keeps
part of the kept ones'; at 1.75 refusal stays everywhere, so the choice sits on a steep edge.
The default keep method, ``preserving`` (:mod:`vauban.methods.keeping`; chosen by cross-validation,
``benchmarks/results/control_cv.json``), is an edit, not a vector:
the whole refusal direction, removed on the other categories' prompts and kept on the kept ones'.
``benchmarks/control_demo.py`` measures which keeps more of the kept categories' refusals while
removing the others' (``benchmarks/results/control_demo.json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import VaubanError, check_layer
from ..edit.vectors import unit_rows
from ..model import arch
from ..model.loading import model_label
from ..runtime.activations import last_token_residuals
from ..text.formatting import Formatting
from ..text.prompts import Prompts, bundled_records, load_prompts, read_jsonl
from ..text.reasoning import resolved
from .measuring import cosine_separation
from .results import DirectionResult

KEEP_METHODS = ("orthogonal", "others")
KEEP_ALPHA = {
    "orthogonal": 2.0,
    "others": 1.0,
}  # the cut's alpha unless --alpha (dev-chosen, control_demo.json)
CATEGORY_SETS = {"measure": "harmful_categories", "eval": "eval_categories", "test": "test_categories"}


def category_prompts(source: str | Path | Mapping[str, Sequence[str]] = "measure") -> dict[str, list[str]]:
    """Prompts grouped by category, in first-seen order: ``"measure"`` / ``"eval"`` / ``"test"``
    (the bundled category sets: measuring, evaluation, a test set read once), a ``.jsonl`` file
    with ``prompt`` and ``category`` fields, or a mapping."""
    if isinstance(source, Mapping):
        groups = {str(k): load_prompts(list(v), what=f"category {k!r}") for k, v in source.items()}
    else:
        if str(source) in CATEGORY_SETS:
            records = bundled_records(CATEGORY_SETS[str(source)])
        else:
            records = read_jsonl(Path(source).expanduser())
        groups = {}
        for n, record in enumerate(records, start=1):
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("category"), str)
                or not isinstance(record.get("prompt"), str)
            ):
                raise VaubanError(f"{source}:{n}: expected an object with 'prompt' and 'category' strings")
            groups.setdefault(record["category"], []).append(record["prompt"])
    if not groups:
        raise VaubanError(f"no categorized prompts in {source}; give prompts with a 'category' field")
    return groups


def check_categories(names: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, each one of ``known`` (a one-line error naming the choices)."""
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise VaubanError(f"unknown categories {unknown or list(names)}; choose among {', '.join(known)}")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class CategoryDirections:
    """Per-category harmful means and the harmless means, every layer (float64), with the layer
    the directions are read at; ``counts`` prompts per category."""

    categories: tuple[str, ...]
    means: torch.Tensor = field(repr=False)  # (categories, layers, d)
    harmless_means: torch.Tensor = field(repr=False)  # (layers, d)
    counts: tuple[int, ...]
    layer_index: int
    model_path: str = ""
    cosine_scores: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.means.shape[0] != len(self.categories) or self.means.shape[1:] != self.harmless_means.shape:
            raise VaubanError("category means and harmless means disagree in shape; measure them again")
        check_layer(self.layer_index, self.means.shape[1])

    def directions(self, layer: int | None = None) -> torch.Tensor:
        """``(categories, d)`` unit directions at ``layer`` (default: :attr:`layer_index`)."""
        at = self.layer_index if layer is None else check_layer(layer, self.means.shape[1])
        return unit_rows(self.means[:, at] - self.harmless_means[at])

    def direction(self, category: str, layer: int | None = None) -> torch.Tensor:
        """One category's unit direction."""
        (index,) = [self.categories.index(c) for c in check_categories([category], self.categories)]
        return self.directions(layer)[index]

    def similarity(self, layer: int | None = None) -> torch.Tensor:
        """Cosine similarity of every pair of category directions, ``(categories, categories)``."""
        u = self.directions(layer)
        return u @ u.T

    def pooled(self, categories: Sequence[str], layer: int | None = None) -> torch.Tensor:
        """The unit difference in means of ``categories``' prompts pooled (weighted by counts)."""
        rows = [self.categories.index(c) for c in check_categories(categories, self.categories)]
        at = self.layer_index if layer is None else layer
        weights = torch.tensor([self.counts[i] for i in rows], dtype=self.means.dtype)
        mean = (self.means[rows, at] * weights[:, None]).sum(0) / weights.sum()
        return unit_rows(mean - self.harmless_means[at])

    def record(self) -> dict[str, Any]:
        """The JSON-ready summary: categories, counts, layer, similarity at that layer."""
        return {
            "categories": list(self.categories),
            "counts": list(self.counts),
            "layer": self.layer_index,
            "model": self.model_path,
            "similarity": [[round(float(x), 4) for x in row] for row in self.similarity()],
        }

    def save(self, path: str | Path) -> Path:
        """Write the means (``.pt``) and :meth:`record` (``.json`` beside it); returns the ``.pt``."""
        target = Path(path).with_suffix(".pt")
        torch.save(
            {
                "means": self.means,
                "harmless_means": self.harmless_means,
                "cosine_scores": list(self.cosine_scores),
            }
            | self.record(),
            target,
        )
        target.with_suffix(".json").write_text(json.dumps(self.record(), indent=1) + "\n")
        return target

    @classmethod
    def load(cls, path: str | Path) -> CategoryDirections:
        """Read what :meth:`save` wrote."""
        try:
            data = torch.load(Path(path).with_suffix(".pt"), map_location="cpu", weights_only=True)
            return cls(
                tuple(data["categories"]),
                data["means"],
                data["harmless_means"],
                tuple(data["counts"]),
                int(data["layer"]),
                data.get("model", ""),
                tuple(data.get("cosine_scores", ())),
            )
        except (OSError, KeyError, RuntimeError) as err:
            raise VaubanError(
                f"cannot read category directions {path}: {err}; measure them again "
                "(vauban measure --by-category -o FILE)"
            ) from None


def measure_categories(
    model: nn.Module,
    tokenizer: Any,
    harmful: str | Path | Mapping[str, Sequence[str]] = "measure",
    harmless: Prompts = "harmless",
    *,
    layer: int | None = None,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    formatting: Formatting | None = None,
) -> CategoryDirections:
    """One difference-in-means direction per category (see the module docstring); ``layer``
    defaults to the best cosine separation of all categories' prompts pooled."""
    groups = category_prompts(harmful)
    if any(len(v) < 2 for v in groups.values()):
        raise VaubanError("every category needs at least 2 prompts to measure a direction")
    fmt = resolved(formatting, tokenizer)
    if layer is not None:
        check_layer(layer, arch.num_layers(model))
    acts = {
        name: last_token_residuals(
            model,
            tokenizer,
            prompts,
            batch_size=batch_size,
            formatting=fmt,
            show_progress=show_progress,
            desc=name,
            prompt_set="harmful",
        )
        for name, prompts in groups.items()
    }
    b = last_token_residuals(
        model,
        tokenizer,
        load_prompts(harmless, what="harmless prompts"),
        batch_size=batch_size,
        show_progress=show_progress,
        desc="harmless",
        formatting=fmt,
        prompt_set="harmless",
    )
    return from_residuals(acts, b, layer, model_label(model))


def from_residuals(
    harmful: Mapping[str, torch.Tensor],
    harmless: torch.Tensor,
    layer: int | None = None,
    model_path: str = "",
) -> CategoryDirections:
    """:class:`CategoryDirections` from ``(n, layers, d)`` residuals per category and of the
    harmless prompts (what :func:`measure_categories` captures)."""
    scores, _, _, b_mean = cosine_separation(torch.cat(list(harmful.values())), harmless)
    best = int(scores.argmax()) if layer is None else layer
    means = torch.stack([a.double().mean(0) for a in harmful.values()])
    return CategoryDirections(
        tuple(harmful),
        means,
        b_mean,
        tuple(len(a) for a in harmful.values()),
        best,
        model_path,
        tuple(float(s) for s in scores),
    )


def keep_vector(
    direction: DirectionResult | torch.Tensor,
    categories: CategoryDirections,
    keep: Sequence[str],
    method: str = "orthogonal",
    layer: int | None = None,
) -> torch.Tensor:
    """The unit vector a cut removes to keep the refusals of ``keep`` (see the module docstring).

    ``direction``: the refusal direction (its layer is where the category directions are read,
    unless ``layer``); ignored by ``method="others"``, which needs at least one category not kept.
    """
    if method not in KEEP_METHODS:
        raise VaubanError(f"unknown keep method {method!r}; choose one of {', '.join(KEEP_METHODS)}")
    kept = check_categories(keep, categories.categories)
    at = (
        layer
        if layer is not None
        else (direction.layer_index if isinstance(direction, DirectionResult) else categories.layer_index)
    )
    if method == "others":
        rest = [c for c in categories.categories if c not in kept]
        if not rest:
            raise VaubanError("--keep names every category, so nothing is left to remove; keep fewer")
        r = categories.pooled(rest, at)
    else:
        r = direction.direction if isinstance(direction, DirectionResult) else direction.reshape(-1)
    rows = [categories.categories.index(c) for c in kept]
    basis = torch.linalg.qr(categories.directions(at)[rows].T.double())[0]
    r = r.double() / r.double().norm()
    removed = r - basis @ (basis.T @ r)
    if float(removed.norm()) < 1e-6:
        raise VaubanError(
            "the refusal direction lies in the span of the kept categories' directions; "
            "nothing is left to cut"
        )
    return (removed / removed.norm()).float()
