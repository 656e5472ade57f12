"""The harmless-preserving edit: per writer, the smallest change that removes the direction from its
outputs on harmful inputs while keeping its outputs on harmless inputs as they were.

A writer ``W`` (residual output ``y = W x``) is changed only along the unit direction ``d`` it
writes (through its post-norm's gain, as every cut): ``W' = W - d vᵀ``, rank 1 (a LoRA of rank
1 per writer). The plain cut is ``v₀ = Wᵀ d`` (the direction gone from every output). Here ``v``
is the ridge least-squares solution over captured writer inputs (:mod:`.capture`), ``X_h`` on
harmful prompts and ``X_b`` on harmless ones::

    v = argmin ‖X_h v - X_h v₀‖² + λ ‖X_b v‖² + ρ ‖v - μ v₀‖²

the first term removes the direction from the harmful outputs, the second keeps the harmless
outputs' component along ``d`` (so their outputs are unchanged), the third keeps the change small
(``μ = 0``: the smallest ``v``; ``μ = 1``: the smallest departure from the plain cut, which keeps
its effect on inputs unlike either set). ``ρ`` is ``ridge`` × the mean squared input row norm.
With ``A = [X_h; √λ X_b]`` and ``y = [X_h v₀; 0]`` the solution is
``v = μ v₀ + Aᵀ (A Aᵀ + ρ I)⁻¹ (y - μ A v₀)``, or its primal twin ``(AᵀA + ρI)⁻¹(Aᵀy + ρμv₀)`` when
the rows outnumber the inputs (float32 products, float64 solves). A writer's bias keeps the
plain cut (its component along ``d`` removed).

Over a subspace (``subspace=k``: the ``k`` orthonormal rows ``Q`` of
:func:`vauban.direction.measuring.measure_subspace` at the direction's layer, row 0 the
difference in means): ``W' = W - Q Vᵀ``, rank ``k``. The outputs' components along orthonormal
rows are separate coordinates, so each column of ``V`` is the fit above for its own row of ``Q``
(one Gram matrix, ``k`` right-hand sides). The plain cut of a subspace also removes what
harmless prompts write along its later rows; the fit keeps those harmless outputs as it does
along ``d`` (measured in docs/methods.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.errors import VaubanError
from ..edit.cutting import Cut, layer_bases, writer_basis
from ..model import arch
from ..runtime.activations import model_device
from .capture import MAX_ROWS, writer_inputs
from .protocol import GivenCut, Inputs, TensorPlan

LAMBDA = 1.0  # weight of keeping harmless outputs against removing harmful ones
RIDGE = 0.01  # ρ as a share of the mean squared input row norm
PRIOR = 1.0  # μ: 1 = stay close to the plain cut, 0 = the smallest change


def solve(
    x_harmful: torch.Tensor,
    x_harmless: torch.Tensor,
    v0: torch.Tensor,
    *,
    keep: float = LAMBDA,
    ridge: float = RIDGE,
    prior: float = PRIOR,
    x_boosted: torch.Tensor | None = None,
    boost: float = 0.0,
) -> torch.Tensor:
    """``v`` of the module docstring (float32, shaped like ``v0``: ``(in,)``, or ``(in, k)`` for
    ``k`` directions at once): through the rows' Gram matrix ``A Aᵀ`` when there are fewer rows
    than inputs, else through ``AᵀA``. ``x_boosted``: rows weighted as the harmless ones whose
    output along the direction is multiplied by ``1 + boost`` instead of kept (``X v = -boost X v₀``)."""
    boosted = x_harmless[:0] if x_boosted is None else x_boosted
    a = torch.cat([x_harmful, keep**0.5 * x_harmless, keep**0.5 * boosted]).float()
    v0d = v0.double()
    y = torch.cat(
        [
            x_harmful.double() @ v0d,
            torch.zeros((x_harmless.shape[0], *v0.shape[1:]), dtype=torch.float64),
            -boost * keep**0.5 * (boosted.double() @ v0d),
        ]
    )
    dual = a.shape[0] < a.shape[1]
    gram = (a @ a.T if dual else a.T @ a).double()  # float32 product, float64 solve
    rho = ridge * float(gram.diagonal().sum()) / a.shape[0]  # ridge × the mean squared row norm
    gram.diagonal().add_(rho)
    ad = a.double()
    if dual:
        return (prior * v0d + ad.T @ torch.linalg.solve(gram, y - prior * (ad @ v0d))).float()
    return torch.linalg.solve(gram, ad.T @ y + rho * prior * v0d).float()


def capture_set(
    model: nn.Module,
    tokenizer: Any,
    inputs: Inputs,
    prompts: Sequence[str],
    prompt_set: str,
    max_rows: int = MAX_ROWS,
    last: int | None = None,
) -> dict[str, torch.Tensor]:
    """Every writer's inputs on ``prompts`` (:func:`.capture.writer_inputs`, ``last`` as there),
    formatted and batched as ``inputs`` says."""
    return writer_inputs(
        model,
        tokenizer,
        prompts,
        arch.residual_writers(model),
        prompt_set=prompt_set,
        formatting=inputs.formatting,
        batch_size=inputs.batch_size or 16,
        max_rows=max_rows,
        last=last,
    )


def capture(
    model: nn.Module, tokenizer: Any, inputs: Inputs, max_rows: int = MAX_ROWS
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(harmful, harmless)`` inputs of every writer, from the model as it is (call it on the
    original)."""

    def capture(prompts: Sequence[str], prompt_set: str) -> dict[str, torch.Tensor]:
        return capture_set(model, tokenizer, inputs, prompts, prompt_set, max_rows)

    return capture(inputs.harmful, "harmful"), capture(inputs.harmless, "harmless")


def plans(
    model: nn.Module,
    direction: Any,
    harmful: dict[str, torch.Tensor],
    harmless: dict[str, torch.Tensor],
    *,
    keep: float = LAMBDA,
    ridge: float = RIDGE,
    prior: float = PRIOR,
    layers: Sequence[int] | None = None,
    boosted: dict[str, torch.Tensor] | None = None,
    boost: float = 0.0,
    strength: float = 1.0,
) -> list[TensorPlan]:
    """One :class:`TensorPlan` per writer of ``layers`` (default all), bias plans included, from
    captured inputs (:func:`capture`; ``boosted`` and ``boost`` as :func:`solve`'s), each applied
    at ``strength`` (above 1: past removal, the harmful outputs' component reversed while the
    harmless ones, which the fit leaves unchanged, stay so); rank 1, or ``k`` for a direction of
    ``k`` rows (a subspace)."""
    n = arch.num_layers(model)
    bases = layer_bases(direction, arch.d_model(model), n)
    writers = arch.residual_writers(model, list(range(n)) if layers is None else list(layers))
    device = model_device(model)
    out = []
    for w in writers:
        q = writer_basis(bases[w.layer], w.post_norm, device).float().cpu()  # (k, d)
        view = w.weight.detach().movedim(w.axis, -1).float().cpu()  # (in, d)
        v0 = view @ q.T  # (in, k)
        extra = None if boosted is None else boosted[w.name]
        fit = {"keep": keep, "ridge": ridge, "prior": prior, "boost": boost}
        v = solve(harmful[w.name], harmless[w.name], v0, x_boosted=extra, **fit)
        out.append(TensorPlan(f"{w.name}.weight", w.weight, w.axis, q, v, strength))
        if w.bias is not None:
            bias = w.bias.detach().float().cpu() @ q.T
            out.append(TensorPlan(f"{w.name}.bias", w.bias, -1, q, bias, strength))
    return out


def edit(
    model: nn.Module,
    tokenizer: Any,
    direction: Any,
    inputs: Inputs,
    method: str,
    record: dict[str, Any] | None = None,
    **params: Any,
) -> Cut:
    """The applied edit of the module docstring along ``direction``, recorded as ``method`` with its
    settings (and ``record``); ``params``: ``keep``, ``ridge``, ``prior``, ``strength``, ``layers``
    (default all), ``rows`` (token rows captured per writer and set, default :data:`MAX_ROWS`:
    more rows fit the harmless outputs on more of their variety, at the memory of
    rows × writers' inputs), ``subspace`` (``k`` ≥ 2: the edit over the ``k``-row subspace measured
    on ``inputs`` at the direction's layer, or a :class:`~vauban.direction.results.SubspaceResult`
    already measured) and ``captured`` (:func:`capture`'s pair, reused across settings)."""
    settings = {
        "keep": params.get("keep", LAMBDA),
        "ridge": params.get("ridge", RIDGE),
        "prior": params.get("prior", PRIOR),
    }
    strength = params.get("strength", 1.0)
    layers = params.get("layers")
    chosen = list(range(arch.num_layers(model))) if layers is None else list(layers)
    rows = int(params.get("rows", MAX_ROWS))
    if rows < 1:
        raise VaubanError(f"the preserving edit needs rows ≥ 1 captured per writer, got {rows}")
    harmful, harmless = params.get("captured") or capture(model, tokenizer, inputs, rows)
    basis, spanned = subspace_of(model, tokenizer, direction, inputs, params.get("subspace"))
    found = plans(model, basis, harmful, harmless, layers=chosen, strength=strength, **settings)
    sized = {"rows": rows} if rows != MAX_ROWS else {}
    recorded = {**settings, "strength": strength, **sized, **spanned, **(record or {})}
    return GivenCut(model, found, method, recorded, chosen).apply()


def subspace_of(
    model: nn.Module, tokenizer: Any, direction: Any, inputs: Inputs, subspace: Any
) -> tuple[Any, dict[str, Any]]:
    """What the edit removes: ``direction`` itself (``subspace`` None or 1), or the subspace of
    ``subspace`` rows measured on ``inputs`` at its layer as ``--subspace`` measures it
    (:meth:`.cutspec.CutSpec.vector`), or the one given, with its record."""
    from ..direction.results import SubspaceResult
    from .cutspec import CutSpec

    if subspace is None or (isinstance(subspace, int) and subspace == 1):
        return direction, {}
    if not isinstance(subspace, SubspaceResult):
        if not isinstance(subspace, int) or isinstance(subspace, bool) or subspace < 1:
            raise VaubanError(f"subspace must be a number of directions ≥ 1, got {subspace!r}")
        subspace = CutSpec(subspace=subspace).vector(
            model,
            tokenizer,
            direction,
            harmful=list(inputs.harmful),
            harmless=list(inputs.harmless),
            formatting=inputs.formatting,
            batch_size=inputs.batch_size,
        )
    return subspace, {"subspace": int(subspace.basis.shape[0]), "subspace_layer": subspace.layer_index}


class HarmlessPreserving:
    """Edit method ``harmless_preserving`` (see the module docstring); rank 1 per writer, ``k``
    over a subspace of ``k`` rows."""

    name = "harmless_preserving"
    low_rank = True

    def make(self, model: nn.Module, tokenizer: Any, direction: Any, inputs: Inputs, **params: Any) -> Cut:
        return edit(model, tokenizer, direction, inputs, self.name, **params)
