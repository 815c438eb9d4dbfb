"""Figures of Experiment 3 (refusal/harmful SAE-latent overlap). Each returns a Figure and never calls ``show()``."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from tiedlib.experiments.exp3.overlap import MODELS, SetSums, jaccard, relative_differences, select_latents

COLOURS = {"base": "#4C72B0", "chat": "#DD8452"}
WRITE_UP = {"base": 0.19, "chat": 0.39}
"""The write-up's Jaccards (Gemma-2-9b / -9b-it, layer 20, Gemma Scope 16k SAEs)."""


def plot_overlap(rows: list[dict[str, Any]], *, write_up_rule: str | None = None, title: str = "") -> Figure:
    """Jaccard of Cannot and Harmful latents per model and selection rule (left) and chat minus base (right), with
    bootstrap intervals. ``write_up_rule`` names the row where the write-up's 0.19 / 0.39 are drawn for reference."""
    fig, (ax, ax_d) = plt.subplots(1, 2, figsize=(10, 0.9 + 0.75 * len(rows)), sharey=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(rows))[::-1]
    for dy, model in ((0.14, "base"), (-0.14, "chat")):
        pts = np.array([r[model] for r in rows])
        err = np.array([[r[model] - r[f"{model}_low"], r[f"{model}_high"] - r[model]] for r in rows]).T
        ax.errorbar(pts, y + dy, xerr=np.clip(err, 0, None), fmt="o", color=COLOURS[model], capsize=3, label=model)
    if write_up_rule is not None:
        i = [r["rule"] for r in rows].index(write_up_rule)
        for dy, model in ((0.14, "base"), (-0.14, "chat")):
            ax.plot(WRITE_UP[model], y[i] + dy, marker="D", mfc="none", mec=COLOURS[model], ms=8, ls="none",
                    label=f"write-up {model} ({WRITE_UP[model]})")
    ax.set_yticks(y, [r["rule"] for r in rows])
    ax.set_xlabel("Jaccard(Cannot latents, Harmful latents)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="lower right")
    d = np.array([r["chat_minus_base"] for r in rows])
    err = np.array([[r["chat_minus_base"] - r["chat_minus_base_low"], r["chat_minus_base_high"] - r["chat_minus_base"]]
                    for r in rows]).T
    ax_d.errorbar(d, y, xerr=np.clip(err, 0, None), fmt="s", color="k", capsize=3)
    ax_d.axvline(0, color="grey", ls="--", lw=1)
    ax_d.set_xlabel("chat minus base")
    for yi, r in zip(y, rows, strict=True):
        ax_d.annotate(f"P(chat≤base)={r['p_chat_le_base']:.2f}", (1.02, yi), xycoords=("axes fraction", "data"),
                      fontsize=8, va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_latent_differences(sums_by_model: dict[str, SetSums], *, margin: float = 0.0) -> Figure:
    """Per model, every latent's relative difference Cannot vs Can (x) against Harmful vs Harmless (y).

    The upper-right quadrant holds the latents selected by both contrasts under the write-up's rule; the dotted
    lines mark the stricter ``margin``. Each panel's title gives the Jaccard and the correlation of x and y.
    """
    fig, axes = plt.subplots(1, len(MODELS), figsize=(10, 4.6), sharex=True, sharey=True)
    rels = {m: relative_differences(sums_by_model[m]) for m in MODELS}
    lim = max([float(np.nanmax(np.abs(v.numpy()))) for r in rels.values() for v in r.values()] + [margin, 0.05])
    lim = min(1.05, 1.1 * lim)
    for ax, model in zip(axes, MODELS, strict=True):
        rel = rels[model]
        x, y = rel["refusal"].numpy(), rel["harmful"].numpy()
        ok = ~(np.isnan(x) | np.isnan(y))
        both = (x > 0) & (y > 0) & ok
        ax.scatter(x[ok & ~both], y[ok & ~both], s=6, alpha=0.35, color="grey", label="other latents")
        ax.scatter(x[both], y[both], s=8, alpha=0.6, color=COLOURS[model], label="Cannot and Harmful latent")
        for v in (0.0, margin):
            ls = "-" if v == 0 else ":"
            ax.axhline(v, color="k", lw=0.7, ls=ls)
            ax.axvline(v, color="k", lw=0.7, ls=ls)
        s = sums_by_model[model]
        j = float(jaccard(select_latents(s["cannot"].sum(0), s["can"].sum(0)),
                          select_latents(s["harmful"].sum(0), s["harmless"].sum(0))))
        r = np.corrcoef(x[ok], y[ok])[0, 1] if ok.sum() > 2 else float("nan")
        ax.set_title(f"{model}: Jaccard {j:.2f}, corr {r:.2f} ({ok.sum()} active latents)", fontsize=10)
        ax.set_xlabel("(Cannot − Can) / (Cannot + Can)")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    axes[0].set_ylabel("(Harmful − Harmless) / (Harmful + Harmless)")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig
