"""Figures of Experiment 2 (blue/green correlation by fine-tuning). Each function returns a Figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

COLOUR_TOKENS = {" blue": "tab:blue", " green": "tab:green"}


def relative_norm_histogram(
    r: torch.Tensor, *, low: float = 0.3, high: float = 0.7, title: str = "",
    model_names: tuple[str, str] = ("base", "chat"),
    bins: int = 50,
) -> Figure:
    """Histogram of relative decoder norms with the exclusivity thresholds marked (log count axis)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(r.detach().cpu().numpy(), bins=bins, range=(0, 1), color="tab:gray")
    for x in (low, high):
        ax.axvline(x, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel(f"relative decoder norm  ||d_{model_names[1]}|| / (||d_{model_names[0]}|| + ||d_{model_names[1]}||)")
    ax.set_ylabel("latents")
    ax.set_title(title or "relative decoder norms")
    ax.text(low / 2, 0.97, f"{model_names[0]}-\nexclusive", transform=ax.get_xaxis_transform(), ha="center", va="top",
            fontsize=8)
    ax.text((1 + high) / 2, 0.97, f"{model_names[1]}-\nexclusive", transform=ax.get_xaxis_transform(), ha="center",
            va="top", fontsize=8)
    fig.tight_layout()
    return fig


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


def triple_firing_bars(fractions: dict[str, Sequence[float]], group_names: Sequence[str] = ("shared", "base", "chat")
                       ) -> Figure:
    """Grouped bars: for each data set (key), the firing fraction of each group of one tied latent triple."""
    fig, ax = plt.subplots(figsize=(5, 3))
    width = 0.8 / max(1, len(fractions))
    for j, (name, vals) in enumerate(fractions.items()):
        ax.bar([i + j * width for i in range(len(group_names))], list(vals), width=width, label=name)
    ax.set_xticks([i + width * (len(fractions) - 1) / 2 for i in range(len(group_names))], list(group_names))
    ax.set_ylabel("fraction of tokens firing")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
