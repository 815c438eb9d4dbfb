"""Figures of notebook 06. Each function returns a Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tiedlib.analysis.latent_scaling import LatentScaling
from tiedlib.analysis.localisation import Localisation

COLOURS = {"standard": "tab:gray", "tied": "tab:purple", "tied_small_eta": "tab:orange", "recommended": "tab:green"}


def nu_scatter(scaling: dict[str, LatentScaling], *, threshold: float = 0.5, clip: tuple[float, float] = (-0.5, 2.0)
               ) -> Figure:  # fmt: skip
    """Latent Scaling ratios of each crosscoder's chat-only latents: ``nu_error`` (Complete Shrinkage) against
    ``nu_reconstruction`` (Latent Decoupling), thresholds dashed; the bottom-left box holds chat-specific latents.
    Ratios outside ``clip`` are drawn on its edges."""
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for name, ls in scaling.items():
        ax.scatter(
            ls.nu_reconstruction.clamp(*clip).numpy(),
            ls.nu_error.clamp(*clip).numpy(),
            s=14,
            alpha=0.6,
            color=COLOURS.get(name),
            label=f"{name} (n={ls.latents.numel()})",
        )
    ax.axvline(threshold, color="k", ls="--", lw=1)
    ax.axhline(threshold, color="k", ls="--", lw=1)
    ax.set_xlabel("nu_reconstruction = beta_rec(base) / beta_rec(chat)")
    ax.set_ylabel("nu_error = beta_err(base) / beta_err(chat)")
    ax.set_title(f"Latent Scaling of chat-only latents (clipped to {list(clip)})", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def template_fractions(loc: dict[str, Localisation], *, threshold: float = 0.5, bins: int = 20) -> Figure:
    """Histograms of the share of activation mass on template tokens and on assistant tokens, per crosscoder, each
    normalised to the crosscoder's number of latents."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    edges = np.linspace(0, 1, bins + 1)
    for ax, where in zip(axes, ("template", "assistant"), strict=True):
        for name, lo in loc.items():
            frac = (lo.template_fraction if where == "template" else lo.assistant_fraction).numpy()
            frac = frac[~np.isnan(frac)]
            # Each crosscoder's bars sum to 1 (their latent counts differ by an order of magnitude).
            ax.hist(
                frac,
                bins=edges,
                weights=np.full(frac.size, 1 / max(frac.size, 1)),
                histtype="step",
                lw=2,
                color=COLOURS.get(name),
                label=f"{name} (n={frac.size})",
            )
        ax.axvline(threshold, color="k", ls="--", lw=1)
        ax.set_xlabel(f"share of activation mass on {where} tokens")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("share of chat-only latents")
    fig.suptitle("Where chat-only latents fire")
    fig.tight_layout()
    return fig


def ablation_bars(table: pd.DataFrame) -> Figure:
    """Per row of :func:`~tiedlib.experiments.exp6.ablation.ablation_table` (synthetic ground truth, then the lab
    pair): the FVU increase of the timing ablation and of the two representation ablations, summed over the rows'
    triples, with timing's share of (timing + representation of the chat row) written beside the bars."""
    kinds = (("timing", "timing (fire alike)", "tab:orange"),
             ("representation_chat", "representation (chat row <- base)", "tab:blue"),
             ("representation_base", "representation (base row <- chat)", "tab:cyan"))  # fmt: skip
    labels = [f"{data}\n{cc}" for data, cc in table.index]
    y = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(8, 0.75 * len(table) + 1.4))
    h = 0.8 / len(kinds)
    for k, (col, label, colour) in enumerate(kinds):
        ax.barh(y + (k - 1) * h, table[col].clip(lower=0).to_numpy(float), height=h, color=colour, label=label)
    top = float(table[[c for c, _, _ in kinds]].to_numpy(float).max())
    for yi, share in zip(y, table["timing_share"].to_numpy(float), strict=True):
        ax.text(top * 1.02, yi, "n/a" if np.isnan(share) else f"timing {share:.0%}", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel("increase of the fraction of variance unexplained (sum over triples, both models)")
    ax.set_title("Which costs more: firing alike or representing alike?", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.3 / len(table)), ncol=3)
    fig.tight_layout()
    return fig
