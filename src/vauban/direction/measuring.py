"""Measure the refusal direction: difference in means, scored layer by layer.

For every decoder layer ``l`` the candidate direction is
``u_l = normalize(mean(harmful_l) - mean(harmless_l))`` over last-token residuals. Its score is a
*cosine separation* measured across the whole residual stream:

    s_l = mean over layers k of [ mean_i cos(h_ik - c_k, u_l) - mean_j cos(b_jk - c_k, u_l) ]

with harmful activations ``h_ik`` and harmless ``b_jk`` at layer ``k``, centred at the midpoint
``c_k`` of the two means. Why this shape:

- cosines make it scale-invariant: the residual norm grows with depth, so the norm of the mean
  difference (or a raw projection gap) always favours the last layer;
- centring removes the large component every prompt shares (including the few outlier channels
  of the residual stream), which otherwise swamps the cosines in early and middle layers;
- averaging over every layer ``k`` rewards a direction that is written once and then carried
  through the stream, which is how a feature that downstream layers *read* behaves, over one
  that only separates the prompts in the last layer or two, just before the unembedding.
  Directions from the last layers separate their own layer well but the stream poorly, and
  ablating them removes refusal less (docs/benchmarks.md, "Observations behind the design").

The geometric choice is ``argmax s_l`` (``select="geometry"``, the fast option). By default
(``select="effect"``) the candidate directions (the geometric best three and their
neighbours) are instead *cut* and their effect measured on held-back prompts: the layer whose
cut lowers the refusal score most, among those within a first-token KL limit, wins (see
:mod:`vauban.direction.selecting`, which also says which prompts are held back and why the last fifth
of the layers is excluded).

Variants for the cut (:mod:`vauban.edit.cutting`), derived from the stored per-layer means without
running the model again:

- :func:`direction_at` takes the direction at a *fractional* layer index ``x = i + t``:
  ``normalize((1 - t)·u_i + t·u_{i+1})``, so a search can move smoothly between layers;
- ``projected=True`` removes the component along the harmless mean ``m̂`` (unit) of that layer:
  ``u' = normalize(u - (u·m̂)·m̂)``, so the cut leaves alone what every harmless prompt also
  carries along the direction;
- :func:`directions_per_layer` gives every layer its own direction;
- :func:`measure_subspace` measures a k-dimensional refusal subspace at one layer.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import torch
from torch import nn

from ..core.errors import VaubanError, check_int, check_layer
from ..edit.editing import checksum
from ..edit.vectors import unit_rows
from ..model import arch
from ..model.loading import model_label
from ..runtime.activations import last_token_residuals
from ..runtime.generating import hook_ids
from ..text.formatting import Formatting
from ..text.prompts import Prompts, load_prompts
from ..text.reasoning import resolved
from .results import DirectionResult, SubspaceResult


def cosine_separation(
    harmful: torch.Tensor, harmless: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-layer scores from ``(n, layers, d)`` activations (see the module docstring).

    Returns ``(scores, directions, harmful_means, harmless_means)``. Means accumulate and are
    kept in float64: residual norms reach hundreds in some models, and the direction is the
    difference of two such means.
    """
    h_mean = harmful.double().mean(0)
    b_mean = harmless.double().mean(0)
    directions = unit_rows(h_mean - b_mean)
    centre = ((h_mean + b_mean) / 2).float()

    def mean_cosines(x: torch.Tensor) -> torch.Tensor:
        """``[l, k]`` = mean over prompts of cos(x_k - c_k, u_l)."""
        centred = x.float() - centre
        centred = centred / centred.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.einsum("nkd,ld->lk", centred, directions) / x.shape[0]

    scores = (mean_cosines(harmful) - mean_cosines(harmless)).mean(dim=1)
    return scores, directions, h_mean, b_mean


def _separation(
    model: nn.Module,
    tokenizer: Any,
    harmful: list[str],
    harmless: list[str],
    batch_size: int | None,
    show_progress: bool | None,
    fmt: Formatting,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The harmful prompts' last-token residuals ``(n, layers, d)`` and the
    :func:`cosine_separation` of both sets; non-finite activations are a one-line error."""
    h, b = (
        last_token_residuals(
            model,
            tokenizer,
            prompts,
            batch_size=batch_size,
            show_progress=show_progress,
            desc=name,
            formatting=fmt,
            prompt_set=name,
        )
        for name, prompts in (("harmful", harmful), ("harmless", harmless))
    )
    separation = cosine_separation(h, b)
    if not torch.isfinite(separation[0]).all():
        raise VaubanError("activations contain NaN/inf; the model may be broken in this dtype")
    return h, separation


# --- measurements remembered per model --------------------------------------------------------
# ``quick.measure_direction`` then ``quick.abliterate`` (the tutorial) measures one model twice;
# the second measurement is the first one's result as long as nothing it reads has changed.

_KEEP = 4  # measurements remembered per model (each holds two (layers, d) float64 means)
# per model (weakly: the memo dies with it), newest last: (tokenizer, key, layout, sums, result)
_Entry = tuple[Any, tuple[Any, ...], Any, torch.Tensor, DirectionResult]
_MEASURED: weakref.WeakKeyDictionary[nn.Module, list[_Entry]] = weakref.WeakKeyDictionary()


def model_state(model: nn.Module) -> tuple[tuple[Any, ...], torch.Tensor] | None:
    """``(layout, sums)``: what a forward pass of ``model`` computes with besides its input.

    ``layout``: the mode, the forward hooks (:func:`vauban.runtime.generating.hook_ids`) and
    every parameter's and buffer's name, dtype, shape, device, address and in-place version
    counter (torch bumps it on every in-place write, and vauban's cut and undo bump it too);
    ``sums``: every tensor's :func:`vauban.edit.editing.checksum`, which also sees writes
    through ``.data``, which the counters do not. None when a tensor cannot be read (on the
    meta device) or keeps no version counter (made under ``torch.inference_mode``)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    if any(t.device.type == "meta" or t.is_inference() for _, t in tensors):
        return None
    layout = (
        model.training,
        hook_ids(model),
        tuple((n, t.dtype, tuple(t.shape), t.device, t.data_ptr(), t._version) for n, t in tensors),
    )
    sums = [checksum(t).cpu() for _, t in tensors]
    return layout, torch.stack(sums) if sums else torch.zeros(0, dtype=torch.int32)


def _copy(result: DirectionResult) -> DirectionResult:
    """``result`` with its own tensors, so a caller writing into one leaves the remembered one."""
    tensors = ("direction", "harmful_means", "harmless_means")
    return dataclasses.replace(
        result, **{n: getattr(result, n).clone() for n in tensors if getattr(result, n) is not None}
    )


def recall(model: nn.Module, tokenizer: Any, key: tuple[Any, ...]) -> DirectionResult | None:
    """A copy of the measurement of ``model`` with ``tokenizer`` and ``key`` (prompts and options)
    made when the model was in the state it is in now; None when there is none."""
    entries = _MEASURED.get(model)
    if not entries:
        return None
    state = model_state(model)
    if state is None:
        return None
    layout, sums = state
    for known_tokenizer, known_key, known_layout, known_sums, result in reversed(entries):
        if (
            known_tokenizer is tokenizer
            and known_key == key
            and known_layout == layout
            and torch.equal(known_sums, sums)
        ):
            return _copy(result)
    return None


def remember(model: nn.Module, tokenizer: Any, key: tuple[Any, ...], result: DirectionResult) -> None:
    """Keep ``result`` for :func:`recall` with the state ``model`` ended the measurement in (the
    selection's cuts were undone, bit for bit, but bumped the version counters)."""
    state = model_state(model)
    if state is None:
        return
    entries = _MEASURED.setdefault(model, [])
    entries.append((tokenizer, key, *state, _copy(result)))
    del entries[:-_KEEP]


def measure(
    model: nn.Module,
    tokenizer: Any,
    harmful: Prompts = "harmful",
    harmless: Prompts = "harmless",
    *,
    layer: int | None = None,
    select: str = "effect",
    max_kl: float | None = None,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    formatting: Formatting | None = None,
    cutting: Any = None,
) -> DirectionResult:
    """Measure the refusal direction; ``layer`` forces a layer instead of choosing one.

    ``select="effect"`` (default) chooses the layer by cutting candidate directions (the three
    best by cosine separation and their neighbours) and measuring the refusal score on
    held-back prompts (the last quarter of each set, at most 24, so the direction comes from
    the rest), among candidates whose first-token KL is at most ``max_kl`` (default
    :data:`vauban.direction.selecting.MAX_KL`); ``select="geometry"`` takes the best cosine separation
    over all prompts, with no cut (see :mod:`vauban.direction.selecting`). With fewer than 8 harmful
    prompts nothing is held back and the choice is geometric.

    ``formatting`` (:mod:`vauban.text.formatting`): how the prompts are formatted, which should be how
    the model will be used; it is recorded in the result with its defaults written out, and the
    selection formats its held-back prompts the same way. ``cutting``: how the selection cuts
    (:func:`vauban.direction.selecting.layer_effects`; for a model run one layer at a time,
    :func:`vauban.direction.streamed.measure_streamed`).

    Measuring is deterministic, so the model remembers its last few measurements: asked again
    with the same prompts, options and tokenizer while its weights, buffers, hooks and mode are
    those a measurement ended with (:func:`model_state`), ``measure`` returns a copy of that
    result without running the model (the tutorial's ``quick.measure_direction`` then
    ``quick.abliterate``). Any change to a weight (a cut, its undo, an optimizer step, a write
    through ``.data``) measures again. A custom ``cutting`` always measures.
    """
    from . import selecting

    select = selecting.check_select(select)
    if layer is not None:  # before the forward passes, not after them
        check_layer(layer, arch.num_layers(model))
    harmful_prompts = load_prompts(harmful, what="harmful prompts")
    harmless_prompts = load_prompts(harmless, what="harmless prompts")
    fmt = resolved(formatting, tokenizer)
    key = (
        tuple(harmful_prompts),
        tuple(harmless_prompts),
        layer,
        select,
        max_kl,
        batch_size,
        fmt,
        getattr(tokenizer, "chat_template", None),
        len(tokenizer),
    )
    if cutting is None and (known := recall(model, tokenizer, key)) is not None:
        return known
    result = _measure(
        model,
        tokenizer,
        harmful_prompts,
        harmless_prompts,
        fmt,
        layer=layer,
        select=select,
        max_kl=max_kl,
        batch_size=batch_size,
        show_progress=show_progress,
        cutting=cutting,
    )
    if cutting is None:
        remember(model, tokenizer, key, result)
    return result


def _measure(
    model: nn.Module,
    tokenizer: Any,
    harmful_prompts: list[str],
    harmless_prompts: list[str],
    fmt: Formatting,
    *,
    layer: int | None,
    select: str,
    max_kl: float | None,
    batch_size: int | None,
    show_progress: bool | None,
    cutting: Any,
) -> DirectionResult:
    """:func:`measure` itself, on loaded prompts and resolved formatting."""
    from . import selecting

    by_effect = select == "effect" and layer is None and len(harmful_prompts) >= selecting.MIN_PROMPTS
    if by_effect:
        harmful_prompts, held_harmful = selecting.split(harmful_prompts)
        harmless_prompts, held_harmless = selecting.split(harmless_prompts)
    _, (scores, directions, h_mean, b_mean) = _separation(
        model, tokenizer, harmful_prompts, harmless_prompts, batch_size, show_progress, fmt
    )
    best = int(scores.argmax()) if layer is None else check_layer(layer, len(scores))
    result = DirectionResult(
        direction=directions[best].clone(),
        layer_index=best,
        cosine_scores=tuple(float(s) for s in scores),
        d_model=arch.d_model(model),
        model_path=model_label(model),
        harmful_means=h_mean,
        harmless_means=b_mean,
        n_harmful=len(harmful_prompts),
        n_harmless=len(harmless_prompts),
        formatting=fmt,
        selection="geometry" if layer is None else "forced",
    )
    if not by_effect:
        return result
    log = (lambda line: print(line, flush=True)) if show_progress else None
    refusals = selecting.original_refusals(model, tokenizer, held_harmful, batch_size, fmt)
    return selecting.select_by_effect(
        model,
        tokenizer,
        result,
        refusals,
        held_harmless,
        max_kl=selecting.MAX_KL if max_kl is None else max_kl,
        batch_size=batch_size,
        log=log,
        cutting=cutting,
    )


def measure_subspace(
    model: nn.Module,
    tokenizer: Any,
    harmful: Prompts = "harmful",
    harmless: Prompts = "harmless",
    *,
    k: int = 3,
    layer: int | None = None,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    formatting: Formatting | None = None,
) -> SubspaceResult:
    """A ``k``-dimensional refusal subspace at ``layer`` (default: the best-scoring layer).

    Row 0 is the difference-in-means direction ``u``, so ``k = 1`` is the usual cut. The other
    rows are the top ``k - 1`` right singular vectors of the per-prompt differences
    ``h_i - mean(harmless)`` after removing their component along ``u``: the directions along
    which harmful prompts depart from the harmless mean most, beyond ``u``.
    """
    check_int("k", k, 1)
    harmful_prompts = load_prompts(harmful, what="harmful prompts")
    harmless_prompts = load_prompts(harmless, what="harmless prompts")
    if k > len(harmful_prompts):
        raise VaubanError(f"k={k} needs at least {k} harmful prompts, got {len(harmful_prompts)}")
    fmt = resolved(formatting, tokenizer)
    h, (scores, directions, _, b_mean) = _separation(
        model, tokenizer, harmful_prompts, harmless_prompts, batch_size, show_progress, fmt
    )
    best = int(scores.argmax()) if layer is None else check_layer(layer, len(scores))
    u = directions[best].double()
    diffs = h[:, best].double() - b_mean[best]
    along = diffs @ u
    _, values, vh = torch.linalg.svd(diffs - torch.outer(along, u), full_matrices=False)
    basis = torch.cat([u.unsqueeze(0), vh[: k - 1]]).float()
    return SubspaceResult(
        basis=basis,
        layer_index=best,
        singular_values=(float(along.norm()), *(float(v) for v in values[: k - 1])),
        d_model=arch.d_model(model),
        model_path=model_label(model),
        formatting=fmt,
    )
