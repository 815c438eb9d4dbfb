"""What notebook 03 shows of one Experiment 3 run: the selection rules, the overlap table, the per-latent correlations
and the Summary, computed from the :class:`~tiedlib.experiments.exp3.run.Exp3Data` of :func:`run`.

The notebook calls :func:`analyse` once and displays the :class:`OverlapReport` it returns; every number the page
prints comes from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tiedlib.analysis.stats import Interval, verdict
from tiedlib.experiments.exp3.overlap import MODELS, difference_correlation, overlap_table
from tiedlib.experiments.exp3.presets import Exp3Settings
from tiedlib.experiments.exp3.run import Exp3Data

WRITE_UP_RULE = "write-up (S_a > S_b)"
"""Label of the write-up's own selection rule (a latent is selected when ``S_a > S_b``); always the first rule."""
TABLE_COLUMNS = [
    "base", "base_low", "base_high", "base_chance", "chat", "chat_low", "chat_high", "chat_chance",
    "chat_minus_base", "chat_minus_base_low", "chat_minus_base_high", "p_chat_le_base",
    "base_n_cannot", "base_n_harmful", "chat_n_cannot", "chat_n_harmful",
]
"""Columns of :meth:`OverlapReport.table`, in display order (keys of :func:`overlap_table` rows)."""


def selection_rules(margin: float, top_k: int) -> dict[str, dict[str, Any]]:
    """The four selection rules of the page, label -> keyword arguments of
    :func:`~tiedlib.experiments.exp3.overlap.select_latents`: the write-up's ``S_a > S_b``, a relative ``margin``,
    the ``top_k`` latents, and both (top-k among the latents that pass the margin)."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    return {
        WRITE_UP_RULE: {},
        f"margin {margin:.2f}": {"margin": margin},
        f"top {top_k}": {"top_k": top_k},
        f"top {top_k} + margin": {"top_k": top_k, "margin": margin},
    }


@dataclass(frozen=True)
class OverlapReport:
    """The analysed run: one :func:`overlap_table` row per selection rule plus the per-latent correlations."""

    scale: str
    """The notebook's ``SCALE`` (printed first in the Summary)."""
    data: Exp3Data
    """The run it analyses (sums, prompts, SAE stats, provenance, lab ground truth)."""
    rows: list[dict[str, Any]]
    """One row per rule of :func:`selection_rules`, the write-up rule first (see :func:`overlap_table`)."""
    correlations: dict[str, float]
    """Model -> :func:`difference_correlation` of its sums (Cannot vs Harmful preference of each latent)."""
    ci: float
    """Coverage of the bootstrap intervals in ``rows``."""

    @property
    def write_up(self) -> dict[str, Any]:
        """The row of the write-up's rule."""
        return next(r for r in self.rows if r["rule"] == WRITE_UP_RULE)

    def table(self, decimals: int = 3) -> pd.DataFrame:
        """Rules (index) by :data:`TABLE_COLUMNS`, rounded to ``decimals``."""
        return pd.DataFrame(self.rows).set_index("rule")[TABLE_COLUMNS].round(decimals)

    def title(self) -> str:
        """Title of the overlap figure: scale and interval coverage."""
        return f"Cannot/Harmful latent overlap ({self.scale} scale, {int(self.ci * 100)}% bootstrap intervals)"

    def robust_rules(self) -> list[str]:
        """Rules whose interval for chat minus base lies above zero."""
        return [r["rule"] for r in self.rows if r["chat_minus_base_low"] > 0]

    def recovered(self) -> bool:
        """Whether the write-up rule finds chat > base with an interval that excludes zero (the planted effect)."""
        w = self.write_up
        return w["chat_minus_base"] > 0 and w["chat_minus_base_low"] > 0

    def summary(self) -> str:
        """The page's Summary: scale and models, the write-up rule against the write-up's numbers and chance, the
        stricter rules, the correlations and (lab pairs) whether the planted harm/refusal coupling is recovered."""
        w, rows, corr = self.write_up, self.rows, self.correlations
        lines = [
            f"Scale {self.scale!r}: {self.data.description}.",
            f"Write-up rule: Jaccard base {w['base']:.2f} [{w['base_low']:.2f}, {w['base_high']:.2f}], "
            f"chat {w['chat']:.2f} [{w['chat_low']:.2f}, {w['chat_high']:.2f}] (write-up: base 0.19, chat 0.39; "
            f"chance level for sets of these sizes: base {w['base_chance']:.2f}, chat {w['chat_chance']:.2f}); "
            f"chat - base {w['chat_minus_base']:+.2f} [{w['chat_minus_base_low']:+.2f}, "
            f"{w['chat_minus_base_high']:+.2f}].",
        ]
        for r in rows:
            if r is w:
                continue
            lines.append(
                f"{r['rule']}: base {r['base']:.2f} [{r['base_low']:.2f}, {r['base_high']:.2f}], chat {r['chat']:.2f} "
                f"[{r['chat_low']:.2f}, {r['chat_high']:.2f}], chat - base {r['chat_minus_base']:+.2f} "
                f"[{r['chat_minus_base_low']:+.2f}, {r['chat_minus_base_high']:+.2f}], "
                f"P(chat <= base) {r['p_chat_le_base']:.2f}.")
        lines.append(f"Rules whose interval for chat - base excludes zero: {self.robust_rules() or 'none'} "
                     f"(of {len(rows)}).")
        lines.append(f"Correlation of the per-latent preferences (Cannot vs Harmful): base {corr['base']:.2f}, "
                     f"chat {corr['chat']:.2f}.")
        if self.data.truth is not None:
            t = self.data.truth
            lines.append(
                f"Planted in the lab corpus: harm-refusal correlation phi {t['web']['phi']:.2f} in web vs "
                f"{t['chat']['phi']:.2f} in chat documents. The write-up's measure "
                f"{'recovers' if self.recovered() else 'does not clearly recover'} it at this scale "
                f"(chat - base {w['chat_minus_base']:+.2f}, interval [{w['chat_minus_base_low']:+.2f}, "
                f"{w['chat_minus_base_high']:+.2f}]).")
        return "\n".join(lines)


    def findings(self) -> dict[str, str]:
        """Every headline number of notebook 03, formatted, under a stable ``exp3_*`` key (glued by the notebook for
        the book's Findings page and the README). The verdict names a direction only when the bootstrap interval of
        chat - base excludes zero (:func:`tiedlib.analysis.stats.verdict`)."""
        w = self.write_up
        # A bootstrap interval over prompts, not over seeds (n = 0 seeds): only its bounds are read by verdict().
        diff = Interval(w["chat_minus_base"], w["chat_minus_base_low"], w["chat_minus_base_high"], 0)
        t = self.data.truth
        out = {
            "exp3_setup": f"{self.scale} scale: {self.data.description}",
            "exp3_jaccard": f"base {w['base']:.2f} [{w['base_low']:.2f}, {w['base_high']:.2f}], chat {w['chat']:.2f} "
                            f"[{w['chat_low']:.2f}, {w['chat_high']:.2f}]",
            "exp3_chance": f"base {w['base_chance']:.2f}, chat {w['chat_chance']:.2f}",
            "exp3_diff": f"{w['chat_minus_base']:+.2f} [{w['chat_minus_base_low']:+.2f}, "
                         f"{w['chat_minus_base_high']:+.2f}] ({int(self.ci * 100)}% bootstrap over prompts)",
            "exp3_verdict": verdict(diff, above="chat overlaps more than base", below="base overlaps more than chat"),
            "exp3_robust": f"{len(self.robust_rules())} of {len(self.rows)} rules"
                           + (f" ({', '.join(self.robust_rules())})" if self.robust_rules() else ""),
            "exp3_correlation": f"base {self.correlations['base']:.2f}, chat {self.correlations['chat']:.2f}",
        }  # fmt: skip
        if t is None:
            out["exp3_planted"] = out["exp3_recovered"] = "n/a (no ground truth for this pair)"
        else:
            out["exp3_planted"] = f"phi {t['web']['phi']:.2f} in web vs {t['chat']['phi']:.2f} in chat documents"
            out["exp3_recovered"] = "yes" if self.recovered() else "no"
        return out


def analyse(data: Exp3Data, settings: Exp3Settings, scale: str) -> OverlapReport:
    """Bootstrap the overlap under every rule of :func:`selection_rules` (``settings.n_boot`` draws, seed
    ``settings.seed``) and correlate the per-latent preferences of each model."""
    rules = selection_rules(settings.margin, settings.top_k)
    rows = overlap_table(data.sums, rules, n_boot=settings.n_boot, ci=settings.ci, seed=settings.seed)
    corr = {model: difference_correlation(data.sums[model]) for model in MODELS}
    return OverlapReport(scale, data, rows, corr, settings.ci)
