"""Figures of the tying benchmark (:mod:`.tying`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def plot_tying_benchmark(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = ("timing_one_index",
                         "explained_variance", "exclusive_usage", "one_sided_frac")):  # fmt: skip
    """One panel per metric against eta: a line per eta-swept variant, a horizontal line for the others.

    Returns the matplotlib figure (never shows it). ``rows`` may come from :func:`run_tying_benchmark` or
    :func:`aggregate_rows` (then ``<metric>_std`` is drawn as error bars).
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    names = list(dict.fromkeys(r["variant"] for r in rows))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, name in enumerate(names):
            mine = [r for r in rows if r["variant"] == name and r.get(metric) is not None]
            color = f"C{i % 10}"
            if not mine:
                continue
            if mine[0]["eta"] is None:
                ax.axhline(mine[0][metric], color=color, ls="--", lw=1, label=name)
                continue
            mine.sort(key=lambda r: r["eta"])
            err = [r.get(f"{metric}_std", 0.0) for r in mine]
            ax.errorbar([r["eta"] for r in mine], [r[metric] for r in mine], yerr=err, color=color, marker="o",
                        ms=3, capsize=2, label=name)  # fmt: skip
        ax.set_xlabel("eta")
        ax.set_title(metric)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
