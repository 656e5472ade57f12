"""A learned direction: the cut's direction itself moved by gradient to lower refusal likelihood
and KL together, as :mod:`vauban.search.refining` does for per-writer weights.

The cut of a unit direction ``u`` turns each writer's output ``y`` into ``y - (uᵀy)·u`` exactly
(through a post-norm's gain ``g``: ``u ∝ g ⊙ u``), so forward hooks give the cut model as a smooth
function of ``u = (d₀ + δ)/‖d₀ + δ‖`` with no copy of any weight. ``δ`` starts at 0 (the measured
direction) and takes Adam steps on refine's loss (the smooth maximum of KL and refusal
likelihood as ratios to the measured direction's values, :func:`vauban.runtime.scoring.loss`);
the step with the lowest loss wins. Fitted on the first :data:`PROMPTS` of the method's own
prompt sets (each step is a backward pass per prompt): the original's refusals of those harmful
prompts (short greedy answers) and first-token KL on those harmless prompts.

Two methods use it: ``learned``, the plain cut (``W - u uᵀ W``, rank 1) of the learned direction,
and ``learned_preserving``, the harmless-preserving edit (:mod:`.preserving`) along it, fitted on
all of the method's prompts: the learned direction moves the refusal toward what harmless prompts
do not write, and the least-squares edit leaves their outputs alone on top of that. Both fit the
direction on the very quantities the held-back selection score reads, so that score overrates
them (on the demo model a fifth of the plain cut's first-token KL there, more refusals on the
report prompts): ``method="auto"`` does not score them (docs/methods.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..edit.cutting import Cut, cut, layer_bases
from ..model import arch
from ..runtime.activations import model_device
from ..runtime.scoring import (
    BACKWARD_BATCH,
    first_token_logprobs,
    forced,
    kl_batches,
    likelihood_batches,
    loss,
    loss_gradient,
    mean_and_grad,
)
from .protocol import Inputs

STEPS = 8
LR = 0.02  # in units of the direction's norm (1)
PROMPTS = 32  # of each set, for the direction's fit


@contextlib.contextmanager
def directed(model: nn.Module, raw: Callable[[], torch.Tensor]) -> Iterator[None]:
    """While open, every writer's output loses its component along ``raw() / ‖raw()‖`` (called at
    each forward, so differentiable in what ``raw`` reads; post-norm writers through their gain)."""
    device = model_device(model)
    handles, seen = [], set()
    try:
        for w in arch.residual_writers(model):
            module = arch.writer_module(model, w)
            if id(module) in seen:
                continue
            seen.add(id(module))
            gain = None if w.post_norm is None else arch.norm_gain(w.post_norm, arch.d_model(model), device)

            def hook(
                _m: nn.Module, _a: Any, y: torch.Tensor, gain: torch.Tensor | None = gain
            ) -> torch.Tensor:
                u = raw().to(y.device)
                u = u if gain is None else gain.to(y.device) * u
                u = (u / u.norm()).to(y.dtype)
                return y - (y @ u).unsqueeze(-1) * u

            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def learn(
    model: nn.Module,
    tokenizer: Any,
    start: torch.Tensor,
    harmless: Sequence[str],
    base: Sequence[torch.Tensor],
    refusals: Sequence[tuple[str, str]],
    *,
    steps: int = STEPS,
    lr: float = LR,
    formatting: Any = None,
) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """The learned unit direction and the ``(KL, likelihood)`` of every step (step 0: ``start``);
    the model's weights are never touched."""
    d0 = (start.float() / start.float().norm()).detach()
    delta = torch.zeros_like(d0, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=lr)
    rows = forced(tokenizer, harmless, formatting=formatting, prompt_set="harmless")
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    history: list[tuple[float, float]] = []
    best: tuple[float, torch.Tensor] | None = None
    try:
        with directed(model, lambda: d0 + delta):
            for step in range(steps + 1):
                kl, kl_grad = mean_and_grad(delta, kl_batches(model, tokenizer, rows, base, BACKWARD_BATCH))
                lik, lik_grad = mean_and_grad(
                    delta,
                    likelihood_batches(
                        model, tokenizer, refusals, batch_size=BACKWARD_BATCH, formatting=formatting
                    ),
                )
                history.append((kl, lik))
                value = loss((kl, lik), history[0])
                if best is None or value < best[0]:
                    best = (value, (d0 + delta).detach().clone())
                if step == steps:
                    break
                delta.grad = loss_gradient((kl, lik), history[0], kl_grad, lik_grad)
                optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    assert best is not None
    return best[1] / best[1].norm(), history


def fit_direction(
    model: nn.Module,
    tokenizer: Any,
    direction: Any,
    inputs: Inputs,
    *,
    steps: int = STEPS,
    lr: float = LR,
    prompts: int = PROMPTS,
    refusals: Sequence[tuple[str, str]] | None = None,
) -> torch.Tensor:
    """The learned unit direction (:func:`learn`) from the measured one (a ``DirectionResult``'s
    direction, or a ``(d,)`` tensor), fitted on the first ``prompts`` of each of ``inputs``' sets."""
    from ..direction.selecting import original_refusals

    harmful, harmless = list(inputs.harmful[:prompts]), list(inputs.harmless[:prompts])
    start = layer_bases(direction, arch.d_model(model), arch.num_layers(model))[0, 0]
    refusals = refusals or original_refusals(model, tokenizer, harmful, formatting=inputs.formatting)
    base = first_token_logprobs(model, tokenizer, harmless, None, inputs.formatting)
    found, _ = learn(
        model,
        tokenizer,
        start,
        harmless,
        list(base),
        refusals,
        steps=steps,
        lr=lr,
        formatting=inputs.formatting,
    )
    return found


FIT_PARAMS = ("steps", "lr", "prompts", "refusals")  # fit_direction's own, among a method's params


def _fit_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in FIT_PARAMS if params.get(k) is not None}


class Learned:
    """Edit method ``learned``: a plain cut (rank 1) of the direction :func:`fit_direction` finds,
    or of ``learned`` (a unit ``(d,)`` tensor already fitted)."""

    name = "learned"
    low_rank = True

    def make(self, model: nn.Module, tokenizer: Any, direction: Any, inputs: Inputs, **params: Any) -> Cut:
        learned = params.get("learned")
        if learned is None:
            learned = fit_direction(model, tokenizer, direction, inputs, **_fit_params(params))
        return cut(model, learned)


class LearnedPreserving:
    """Edit method ``learned_preserving``: the harmless-preserving edit (rank 1 per writer; its
    ``keep``, ``strength``, ``ridge``, ``prior`` and ``captured``) along the learned direction, given
    as ``learned`` (a unit ``(d,)`` tensor, so several settings share one fit) or fitted here."""

    name = "learned_preserving"
    low_rank = True

    def make(self, model: nn.Module, tokenizer: Any, direction: Any, inputs: Inputs, **params: Any) -> Cut:
        from .preserving import edit

        fit = _fit_params(params)
        rest = {k: v for k, v in params.items() if k not in (*FIT_PARAMS, "learned")}
        learned = params.get("learned")
        if learned is None:
            learned = fit_direction(model, tokenizer, direction, inputs, **fit)
        record = {k: v for k, v in fit.items() if k != "refusals"}
        return edit(model, tokenizer, learned, inputs, self.name, record, **rest)
