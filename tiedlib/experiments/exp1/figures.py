"""Figures of Experiment 1. Every function returns a matplotlib Figure and never calls ``show()``.

Statistical figures (the ratio scatter with hue by corner, the annotated AUROC heatmap) use seaborn; line plots and
bar charts use matplotlib."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from tiedlib.analysis.firing import Corners, FiringRatios
from tiedlib.experiments.exp1.baseline import StandardBaseline

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


def ratio_points(ratios: FiringRatios, corners: Corners | None = None) -> pd.DataFrame:
    """The points of the ratio scatter: one row per kept triple with two finite ratios.

    Columns ``triple``, ``base/shared``, ``chat/shared`` and ``kind`` (``"top-left"``, ``"bottom-right"`` or
    ``"other"``; a triple in both corner lists counts as top-left).
    """
    idx = ratios.finite.nonzero().squeeze(1)
    kind = np.full(len(ratios.finite), "other", dtype=object)
    if corners is not None:
        kind[corners.bottom_right.numpy()] = "bottom-right"
        kind[corners.top_left.numpy()] = "top-left"
    return pd.DataFrame({"triple": idx.numpy(), "base/shared": ratios.base_over_shared[idx].numpy(),
                         "chat/shared": ratios.chat_over_shared[idx].numpy(), "kind": kind[idx.numpy()]})  # fmt: skip


def firing_ratio_scatter(ratios: FiringRatios, corners: Corners | None = None, *, annotate: int = 3,
                         title: str = "", ax: plt.Axes | None = None) -> Figure:  # fmt: skip
    """base/shared (x) against chat/shared (y) firing-count ratios of every kept triple (the write-up's Figure 2).

    A seaborn scatter with hue by corner: top-left latents (chat-side novelty) are red, bottom-right ones blue; the
    first ``annotate`` of each are labelled with their index. Triples dropped by the frequency filter and those with
    zero shared firings are counted in the legend, not plotted. Drawn on ``ax`` when given (its figure is returned).
    """
    points = ratio_points(ratios, corners)
    counts = points["kind"].value_counts()
    names = {k: f"{k} ({int(counts.get(k, 0))})" for k in ("other", "top-left", "bottom-right")}
    points["kind"] = points["kind"].map(names)
    palette = {names["other"]: "0.45", names["top-left"]: GROUP_COLOURS["chat"],
               names["bottom-right"]: GROUP_COLOURS["base"]}  # fmt: skip
    sizes = {names["other"]: 8, names["top-left"]: 28, names["bottom-right"]: 28}
    order = [n for k, n in names.items() if counts.get(k, 0)]
    fig, ax = plt.subplots(figsize=(5.6, 5)) if ax is None else (ax.figure, ax)
    sns.scatterplot(data=points, x="base/shared", y="chat/shared", hue="kind", size="kind", hue_order=order,
                    size_order=order, palette=palette, sizes=sizes, alpha=0.8, linewidth=0, ax=ax)  # fmt: skip
    if corners is not None:
        for idx in (corners.top_left, corners.bottom_right):
            for i in idx.numpy()[:annotate]:
                xy = (float(ratios.base_over_shared[i]), float(ratios.chat_over_shared[i]))
                ax.annotate(str(i), xy, fontsize=8, xytext=(3, 3), textcoords="offset points")
    dropped = int((~ratios.kept).sum())
    zero = int((ratios.kept & ratios.zero_shared).sum())
    ax.plot([], [], " ", label=f"not shown: {dropped} rare, {zero} never shared")
    ax.set(xlabel="base count / shared count", ylabel="chat count / shared count")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title=f"{len(points)} triples")
    ax.set_title(title or "Firing-count ratios per latent triple")
    fig.tight_layout()
    return fig


def ratio_scatters(panels: Mapping[str, tuple[FiringRatios, Corners | None]], *, annotate: int = 3) -> Figure:
    """:func:`firing_ratio_scatter` of several crosscoders side by side, one panel per name (same axis limits)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5), squeeze=False)
    for ax, (name, (ratios, corners)) in zip(axes[0], panels.items(), strict=True):
        firing_ratio_scatter(ratios, corners, annotate=annotate, title=name, ax=ax)
    right = max(ax.get_xlim()[1] for ax in axes[0])
    top = max(ax.get_ylim()[1] for ax in axes[0])
    for ax in axes[0]:
        ax.set(xlim=(0, right), ylim=(0, top))
    fig.tight_layout()
    return fig


def auroc_heatmap(values: np.ndarray | pd.DataFrame, rows: Sequence[str] | None = None,
                  cols: Sequence[str] | None = None, *, title: str = "",
                  label: str = "best AUROC") -> Figure:  # fmt: skip
    """Annotated seaborn heatmap of AUROC values (``rows x cols``, e.g. concepts x (group, dataset)), 0.5 white.

    ``values`` is an array with ``rows`` and ``cols`` labels, or a DataFrame whose index and columns are the labels.
    NaN cells (a concept absent from the data) are left blank. ``label`` names the colour bar (the same 0-1 scale
    serves precision at k).
    """
    table = values if isinstance(values, pd.DataFrame) else pd.DataFrame(np.asarray(values, dtype=float), index=rows,
                                                                         columns=cols)  # fmt: skip
    fig, ax = plt.subplots(figsize=(1.1 * table.shape[1] + 2.5, 0.28 * table.shape[0] + 1.4))
    sns.heatmap(table.astype(float), cmap="RdBu_r", vmin=0.0, vmax=1.0, center=0.5, annot=True, fmt=".2f",
                annot_kws={"fontsize": 6.5}, cbar_kws={"fraction": 0.04, "label": label}, ax=ax)  # fmt: skip
    ax.set_xticklabels(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title or "Best latent per concept")
    fig.tight_layout()
    return fig


def neighbour_bars(labels: Sequence[str], cosines: Sequence[float], scores: Sequence[float], *,
                   concept: str, title: str = "", metric: str = "AUROC") -> Figure:  # fmt: skip
    """Baseline: cosine of each neighbour's base decoder vector with the query's chat vector, beside that
    neighbour's score (``metric``: AUROC, precision at k) for the query's concept."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), sharey=True)
    pos = np.arange(len(labels))
    axes[0].barh(pos, cosines, color="0.5")
    axes[0].set(xlabel="cosine (base decoder vs query chat decoder)", yticks=pos)
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[1].barh(pos, scores, color=GROUP_COLOURS["base"])
    if metric == "AUROC":
        axes[1].axvline(0.5, color="k", lw=0.8, ls="--")  # chance
    axes[1].set(xlabel=f"{metric} for '{concept}'", xlim=(0, 1))
    axes[0].invert_yaxis()
    fig.suptitle(title or "Standard-crosscoder baseline: nearest base decoder vectors")
    fig.tight_layout()
    return fig


def baseline_neighbours(baseline: StandardBaseline, *, title: str = "") -> Figure:
    """:func:`neighbour_bars` of a standard-crosscoder baseline that has a query and ground truth."""
    c = baseline.concepts
    if baseline.query is None or baseline.neighbours is None or baseline.cosines is None or c is None:
        raise ValueError("the baseline has no query latent or no ground truth, so there are no neighbours to plot")
    return neighbour_bars([str(i) for i in baseline.neighbours.tolist()], baseline.cosines.tolist(),
                          c.neighbour_scores, concept=c.concept, title=title, metric=c.metric)  # fmt: skip
