"""Figures of notebook 05: the tying benchmark (:mod:`.tying`, matplotlib), issue 15's robustness grid, the
firing-ratio scatter, the concept AUROC heatmap, the colour triple's firing bars and the positive control's firing
bars (seaborn)."""

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


def plot_grid(table: Any, metrics: Sequence[tuple[str, str]] = (
        ("timing_one_index", "timing concepts on one index"), ("timing_one_index_strict", "... strict count"),
        ("ev_gap", "EV minus standard's"))):
    """Issue 15's robustness grid: one seaborn heatmap per metric (stacked), configs (rows) x settings (columns), each
    cell the mean over seeds with its 95% interval written under it.

    ``table``: :func:`tiedlib.synthetic.grid.summarize` (columns ``config``, ``setting``, ``<metric>``,
    ``<metric>_lo``, ``<metric>_hi``). The tied fraction is coloured on [0, 1] and the EV gap around 0. Returns the
    figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    n_cfg, n_set = table["config"].nunique(), table["setting"].nunique()
    fig, axes = plt.subplots(len(metrics), 1, figsize=(1.1 * n_set + 4, (0.45 * n_cfg + 1.6) * len(metrics)),
                             squeeze=False)  # fmt: skip
    for ax, (metric, title) in zip(axes[:, 0], metrics, strict=True):
        wide = {k: table.pivot_table(index="config", columns="setting", values=f"{metric}{k}", sort=False)
                for k in ("", "_lo", "_hi")}  # fmt: skip
        mean = wide[""]
        gap = metric == "ev_gap"
        fmt = "{:+.3f}\n[{:+.3f}, {:+.3f}]" if gap else "{:.2f}\n[{:.2f}, {:.2f}]"
        annot = mean.copy().astype(object)
        for r in mean.index:
            for c in mean.columns:
                annot.loc[r, c] = fmt.format(mean.loc[r, c], wide["_lo"].loc[r, c], wide["_hi"].loc[r, c])
        sns.heatmap(mean.astype(float), ax=ax, annot=annot.values, fmt="", annot_kws={"fontsize": 6.5},
                    cmap="RdBu" if gap else "viridis", center=0 if gap else None, vmin=None if gap else 0,
                    vmax=None if gap else 1, cbar_kws={"shrink": 0.7})  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("setting")
        ax.set_ylabel("")
        ax.tick_params(axis="x", labelrotation=40)
    fig.tight_layout()
    return fig


CORNER_COLOURS = {"other": "0.6", "top-left": "tab:red", "bottom-right": "tab:blue"}
"""Hue of the ratio scatter: chat-sided corner red, base-sided corner blue (as in notebook 01)."""


def firing_ratio_scatter(ratios: Any, *, k: int = 10, annotate: int = 3, title: str = ""):
    """base/shared (x) against chat/shared (y) firing-count ratios of every plotted triple (the write-up's Figure 2),
    coloured by corner (:func:`~.lab_pair.ratio_points`); the first ``annotate`` of each corner carry their index.

    ``ratios``: a :class:`tiedlib.analysis.firing.FiringRatios`. Triples dropped as rare or never shared are counted
    in the title. Returns the figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from tiedlib.experiments.exp5.lab_pair import ratio_points

    points = ratio_points(ratios, k)
    fig, ax = plt.subplots(figsize=(5.6, 5))
    sns.scatterplot(data=points, x="base_over_shared", y="chat_over_shared", hue="corner", palette=CORNER_COLOURS,
                    hue_order=list(CORNER_COLOURS), size="corner", sizes={"other": 10, "top-left": 30,
                    "bottom-right": 30}, alpha=0.8, ax=ax, legend="brief")  # fmt: skip
    by_index = points.set_index("index")
    for idx in points.attrs["corners"].values():
        for i in idx[:annotate]:
            ax.annotate(str(i), (by_index.at[i, "base_over_shared"], by_index.at[i, "chat_over_shared"]), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    rare, never = int((~ratios.kept).sum()), int((ratios.kept & ratios.zero_shared).sum())
    ax.set(xlabel="base count / shared count", ylabel="chat count / shared count", xlim=(0, None), ylim=(0, None))
    ax.set_title(f"{title or 'Firing-count ratios per latent triple'}\n{len(points)} triples; not shown: {rare} rare, "
                 f"{never} never shared", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return fig


def auroc_heatmap(values: Any, concepts: Sequence[str], columns: Sequence[str], *, title: str = ""):
    """Annotated heatmap of the best AUROC per concept (rows) and group / data set (columns), 0.5 white.

    ``values``: ``(n_concepts, n_columns)`` tensor or array (NaN cells stay blank). Returns the figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(np.asarray(values, dtype=float), index=list(concepts), columns=list(columns))
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 2.5, 0.28 * len(concepts) + 1.4))
    sns.heatmap(frame, annot=True, fmt=".2f", annot_kws={"fontsize": 6.5}, cmap="RdBu_r", vmin=0.0, vmax=1.0,
                center=0.5, cbar_kws={"label": "best AUROC", "fraction": 0.04}, ax=ax)  # fmt: skip
    ax.tick_params(axis="both", labelsize=8)
    ax.set_xticklabels(ax.get_xticklabels(), rotation=30, ha="right")
    ax.set_title(title or "Best latent per concept")
    fig.tight_layout()
    return fig


def triple_firing_bars(fire: dict[str, Sequence[float]], *, groups: Sequence[str] = ("shared", "base", "chat"),
                       title: str = ""):  # fmt: skip
    """Bars of the firing fraction of each group of one triple, one hue per mask (e.g. ``"blue token"``).

    ``fire``: mask name -> one fraction per group (from :func:`~.tying_lab.triple_firing`). Returns the figure.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    long = pd.DataFrame([{"group": g, "mask": name, "fraction": float(v)} for name, vals in fire.items()
                         for g, v in zip(groups, vals, strict=True)])  # fmt: skip
    fig, ax = plt.subplots(figsize=(5.5, 3))
    sns.barplot(data=long, x="group", y="fraction", hue="mask", ax=ax)
    ax.set(xlabel="", ylabel="fraction of tokens firing", ylim=(0, 1.05))
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def control_firing_bars(fractions: Any, *, title: str = ""):
    """Issue 16's positive control: for each crosscoder (one panel), the fraction of each planted position set on
    which each of its units for ``d`` fires (one hue per unit).

    ``fractions``: :meth:`~.positive_control.ControlResult.firing_fractions` (columns ``crosscoder``, ``unit``,
    ``set``, ``fraction``). Returns the figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    labels = list(dict.fromkeys(fractions["crosscoder"]))
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.2), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], labels, strict=True):
        sns.barplot(data=fractions[fractions["crosscoder"] == label], x="set", y="fraction", hue="unit", ax=ax)
        ax.set(xlabel="planted set", ylabel="fraction of positions firing", ylim=(0, 1.05), title=label)
        ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
