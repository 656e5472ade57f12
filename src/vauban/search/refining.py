"""Refine a cut's per-writer weights by gradient descent until it beats the plain cut on both counts.

Why: the kernel search of :mod:`vauban.search.optimizing` moves the cut along one trade-off curve:
its trials without refusals lie on a single curve of first-token KL against refusal likelihood,
with the plain cut on it, so a lighter kernel lowers the KL exactly as much as it raises the
refusal likelihood (the demo model's trials: docs/benchmarks.md). What gets off that curve is a
weight per writer, because writers differ: cutting some layers' MLPs costs KL for little refusal
removed, cutting some layers' attention removes refusal at almost no KL. ``2 × layers`` weights
are too many for a 30-trial Bayesian search, but cheap for a gradient, because the cut is
differentiable in them: the weight edit ``W - a·Q Qᵀ W`` turns a writer's output ``y = Wx + b``
into ``y - a·Q Qᵀ y`` exactly, so forward hooks doing that with ``a`` a tensor give the cut model
as a smooth function of the weights, with no copy of any weight.

The loss is the smooth maximum of both objectives as ratios to the plain cut's values,
``logsumexp(τ·[KL/KL₀, p/p₀]) / τ`` (:func:`vauban.runtime.scoring.loss`, shared with the
``learned`` method): it falls only when the larger ratio falls, so the weights
move below the plain cut on both rather than trading one for the other. Adam steps, weights kept
in ``[0, 1.5]``; the step with the lowest loss wins. The values are measured through the hooks;
:func:`vauban.search.optimizing.optimize` then scores the result as a real weight edit like any trial.
Norm-preserving cuts rescale each written vector, which no output hook can express: refine plain
cuts only.

With a ``deadline`` refinement stops early: after each scored step it stops when the next step,
at the mean pace of the steps so far, would end past the deadline (so a deadline already passed
leaves only step 0, the plain cut, which is always scored). The best step so far is returned
and :class:`Refined` says how many steps ran and that the deadline stopped them.
:func:`budget` splits a time budget between the search and the refinement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.errors import VaubanError, check_int
from ..edit.cutting import writer_basis
from ..model import arch
from ..runtime.activations import model_device
from ..runtime.batching import duration
from ..runtime.scoring import (
    BACKWARD_BATCH,
    Forced,
    forced,
    kl_batches,
    likelihood_batches,
    loss,
    loss_gradient,
    mean_and_grad,
)
from ..text.formatting import Formatting

MAX_WEIGHT = 1.5
REFINE_SHARE = 1 / 3  # of an optimize timeout, kept for refinement (see budget)


def budget(started: float, timeout: float | None, refining: bool) -> tuple[float | None, float | None]:
    """The deadlines (``time.perf_counter()`` values) of :func:`vauban.search.optimizing.optimize`'s search
    and of its refinement, for ``timeout`` seconds counted from ``started``: when refining, the
    search starts no trial that would end (at its mean trial time) after the first
    ``1 - REFINE_SHARE`` of the budget, and refinement stops at its end; without refinement the
    search has all of it.

    Why a fixed third: the cost of a refinement step is only known once one has run, and its
    ratio to a trial's cost depends on the hardware (1.2 trials on the demo model on a 2-core
    CPU, 49 s against 40 s; 0.3-0.7 on an H100, ``benchmarks/results/gpu_h100_refine.json``). On
    the CPU, in the side-by-side benchmark (``benchmarks/peers.py``), the default 16 steps took
    783 s, 27 % of the 2,883 s that search and refinement took together: a third leaves them
    room and the search trial that overruns its share. When the steps are slower, refinement
    runs fewer of them (it stops at its deadline, keeping its best step); when the search ends
    early (all its trials done), refinement gets the time it left.
    """
    if timeout is None:
        return None, None
    end = started + timeout
    return (started + (1 - REFINE_SHARE) * timeout if refining else end), end


@contextlib.contextmanager
def gated(model: nn.Module, direction: torch.Tensor, weights: torch.Tensor) -> Iterator[None]:
    """While open, every writer's output loses ``weights[kind, layer]`` × its component along
    the unit ``direction`` (through a post-norm's gain where there is one, as :mod:`vauban.edit.cutting`
    does): the plain weight edit with per-writer weights, as hooks (``kind`` 0 attention, 1 MLP)."""
    device = model_device(model)
    unit = (direction.float() / direction.float().norm()).to(device)
    handles = []
    seen: set[int] = set()
    try:
        for w in arch.residual_writers(model):
            module = arch.writer_module(model, w)
            if id(module) in seen:
                continue
            seen.add(id(module))
            basis = writer_basis(unit[None], w.post_norm, device)[0]
            at = (0 if w.kind == "attention" else 1, w.layer)

            def hook(
                _module: nn.Module,
                _args: Any,
                y: torch.Tensor,
                q: torch.Tensor = basis,
                at: tuple[int, int] = at,
            ) -> torch.Tensor:
                q = q.to(y.device, y.dtype)
                return y - weights[at].to(y.device, y.dtype) * (y @ q).unsqueeze(-1) * q

            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class Refined:
    """Per-layer weights for the attention and MLP writers, and how the steps went."""

    attention: tuple[float, ...]
    mlp: tuple[float, ...]
    kl: float  # KL of the chosen weights (through the hooks)
    likelihood: float  # refusal likelihood of the chosen weights
    history: tuple[tuple[float, float], ...]  # (KL, likelihood) at each step's start
    planned: int  # the steps asked for

    @property
    def steps(self) -> int:
        """Gradient steps taken and scored (step 0, the plain cut, is not one)."""
        return len(self.history) - 1

    @property
    def stopped(self) -> bool:
        """Whether the deadline stopped it before ``planned`` steps."""
        return self.steps < self.planned

    def summary(self) -> str:
        ran = f"{self.steps}/{self.planned}" + (" (stopped at the deadline)" if self.stopped else "")
        return f"Refined: steps={ran}, kl={self.kl:.4f}, likelihood={self.likelihood:.1e}"


def refine(
    model: nn.Module,
    tokenizer: Any,
    direction: torch.Tensor,
    harmless: Sequence[str] | Forced,
    base: Sequence[torch.Tensor],
    refusals: Sequence[tuple[str, ...]],
    *,
    steps: int = 16,
    lr: float = 0.03,
    batch_size: int | None = None,
    log: Callable[[str], None] | None = None,
    formatting: Formatting | None = None,
    deadline: float | None = None,
) -> Refined:
    """Per-writer weights for cutting ``direction`` that lower both the KL against ``base`` (the
    original's log-probabilities on ``harmless``: prompts for the first-token KL, or teacher-forced
    rows for a k-token KL, see :mod:`vauban.runtime.scoring`) and the likelihood of the original's
    ``refusals``, starting from the plain cut (weight 1 everywhere); see the module docstring.
    ``deadline`` (a ``time.perf_counter()`` value): stop after the last step that ends before it
    at the pace so far (step 0 always runs). The model's weights are never touched."""
    check_int("steps", steps, 0)
    if not lr > 0:
        raise VaubanError(f"lr must be positive, got {lr!r}")
    n = arch.num_layers(model)
    batch_size = batch_size or BACKWARD_BATCH
    weights = torch.ones(2, n, requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=lr)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    history: list[tuple[float, float]] = []
    started = time.perf_counter()
    best: tuple[float, torch.Tensor, float, float] | None = None
    reference: tuple[float, float] | None = None

    rows = (
        harmless
        if isinstance(harmless, Forced)
        else forced(tokenizer, harmless, formatting=formatting, prompt_set="harmless")
    )

    def kl_parts() -> Iterator[tuple[int, torch.Tensor]]:
        return kl_batches(model, tokenizer, rows, base, batch_size)

    try:
        with gated(model, direction, weights):
            for step in range(steps + 1):
                kl, kl_grad = mean_and_grad(weights, kl_parts())
                lik, lik_grad = mean_and_grad(
                    weights,
                    likelihood_batches(
                        model, tokenizer, refusals, batch_size=batch_size, formatting=formatting
                    ),
                )
                reference = reference or (kl, lik)
                value = loss((kl, lik), reference)
                history.append((kl, lik))
                if best is None or value < best[0]:
                    best = (value, weights.detach().clone(), kl, lik)
                late = ends_past(deadline, (time.perf_counter() - started) / (step + 1))  # one more step
                if log is not None:
                    log(_step_line(step, steps, kl, lik, started, late))
                if step == steps or late:
                    break
                weights.grad = loss_gradient((kl, lik), reference, kl_grad, lik_grad)
                optimizer.step()
                with torch.no_grad():
                    weights.clamp_(0.0, MAX_WEIGHT)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    assert best is not None
    _, chosen, kl, lik = best
    return Refined(tuple(chosen[0].tolist()), tuple(chosen[1].tolist()), kl, lik, tuple(history), steps)


def ends_past(deadline: float | None, seconds: float) -> bool:
    """Whether work taking ``seconds`` from now would end past ``deadline`` (a
    ``time.perf_counter()`` value; never without one): the one test of the search's trials and
    of refinement's steps against their deadlines."""
    return deadline is not None and time.perf_counter() + seconds > deadline


def _step_line(step: int, steps: int, kl: float, lik: float, started: float, late: bool) -> str:
    """The progress line of a scored step: the time still to go, or that the deadline stops it."""
    head = f"refine step {step}/{steps}: kl {kl:.4f}  p(refusal) {lik:.1e} | "
    if late and step < steps:
        return head + f"stopped at the deadline after {step} of {steps} steps (another would end past it)"
    elapsed = time.perf_counter() - started
    return head + f"ETA {duration(elapsed / (step + 1) * (steps - step))}"
