"""Figures of Experiment 2 (blue/green correlation by fine-tuning). Each function returns a Figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from tiedlib.analysis.figures import relative_norm_histogram  # noqa: F401 (re-exported for the notebook)

COLOUR_TOKENS = {" blue": "tab:blue", " green": "tab:green"}


def top_logits_panels(panels: Sequence[tuple[str, list[tuple[str, float]]]]) -> Figure:
    """One horizontal bar chart per ``(title, [(token, logit), ...])``, largest logit on top; the " blue" and " green"
    bars are coloured (the write-up's Figure 10)."""
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), squeeze=False)
    for ax, (title, tokens) in zip(axes[0], panels, strict=False):
        labels = [repr(t) for t, _ in tokens][::-1]
        values = [v for _, v in tokens][::-1]
        colours = [COLOUR_TOKENS.get(t, "lightgray") for t, _ in tokens][::-1]
        ax.barh(range(len(values)), values, color=colours)
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("logit-lens logit")
    for ax in axes[0][len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def triple_firing_bars(fractions: dict[str, Sequence[float]], model_names: tuple[str, str] = ("base", "chat")
                       ) -> Figure:
    """Grouped bars: for each token set (key), the firing fraction of each group (shared, base only, chat only) of
    one tied latent triple."""
    groups = ["shared", f"{model_names[0]} only", f"{model_names[1]} only"]
    rows = [{"group": g, "tokens": name, "fraction": float(v)}
            for name, vals in fractions.items() for g, v in zip(groups, vals, strict=True)]
    fig, ax = plt.subplots(figsize=(5, 3))
    sns.barplot(data=pd.DataFrame(rows), x="group", y="fraction", hue="tokens", order=groups, ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("fraction of tokens firing")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tied_firing_comparison(triples: dict[str, Any], model_names: tuple[str, str] = ("base", "chat")) -> Figure:
    """One panel per tied crosscoder (``{label: TiedColourTriple}``), side by side with a shared y axis: the firing
    fraction of each group of its inspected blue/green triple on colour tokens and on all tokens; a crosscoder with no
    passing index gets an empty panel that says so."""
    groups = ["shared", f"{model_names[0]} only", f"{model_names[1]} only"]
    n = max(1, len(triples))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.2), squeeze=False, sharey=True)
    for ax, (label, t) in zip(axes[0], triples.items(), strict=False):
        if t.firing is None:
            ax.text(0.5, 0.5, "no index passes\nthe blue/green test", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_xticks([])
        else:
            rows = [{"group": g, "tokens": name, "fraction": float(v)}
                    for name, vals in t.firing.items() for g, v in zip(groups, vals, strict=True)]
            sns.barplot(data=pd.DataFrame(rows), x="group", y="fraction", hue="tokens", order=groups, ax=ax)
            ax.legend(fontsize=7)
        ax.set_title(label + ("" if t.triple is None else f": triple {t.triple}"), fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("fraction of tokens firing")
    fig.tight_layout()
    return fig
