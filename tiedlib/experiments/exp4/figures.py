"""Figures of Experiment 4 (exclusive latents are less exclusive than shared ones). Each function returns a Figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from tiedlib.analysis.cosines import ExclusiveVsShared

CATEGORY_COLOURS = ("tab:orange", "tab:gray", "tab:purple")
"""Base-exclusive, shared, chat-exclusive."""


def relative_norm_histogram(r: torch.Tensor, *, low: float = 0.3, high: float = 0.7, title: str = "",
                            bins: int = 50) -> Figure:  # fmt: skip
    """Histogram of relative decoder norms ``r`` (``(n_latents,)``), stacked by exclusivity category (base-exclusive
    ``r < low``, shared, chat-exclusive ``r > high``), thresholds marked, log count axis."""
    values = r.detach().cpu().float().numpy()
    labels = ["base-exclusive", "shared", "chat-exclusive"]
    category = np.where(values < low, labels[0], np.where(values > high, labels[2], labels[1]))
    data = pd.DataFrame({"r": values, "category": pd.Categorical(category, categories=labels)})
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.histplot(data=data, x="r", hue="category", hue_order=labels, palette=list(CATEGORY_COLOURS), bins=bins,
                 binrange=(0, 1), multiple="stack", ax=ax)
    for x in (low, high):
        ax.axvline(x, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("relative decoder norm  ||d_chat|| / (||d_base|| + ||d_chat||)")
    ax.set_ylabel("latents")
    ax.set_title(title or "relative decoder norms")
    fig.tight_layout()
    return fig


def max_cosine_histograms(panels: Sequence[ExclusiveVsShared], *, bins: int = 40) -> Figure:
    """The write-up's Figure 11: one panel per query model, max-cosine histograms of its exclusive latents (green)
    and of the shared latents (gray), each normalised to a density so different counts compare."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), squeeze=False, sharey=False)
    for ax, p in zip(axes[0], panels, strict=True):
        other = "base" if p.query == "chat" else "chat"
        ex = p.exclusive.values.cpu().numpy()
        sh = p.shared.values.cpu().numpy()
        ex, sh = ex[np.isfinite(ex)], sh[np.isfinite(sh)]
        lo = min(0.0, ex.min(initial=0.0), sh.min(initial=0.0))  # cosines below 0 are rare; show them if any
        shared = f"shared (n={len(sh)}): vs {other} dec. of all other latents"
        exclusive = f"{p.query}-exclusive (n={len(ex)}): vs {other} dec. of shared + {other}-excl."
        data = pd.DataFrame({"max cosine": np.concatenate([sh, ex]),
                             "latents": [shared] * len(sh) + [exclusive] * len(ex)})
        sns.histplot(data=data, x="max cosine", hue="latents", hue_order=[shared, exclusive],
                     palette=["gray", "tab:green"], bins=np.linspace(lo, 1.0, bins + 1), stat="density",
                     common_norm=False, alpha=0.6, ax=ax)
        ax.set_xlabel(f"max cosine of {p.query} decoder vector with {other} decoder vectors")
        ax.set_ylabel("density")
        ax.set_title(f"{p.query}-exclusive vs shared latents")
        if ax.get_legend() is not None:
            sns.move_legend(ax, "upper left", title=None, fontsize=7)
    fig.tight_layout()
    return fig
