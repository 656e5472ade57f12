"""Figures for the tutorial's questions, drawn with matplotlib (headless-safe Agg backend).

Each function takes result objects, returns the Figure, and saves it when given a path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .results import AlphaSweep, BorderlineResult, DirectionResult, ProbeResult


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_scores(direction: DirectionResult, path: str | os.PathLike[str] | None = None) -> Figure:
    """Cosine separation per layer, best layer marked."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(direction.cosine_scores, marker="o")
    ax.axvline(direction.layer_index, color="tab:red", linestyle="--", label="chosen layer")
    ax.set(xlabel="layer", ylabel="cosine separation", title=f"Refusal direction: {direction.model_path}")
    ax.legend()
    return _finish(fig, path)


def plot_probes(
    probes: Mapping[str, ProbeResult],
    direction: DirectionResult | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """The characteristic shape: per-layer projections of several prompts, with the harmful and
    harmless means of the measurement sets when ``direction`` carries them."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if direction is not None and direction.harmful_means is not None:
        d = direction.direction.double()
        ax.plot((direction.harmful_means @ d).tolist(), color="tab:red", lw=3, alpha=0.4,
                label="harmful mean")
        ax.plot((direction.harmless_means @ d).tolist(), color="tab:blue", lw=3, alpha=0.4,
                label="harmless mean")
        ax.axvline(direction.layer_index, color="grey", linestyle=":")
    for label, result in probes.items():
        ax.plot(result.projections, marker=".", label=label)
    ax.axhline(0, color="black", lw=0.5)
    ax.set(xlabel="layer", ylabel="projection on refusal direction")
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_borderline(result: BorderlineResult, path: str | os.PathLike[str] | None = None) -> Figure:
    """A borderline prompt's projections between the harmful and harmless means."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(result.harmful, color="tab:red", label="harmful mean")
    ax.plot(result.harmless, color="tab:blue", label="harmless mean")
    ax.plot(result.probe.projections, color="black", marker=".", label=repr(result.probe.prompt))
    ax.axvline(result.probe.layer_index, color="grey", linestyle=":")
    ax.set(xlabel="layer", ylabel="projection", title=f"closer to {result.closer_to}")
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_sweep(sweep: AlphaSweep, path: str | os.PathLike[str] | None = None) -> Figure:
    """Refusal rate vs perplexity as alpha grows (the tutorial's exercise 2)."""
    fig, ax1 = plt.subplots(figsize=(7, 4))
    alphas = [0.0] + [r.alpha for r in sweep.rows]
    refusal = [sweep.refusal_before * 100] + [r.refusal * 100 for r in sweep.rows]
    perplexity = [sweep.perplexity_before] + [r.perplexity for r in sweep.rows]
    ax1.plot(alphas, refusal, marker="o", color="tab:red")
    ax1.set(xlabel="alpha", ylabel="refusal rate (%)")
    ax2 = ax1.twinx()
    ax2.plot(alphas, perplexity, marker="s", color="tab:blue")
    ax2.set_ylabel("perplexity", color="tab:blue")
    ax1.set_title("Refusal and perplexity vs alpha")
    return _finish(fig, path)
