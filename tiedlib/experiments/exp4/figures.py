"""Figures of Experiment 4 (exclusive latents are less exclusive than shared ones). Each function returns a Figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from tiedlib.analysis.cosines import ExclusiveVsShared
from tiedlib.analysis.figures import relative_norm_histogram  # noqa: F401 (re-exported for the notebook)

from .seeds import SeedRuns


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


def null_comparison(seeds: SeedRuns) -> Figure:
    """Beside the real comparison, the null one: one panel per query model, the median max cosine of the exclusive
    and of the shared latents, per run (points) and their mean (bars), within one crosscoder (one point per seed) and
    against a seed twin (one point per seed pair)."""
    rows = []
    for name, runs in (("within one crosscoder", seeds.stats), ("against a seed twin (null)", seeds.null)):
        for run in runs:
            for s in run:
                rows += [{"query": s.query, "latents": f"{s.query}-exclusive", "comparison": name,
                          "median max cosine": s.median_exclusive},
                         {"query": s.query, "latents": "shared", "comparison": name,
                          "median max cosine": s.median_shared}]  # fmt: skip
    data = pd.DataFrame(rows).dropna()
    order = ["within one crosscoder", "against a seed twin (null)"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for ax, query in zip(axes, ("base", "chat"), strict=True):
        part = data[data["query"] == query]
        x_order = [f"{query}-exclusive", "shared"]
        if len(part):
            sns.barplot(data=part, x="latents", y="median max cosine", hue="comparison", order=x_order,
                        hue_order=order, errorbar=None, alpha=0.5, ax=ax)
            sns.stripplot(data=part, x="latents", y="median max cosine", hue="comparison", order=x_order,
                          hue_order=order, dodge=True, palette=["black", "black"], size=4, legend=False, ax=ax)
        ax.set_title(f"query = {query}")
        ax.set_xlabel("")
        if ax.get_legend() is not None:
            sns.move_legend(ax, "lower left", title=None, fontsize=7)
    fig.tight_layout()
    return fig
