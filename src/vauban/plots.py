"""Figures for the tutorial's questions, drawn with matplotlib (headless-safe Agg backend).

Each function takes result objects, returns the Figure, and saves it when given a path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .core.atomic import write_file
from .core.extras import require
from .direction.results import BorderlineResult, DirectionResult, ProbeResult
from .evaluation.results import EvalResult
from .evaluation.sweeping import AlphaSweep

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .direction.categories import CategoryDirections
    from .search.trials import OptimizeResult


def _pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend, imported on the first figure."""
    require("matplotlib", "plots", "drawing figures")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    """Lay out, save atomically (a temp sibling renamed into place), and release pyplot's hold."""
    fig.tight_layout()
    _pyplot().close(fig)  # the Figure stays usable; pyplot just stops tracking it (no leak in loops)
    if path is not None:
        kind = Path(path).suffix.lstrip(".") or "png"  # the temp name has no suffix to infer it from
        write_file(path, lambda tmp: fig.savefig(tmp, dpi=120, format=kind))
    return fig


def plot_scores(direction: DirectionResult, path: str | os.PathLike[str] | None = None) -> Figure:
    """Cosine separation per layer, best layer marked."""
    fig, ax = _pyplot().subplots(figsize=(7, 3.5))
    ax.plot(direction.cosine_scores, marker="o")
    ax.axvline(direction.layer_index, color="tab:red", linestyle="--", label="chosen layer")
    ax.set(xlabel="layer", ylabel="cosine separation", title=f"Refusal direction: {direction.model_path}")
    ax.legend()
    return _finish(fig, path)


def plot_similarity(categories: CategoryDirections, path: str | os.PathLike[str] | None = None) -> Figure:
    """Cosine similarity of the category directions (``vauban measure --by-category``), annotated."""
    sim = categories.similarity().numpy()
    names = list(categories.categories)
    fig, ax = _pyplot().subplots(figsize=(1.1 * len(names) + 2, 1.0 * len(names) + 1.5))
    image = ax.imshow(sim, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"Category directions at layer {categories.layer_index}")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _finish(fig, path)


def plot_layers(
    harmful: torch.Tensor,
    harmless: torch.Tensor,
    direction: DirectionResult,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """The characteristic shape, from ``(prompts, layers)`` projections of each set.

    Top: every prompt's projection after each layer (thin) and each set's mean (bold), the two
    families separating in the middle layers. Bottom: each layer's cosine separation, which is
    how the direction's layer was chosen (marked in both panels).
    """
    fig, (top, bottom) = _pyplot().subplots(
        2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    layers = range(harmful.shape[1])
    for values, color, name in ((harmful, "tab:red", "harmful"), (harmless, "tab:blue", "harmless")):
        for row in values:
            top.plot(layers, row.tolist(), color=color, alpha=0.12, lw=0.8)
        top.plot(
            layers,
            values.mean(0).tolist(),
            color=color,
            lw=2.5,
            label=f"{name} prompts (mean of {values.shape[0]})",
        )
    for ax in (top, bottom):
        ax.axvline(direction.layer_index, color="black", linestyle="--", lw=1)
    top.axhline(0, color="grey", lw=0.5)
    top.set(
        ylabel="projection on refusal direction",
        title=f"Refusal direction of {direction.model_path} (layer {direction.layer_index})",
    )
    top.legend(fontsize="small", loc="upper left")
    bottom.plot(layers, direction.cosine_scores, marker="o", ms=3, color="tab:purple")
    bottom.annotate(
        f"chosen layer {direction.layer_index}",
        (direction.layer_index, direction.max_cosine),
        textcoords="offset points",
        xytext=(6, -12),
        fontsize="small",
    )
    bottom.set(xlabel="layer", ylabel="cosine separation")
    return _finish(fig, path)


def plot_probes(
    probes: Mapping[str, ProbeResult],
    direction: DirectionResult | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """The characteristic shape: per-layer projections of several prompts, with the harmful and
    harmless means of the measurement sets when ``direction`` carries them."""
    fig, ax = _pyplot().subplots(figsize=(8, 4.5))
    if direction is not None and direction.harmful_means is not None and direction.harmless_means is not None:
        d = direction.direction.double()
        ax.plot(
            (direction.harmful_means @ d).tolist(), color="tab:red", lw=3, alpha=0.4, label="harmful mean"
        )
        ax.plot(
            (direction.harmless_means @ d).tolist(), color="tab:blue", lw=3, alpha=0.4, label="harmless mean"
        )
        ax.axvline(direction.layer_index, color="grey", linestyle=":")
    for label, result in probes.items():
        ax.plot(result.projections, marker=".", label=label)
    ax.axhline(0, color="black", lw=0.5)
    ax.set(xlabel="layer", ylabel="projection on refusal direction")
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_borderline(result: BorderlineResult, path: str | os.PathLike[str] | None = None) -> Figure:
    """A borderline prompt's projections between the harmful and harmless means."""
    fig, ax = _pyplot().subplots(figsize=(8, 4.5))
    ax.plot(result.harmful, color="tab:red", label="harmful mean")
    ax.plot(result.harmless, color="tab:blue", label="harmless mean")
    ax.plot(result.probe.projections, color="black", marker=".", label=repr(result.probe.prompt))
    ax.axvline(result.probe.layer_index, color="grey", linestyle=":")
    ax.set(xlabel="layer", ylabel="projection", title=f"closer to {result.closer_to}")
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_sweep(sweep: AlphaSweep, path: str | os.PathLike[str] | None = None) -> Figure:
    """Refusal rate vs perplexity as alpha grows (the tutorial's exercise 2)."""
    fig, ax1 = _pyplot().subplots(figsize=(7, 4))
    alphas = [0.0] + [r.alpha for r in sweep.rows]
    refusal = [sweep.refusal_before * 100] + [r.refusal * 100 for r in sweep.rows]
    perplexity = [sweep.perplexity_before] + [r.perplexity for r in sweep.rows]
    lines = ax1.plot(alphas, refusal, marker="o", color="tab:red", label="refusal rate")
    ax1.set_xlabel("alpha (0 = original model)")
    ax1.set_ylabel("refusal rate (%)", color="tab:red")
    ax2 = ax1.twinx()
    lines += ax2.plot(alphas, perplexity, marker="s", color="tab:blue", label="perplexity")
    ax2.set_ylabel("perplexity on harmless answers", color="tab:blue")
    ax1.legend(lines, [line.get_label() for line in lines], loc="upper center")
    ax1.set_title(f"Refusal and perplexity vs alpha ({sweep.n_prompts} prompts)")
    return _finish(fig, path)


def plot_pareto(result: OptimizeResult, path: str | os.PathLike[str] | None = None) -> Figure:
    """Every trial's first-token KL against its refusal rate (left) and refusal likelihood
    (right, log scale); the Pareto front (over all three) in red, the plain cut and the pick
    marked. The right panel shows what the left cannot: among cuts with no refusals, which
    answer with more margin."""
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4.5))
    front, best, plain = result.pareto, result.best, result.plain
    panels = (
        (axes[0], lambda t: t.refusal * 100, "refusal rate on validation prompts (%)"),
        (axes[1], lambda t: max(t.likelihood, 1e-12), "refusal likelihood (log)"),
    )
    for ax, value, label in panels:
        ax.scatter(
            [t.kl for t in result.trials], [value(t) for t in result.trials], color="lightgrey", label="trial"
        )
        ax.scatter([t.kl for t in front], [value(t) for t in front], color="tab:red", label="Pareto front")
        for t in front:
            ax.annotate(
                str(t.number), (t.kl, value(t)), fontsize="small", textcoords="offset points", xytext=(4, 4)
            )
        if plain is not None:
            ax.scatter(
                [plain.kl],
                [value(plain)],
                marker="x",
                s=80,
                color="black",
                label="plain cut (alpha = 1)",
                zorder=3,
            )
        ax.scatter(
            [best.kl],
            [value(best)],
            marker="*",
            s=160,
            color="tab:green",
            zorder=4,
            label=f"pick (trial {best.number})",
        )
        ax.set(xlabel="first-token KL on harmless prompts", ylabel=label)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Optimization: {len(result.trials)} trials")
    return _finish(fig, path)


def plot_eval(result: EvalResult, path: str | os.PathLike[str] | None = None) -> Figure:
    """``evaluate``'s report, original and cut side by side: rates (refusal, late refusal,
    over-refusal, capability scores) as paired bars on the left; perplexity and the KLs (which
    compare the two, so the original's is 0) on the right."""
    rows = [
        ("refusal\n(harmful)", result.refusal_before, result.refusal_after),
        ("late\nrefusal", result.late_before, result.late_after),
    ]
    if result.over_refusal_before is not None and result.over_refusal_after is not None:
        rows.append(("over-refusal\n(safe)", result.over_refusal_before, result.over_refusal_after))
    rows += [
        (f"{b.name}\n{b.metric}", b.value, a.value)
        for b, a in zip(result.capability_before, result.capability_after, strict=True)
    ]
    fig, (left, right) = _pyplot().subplots(
        1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [max(len(rows), 2), 2]}
    )
    xs = range(len(rows))
    for offset, index, color, label in ((-0.2, 1, "tab:grey", "original"), (0.2, 2, "tab:red", "cut")):
        bars = left.bar(
            [x + offset for x in xs], [r[index] * 100 for r in rows], width=0.4, color=color, label=label
        )
        left.bar_label(bars, fmt="%.0f", fontsize="small")
    left.set_xticks(list(xs), [r[0] for r in rows], fontsize="small")
    left.set(
        ylabel="% of prompts / score",
        ylim=(0, 110),
        title=f"{result.n_prompts} harmful prompts, {result.max_tokens} answer tokens",
    )
    left.legend(fontsize="small")
    bars = right.bar(
        [-0.2, 0.2],
        [result.perplexity_before, result.perplexity_after],
        width=0.4,
        color=["tab:grey", "tab:red"],
    )
    right.bar_label(bars, fmt="%.2f", fontsize="small")
    kls = [f"first token {result.first_token_kl:.4f}"]
    if result.k_token_kl is not None:
        kls.append(f"{result.kl_tokens} tokens {result.k_token_kl:.4f}")
    kls.append(f"reference answers {result.kl:.4f}")
    right.set_xticks([-0.2, 0.2], ["original", "cut"])
    right.set(ylabel="perplexity (reference answers)", title="KL(original ‖ cut):\n" + "\n".join(kls))
    right.title.set_fontsize("small")
    fig.tight_layout()
    return _finish(fig, path)
