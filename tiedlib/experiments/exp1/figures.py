"""Figures of Experiment 1. Every function returns a matplotlib Figure and never calls ``show()``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from tiedlib.analysis.firing import Corners, FiringRatios

GROUP_COLOURS = {"shared": "#2e7d32", "base": "#1565c0", "chat": "#c62828", "all": "#6a1b9a"}


def training_curves(metrics: Sequence[Mapping[str, float]], title: str = "") -> Figure:
    """Explained variance per model, L0 per group and the loss terms against the training step.

    Args:
        metrics: the run's logged metrics (``tiedlib.read_metrics``), one dict per logged step.
    """
    steps = [m["step"] for m in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for key, label, colour in (("explained_variance_base", "base", GROUP_COLOURS["base"]),
                               ("explained_variance_chat", "chat", GROUP_COLOURS["chat"])):  # fmt: skip
        axes[0].plot(steps, [m[key] for m in metrics], label=label, color=colour)
    axes[0].set(xlabel="step", ylabel="explained variance", ylim=(min(0, axes[0].get_ylim()[0]), 1))
    groups = [g for g in ("shared", "base", "chat") if f"l0_{g}" in metrics[0]]
    for g in groups:
        axes[1].plot(steps, [m[f"l0_{g}"] for m in metrics], label=g, color=GROUP_COLOURS[g])
    if not groups:
        axes[1].plot(steps, [m["l0"] for m in metrics], label="all", color=GROUP_COLOURS["all"])
    axes[1].set(xlabel="step", ylabel="L0 (latents firing per token)", yscale="log")
    axes[2].plot(steps, [m["reconstruction"] for m in metrics], label="reconstruction", color="k")
    axes[2].plot(steps, [m["sparsity"] * m["l1_coeff"] for m in metrics], label="l1_coeff x sparsity", color="0.5")
    axes[2].set(xlabel="step", ylabel="loss term", yscale="log")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def firing_ratio_scatter(ratios: FiringRatios, corners: Corners | None = None, *, annotate: int = 3,
                         title: str = "") -> Figure:  # fmt: skip
    """base/shared (x) against chat/shared (y) firing-count ratios of every kept triple (the write-up's Figure 2).

    Top-left latents (chat-side novelty) are red, bottom-right ones blue; the first ``annotate`` of each are labelled
    with their index. Triples dropped by the frequency filter and those with zero shared firings are counted in the
    legend, not plotted.
    """
    fin = ratios.finite.numpy()
    x, y = ratios.base_over_shared.numpy(), ratios.chat_over_shared.numpy()
    fig, ax = plt.subplots(figsize=(5.6, 5))
    ax.scatter(x[fin], y[fin], s=8, color="0.45", alpha=0.6, label=f"{int(fin.sum())} triples")
    if corners is not None:
        for idx, colour, name in ((corners.top_left, GROUP_COLOURS["chat"], "top-left"),
                                  (corners.bottom_right, GROUP_COLOURS["base"], "bottom-right")):  # fmt: skip
            ii = idx.numpy()
            ax.scatter(x[ii], y[ii], s=28, color=colour, label=f"{name} ({len(ii)})", zorder=3)
            for i in ii[:annotate]:
                ax.annotate(str(i), (x[i], y[i]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    dropped = int((~ratios.kept).sum())
    zero = int((ratios.kept & ratios.zero_shared).sum())
    ax.plot([], [], " ", label=f"not shown: {dropped} rare, {zero} never shared")
    ax.set(xlabel="base count / shared count", ylabel="chat count / shared count")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Firing-count ratios per latent triple")
    fig.tight_layout()
    return fig


def auroc_heatmap(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], *, title: str = "") -> Figure:
    """Heatmap of AUROC values (``rows x cols``, e.g. concepts x (group, dataset)), annotated, 0.5 white."""
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.5, 0.28 * len(rows) + 1.4))
    im = ax.imshow(values, cmap="RdBu_r", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5, color="w" if abs(v - 0.5) > 0.35 else "k")
    fig.colorbar(im, ax=ax, fraction=0.04, label="best AUROC")
    ax.set_title(title or "Best latent per concept")
    fig.tight_layout()
    return fig


def neighbour_bars(labels: Sequence[str], cosines: Sequence[float], aurocs: Sequence[float], *,
                   concept: str, title: str = "") -> Figure:  # fmt: skip
    """Baseline: cosine of each neighbour's base decoder vector with the query's chat vector, beside that
    neighbour's AUROC for the query's concept."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), sharey=True)
    pos = np.arange(len(labels))
    axes[0].barh(pos, cosines, color="0.5")
    axes[0].set(xlabel="cosine (base decoder vs query chat decoder)", yticks=pos)
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[1].barh(pos, aurocs, color=GROUP_COLOURS["base"])
    axes[1].axvline(0.5, color="k", lw=0.8, ls="--")
    axes[1].set(xlabel=f"AUROC for '{concept}'", xlim=(0, 1))
    axes[0].invert_yaxis()
    fig.suptitle(title or "Standard-crosscoder baseline: nearest base decoder vectors")
    fig.tight_layout()
    return fig
