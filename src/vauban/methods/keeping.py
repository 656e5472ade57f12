"""Keep the refusals of chosen categories by the harmless-preserving edit (:mod:`.preserving`): the
``preserving`` method of ``vauban abliterate --keep``.

The vector methods (:func:`vauban.direction.categories.keep_vector`) remove one direction from
every output, and the categories' directions share refusal itself, so a direction orthogonal to the
kept ones no longer removes refusal. Here the removed direction stays the whole refusal direction
``d``; what changes is *on which inputs* it is removed. Per writer (``W' = W - d vᵀ``, rank 1), with
``X_h`` the writer's inputs on the prompts to stop refusing (the other categories' and the generic
harmful prompts of no kept category), ``X_k`` on the kept categories' prompts and ``X_b`` on the
harmless ones::

    v = argmin ‖X_h v - X_h v₀‖² + λ (w ‖X_k v + β X_k v₀‖² + ‖X_b v‖²) + ρ ‖v - μ v₀‖²

:func:`.preserving.solve` with ``[√w X_k; X_b]`` as the rows to keep: the direction leaves the
removed prompts' outputs while the kept prompts' (and harmless) outputs along it stay as they were,
exactly as ``λ → ∞``; with ``β > 0`` (``boost``) the kept prompts' outputs along it are multiplied
by ``1 + β`` instead, to make up for what the edit loses on kept prompts it was not fitted on.
The rows are the writers' inputs at every token of the prompts, or at each prompt's ``last``
tokens only (where the answer is decided). ``benchmarks/control_demo.py`` chooses the settings on
development prompts and reports the result on held-out ones
(``benchmarks/results/control_demo.json``).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..direction.categories import category_prompts, check_categories
from ..edit.cutting import Cut
from ..model import arch
from ..text.formatting import Formatting
from ..text.prompts import BUNDLED, Prompts, bundled_records, load_prompts, read_jsonl
from .capture import MAX_ROWS
from .preserving import PRIOR, RIDGE, capture_set, plans
from .protocol import GivenCut, Inputs

KEEP = 100.0  # λ: weight of keeping the kept and harmless outputs against removing the others' (dev-chosen)
KEPT_WEIGHT = 1.0  # w: the kept categories' rows against the harmless rows, within λ
BOOST = 0.0  # β: the kept rows' output along the direction becomes (1 + β) × what it was
STRENGTH = 1.5  # the edit past full strength (cross-validated, benchmarks/results/control_cv.json)

Captured = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, torch.Tensor]]


def harmful_records(source: Prompts) -> list[dict[str, Any]]:
    """``source``'s prompts as records, with their ``category`` where the set gives one (a bundled
    set or a ``.jsonl`` file of objects with ``prompt``); others have none."""
    if isinstance(source, str) and source in BUNDLED:
        return bundled_records(source)
    if isinstance(source, str | os.PathLike) and str(source).endswith(".jsonl"):
        records = read_jsonl(Path(source).expanduser())
        if all(isinstance(r, dict) and isinstance(r.get("prompt"), str) for r in records):
            return records
    return [{"prompt": p} for p in load_prompts(source, what="harmful prompts")]


def keep_prompt_sets(
    groups: Mapping[str, Sequence[str]],
    keep: Sequence[str],
    generic: Sequence[Mapping[str, Any]] = (),
    exclude: Collection[str] = (),
) -> tuple[list[str], list[str]]:
    """``(remove, kept)``: the prompts of the categories not in ``keep`` and the ``generic`` ones
    of no kept category, then the kept categories' prompts; none of ``exclude``, none twice."""
    kept_names = check_categories(keep, list(groups))
    kept = list(dict.fromkeys(p for c in kept_names for p in groups[c] if p not in exclude))
    skip = set(kept) | set(exclude)
    pool = [p for c, ps in groups.items() if c not in kept_names for p in ps]
    pool += [str(r["prompt"]) for r in generic if r.get("category") not in kept_names]
    return list(dict.fromkeys(p for p in pool if p not in skip)), kept


def capture_keep(
    model: nn.Module,
    tokenizer: Any,
    inputs: Inputs,
    kept: Sequence[str],
    max_rows: int = MAX_ROWS,
    last: int | None = None,
) -> Captured:
    """Every writer's inputs on the prompts to remove refusal from (``inputs.harmful``), the kept
    prompts (``None`` when there are none) and the harmless prompts, from the model as it is: at
    every token, or at each prompt's ``last`` ones."""

    def capture(prompts: Sequence[str], prompt_set: str) -> dict[str, torch.Tensor]:
        return capture_set(model, tokenizer, inputs, prompts, prompt_set, max_rows, last=last)

    kept_x = capture(kept, "harmful") if kept else None
    return capture(inputs.harmful, "harmful"), kept_x, capture(inputs.harmless, "harmless")


def kept_rows(captured: Captured, kept_weight: float) -> dict[str, torch.Tensor]:
    """The rows whose outputs the edit keeps, per writer: ``[√w X_k; X_b]``."""
    _, kept_x, harmless_x = captured
    if kept_x is None:
        return harmless_x
    return {name: torch.cat([kept_weight**0.5 * kept_x[name], x]) for name, x in harmless_x.items()}


class KeepPreserving:
    """Edit method ``keep_preserving`` (see the module docstring): ``inputs.harmful`` are the
    prompts to remove refusal from, ``kept`` those whose refusal stays; rank 1 per writer."""

    name = "keep_preserving"
    low_rank = True

    def make(self, model: nn.Module, tokenizer: Any, direction: Any, inputs: Inputs, **params: Any) -> Cut:
        """``params``: ``kept`` (prompts), ``keep`` (λ), ``kept_weight`` (w), ``ridge``, ``prior``
        (μ), ``boost`` (β), ``strength`` (the preserving edit's), ``layers``, ``last``
        (fit at each prompt's last tokens only), ``captured`` (:func:`capture_keep`'s, to fit several
        settings at once)."""
        settings = {
            "keep": float(params.get("keep", KEEP)),
            "kept_weight": float(params.get("kept_weight", KEPT_WEIGHT)),
            "ridge": float(params.get("ridge", RIDGE)),
            "prior": float(params.get("prior", PRIOR)),
            "boost": float(params.get("boost", BOOST)),
            "strength": float(params.get("strength", STRENGTH)),
        }
        layers = params.get("layers")
        chosen = list(range(arch.num_layers(model))) if layers is None else list(layers)
        last = params.get("last")
        found = params.get("captured") or capture_keep(
            model, tokenizer, inputs, params.get("kept", ()), last=last
        )
        boost, kept_x = settings["boost"], found[1]
        boosted = None
        if boost and kept_x is not None:  # the kept rows get their own target: (1 + β) × their output
            boosted = {name: settings["kept_weight"] ** 0.5 * x for name, x in kept_x.items()}
        keep_x = found[2] if boosted is not None else kept_rows(found, settings["kept_weight"])
        tensor_plans = plans(
            model,
            direction,
            found[0],
            keep_x,
            keep=settings["keep"],
            ridge=settings["ridge"],
            prior=settings["prior"],
            layers=chosen,
            boosted=boosted,
            boost=boost,
            strength=settings["strength"],
        )
        record = settings | {"kept_prompts": len(params.get("kept", ())), "last": last}
        return GivenCut(model, tensor_plans, self.name, record, chosen).apply()


def keep_cut(
    model: nn.Module,
    tokenizer: Any,
    direction: Any,
    keep: Sequence[str],
    *,
    categories: str | Path | Mapping[str, Sequence[str]] = "measure",
    harmful: Prompts = "harmful",
    harmless: Prompts = "harmless",
    formatting: Formatting | None = None,
    batch_size: int | None = None,
    **params: Any,
) -> Cut:
    """The applied ``keep_preserving`` cut that keeps refusing the categories ``keep`` of
    ``categories`` (:func:`vauban.direction.categories.category_prompts`) and removes refusal of the
    others and of ``harmful``'s prompts of no kept category; ``params`` as :class:`KeepPreserving`."""
    remove, kept = keep_prompt_sets(category_prompts(categories), keep, harmful_records(harmful))
    inputs = Inputs(remove, load_prompts(harmless, what="harmless prompts"), formatting, batch_size)
    return KeepPreserving().make(model, tokenizer, direction, inputs, kept=kept, **params)
