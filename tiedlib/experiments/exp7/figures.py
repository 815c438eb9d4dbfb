"""Figures of notebook 07. Each function returns a Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def precision_bars(table: pd.DataFrame) -> Figure:
    """Precision at each k (bars) and chance (black tick) per method, from
    :func:`tiedlib.analysis.sae_baseline.precision_table`; a method without queries shows no bars."""
    cols = [c for c in table.columns if c.startswith("precision@")]
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    x = np.arange(len(table.index))
    width = 0.8 / max(len(cols), 1)
    for j, c in enumerate(cols):
        ax.bar(x + (j - (len(cols) - 1) / 2) * width, table[c].astype(float).fillna(0).to_numpy(), width, label=c)
    ax.scatter(x, table["chance"].astype(float).to_numpy(), marker="_", s=600, color="k", label="chance", zorder=3)
    labels = [f"{m}\n({int(q)} queries)" for m, q in zip(table.index, table["queries"], strict=True)]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of retrieved base-side latents\ndetecting the same concept")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig
