"""Figures of analysis quantities that several experiments show."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

CATEGORY_COLOURS = ("tab:orange", "tab:gray", "tab:purple")
"""Base-exclusive, shared, chat-exclusive."""


def relative_norm_histogram(
    r: torch.Tensor, *, low: float = 0.3, high: float = 0.7, title: str = "",
    model_names: tuple[str, str] = ("base", "chat"), bins: int = 50,
) -> Figure:
    """Histogram of relative decoder norms ``r`` (``(n_latents,)``), stacked by exclusivity category (first-model
    exclusive ``r < low``, shared, second-model exclusive ``r > high``), thresholds marked, log count axis."""
    values = r.detach().cpu().float().numpy()
    labels = [f"{model_names[0]}-exclusive", "shared", f"{model_names[1]}-exclusive"]
    category = np.where(values < low, labels[0], np.where(values > high, labels[2], labels[1]))
    data = pd.DataFrame({"r": values, "category": pd.Categorical(category, categories=labels)})
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.histplot(data=data, x="r", hue="category", hue_order=labels, palette=list(CATEGORY_COLOURS), bins=bins,
                 binrange=(0, 1), multiple="stack", ax=ax)
    for x in (low, high):
        ax.axvline(x, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel(f"relative decoder norm  ||d_{model_names[1]}|| / (||d_{model_names[0]}|| + ||d_{model_names[1]}||)")
    ax.set_ylabel("latents")
    ax.set_title(title or "relative decoder norms")
    fig.tight_layout()
    return fig
