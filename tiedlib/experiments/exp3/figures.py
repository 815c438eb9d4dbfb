"""Figures of Experiment 3 (refusal/harmful SAE-latent overlap). Each returns a Figure and never calls ``show()``."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from tiedlib.experiments.exp3.overlap import (
    MODELS,
    POSITIONS,
    SetSums,
    difference_correlation,
    overlap,
    relative_differences,
)

COLOURS = {"base": "#4C72B0", "chat": "#DD8452"}
WRITE_UP = {"base": 0.19, "chat": 0.39}
"""The write-up's Jaccards (Gemma-2-9b / -9b-it, layer 20, Gemma Scope 16k SAEs)."""
BOTH, OTHER = "Cannot and Harmful latent", "other latents"
"""The two kinds of latent in the scatter of :func:`plot_latent_differences`."""


def _label(row: dict[str, Any]) -> str:
    return f"{row['rule']}\n{POSITIONS[row['positions']]}" if "positions" in row else row["rule"]


def plot_overlap(rows: list[dict[str, Any]], *, write_up_rule: str | None = None, title: str = "") -> Figure:
    """Jaccard of Cannot and Harmful latents per model and row (selection rule, and position set when rows have
    ``"positions"``) (left) and chat minus base (right), with bootstrap intervals. ``write_up_rule`` names the rule
    whose all-token row gets the write-up's 0.19 / 0.39 drawn for reference (the write-up summed all tokens)."""
    fig, (ax, ax_d) = plt.subplots(1, 2, figsize=(10, 0.9 + 0.6 * len(rows)), sharey=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(rows))[::-1]
    for dy, model in ((0.14, "base"), (-0.14, "chat")):
        pts = np.array([r[model] for r in rows])
        err = np.array([[r[model] - r[f"{model}_low"], r[f"{model}_high"] - r[model]] for r in rows]).T
        ax.errorbar(pts, y + dy, xerr=np.clip(err, 0, None), fmt="o", color=COLOURS[model], capsize=3, label=model)
    if write_up_rule is not None:
        i = next(j for j, r in enumerate(rows) if r["rule"] == write_up_rule and r.get("positions", "all") == "all")
        for dy, model in ((0.14, "base"), (-0.14, "chat")):
            ax.plot(WRITE_UP[model], y[i] + dy, marker="D", mfc="none", mec=COLOURS[model], ms=8, ls="none",
                    label=f"write-up {model} ({WRITE_UP[model]})")
    ax.set_yticks(y, [_label(r) for r in rows], fontsize=8)
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


def latent_difference_frame(sums_by_model: dict[str, SetSums]) -> pd.DataFrame:
    """Long table of every latent active on all four sets, per model: ``model``, ``latent``, ``refusal`` and
    ``harmful`` (relative differences of :func:`relative_differences`) and ``kind`` (:data:`BOTH` when both are
    positive, i.e. the write-up rule selects the latent for both contrasts, else :data:`OTHER`)."""
    parts = []
    for model in MODELS:
        rel = relative_differences(sums_by_model[model])
        x, y = rel["refusal"].numpy(), rel["harmful"].numpy()
        ok = ~(np.isnan(x) | np.isnan(y))
        both = (x > 0) & (y > 0)
        parts.append(pd.DataFrame({"model": model, "latent": np.flatnonzero(ok), "refusal": x[ok], "harmful": y[ok],
                                   "kind": np.where(both[ok], BOTH, OTHER)}))
    return pd.concat(parts, ignore_index=True)


def plot_latent_differences(sums_by_model: dict[str, SetSums], *, margin: float = 0.0) -> Figure:
    """Per model, every latent's relative difference Cannot vs Can (x) against Harmful vs Harmless (y) (seaborn
    scatter, hue: selected for both contrasts or not).

    The upper-right quadrant holds the latents selected by both contrasts under the write-up's rule; the dotted
    lines mark the stricter ``margin``. Each panel's title gives the Jaccard and the correlation of x and y.
    """
    frame = latent_difference_frame(sums_by_model)
    fig, axes = plt.subplots(1, len(MODELS), figsize=(10, 4.6), sharex=True, sharey=True)
    lim = max([float(frame[["refusal", "harmful"]].abs().to_numpy().max(initial=0.0)), margin, 0.05])
    lim = min(1.05, 1.1 * lim)
    for ax, model in zip(axes, MODELS, strict=True):
        sub = frame[frame["model"] == model]
        sns.scatterplot(data=sub, x="refusal", y="harmful", hue="kind", hue_order=[OTHER, BOTH],
                        palette={OTHER: "grey", BOTH: COLOURS[model]}, s=8, alpha=0.5, linewidth=0, ax=ax,
                        legend=ax is axes[0])
        for v in (0.0, margin):
            ls = "-" if v == 0 else ":"
            ax.axhline(v, color="k", lw=0.7, ls=ls)
            ax.axvline(v, color="k", lw=0.7, ls=ls)
        j = overlap(sums_by_model[model])[0]
        r = difference_correlation(sums_by_model[model])
        ax.set_title(f"{model}: Jaccard {j:.2f}, corr {r:.2f} ({len(sub)} active latents)", fontsize=10)
        ax.set_xlabel("(Cannot − Can) / (Cannot + Can)")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    axes[0].set_ylabel("(Harmful − Harmless) / (Harmful + Harmless)")
    axes[0].legend(fontsize=8, loc="lower left", title=None)
    fig.tight_layout()
    return fig
