"""What notebook 03 shows of one Experiment 3 run: the selection rules, the overlap table (one row per rule and
position set: all tokens, end of prompt), the per-latent correlations and the Summary, computed from the
:class:`~tiedlib.experiments.exp3.run.Exp3Data` of :func:`run`.

The notebook calls :func:`analyse` once and displays the :class:`OverlapReport` it returns; every number the page
prints comes from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tiedlib.analysis.stats import Interval, verdict
from tiedlib.experiments.exp3.overlap import MODELS, POSITIONS, SET_PAIRS, difference_correlation, overlap_table
from tiedlib.experiments.exp3.presets import Exp3Settings
from tiedlib.experiments.exp3.run import Exp3Data

WRITE_UP_RULE = "write-up (S_a > S_b)"
"""Label of the write-up's own selection rule (a latent is selected when ``S_a > S_b``); always the first rule."""
SETS = [name for pair in SET_PAIRS.values() for name in pair]
"""The four prompt sets: cannot, can, harmful, harmless."""
TABLE_COLUMNS = [
    "base", "base_low", "base_high", "base_chance", "chat", "chat_low", "chat_high", "chat_chance",
    "chat_minus_base", "chat_minus_base_low", "chat_minus_base_high", "p_chat_le_base",
    "base_n_cannot", "base_n_harmful", "chat_n_cannot", "chat_n_harmful", *(f"n_questions_{k}" for k in SETS),
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


def row_label(row: dict[str, Any]) -> str:
    """``"<rule>, <positions label>"`` of an :class:`OverlapReport` row (e.g. ``"top 50, end of prompt"``)."""
    return f"{row['rule']}, {POSITIONS[row['positions']]}"


def _interval(r: dict[str, Any], key: str, signed: bool = False) -> str:
    f = "+.2f" if signed else ".2f"
    return f"{r[key]:{f}} [{r[f'{key}_low']:{f}}, {r[f'{key}_high']:{f}}]"


@dataclass(frozen=True)
class OverlapReport:
    """The analysed run: one :func:`overlap_table` row per selection rule and position set, plus the per-latent
    correlations."""

    scale: str
    """The notebook's ``SCALE`` (printed first in the Summary)."""
    data: Exp3Data
    """The run it analyses (sums, prompts, question ids, SAE stats, provenance, lab ground truth)."""
    rows: list[dict[str, Any]]
    """One row per (position set, rule of :func:`selection_rules`), ``"all"`` positions first and the write-up rule
    first within each (see :func:`overlap_table`; ``row["positions"]`` is a key of
    :data:`~tiedlib.experiments.exp3.overlap.POSITIONS`)."""
    correlations: dict[str, dict[str, float]]
    """Positions -> model -> :func:`difference_correlation` of its sums (Cannot vs Harmful preference of each
    latent)."""
    ci: float
    """Coverage of the bootstrap intervals in ``rows``."""

    def row(self, rule: str = WRITE_UP_RULE, positions: str = "all") -> dict[str, Any]:
        """The row of ``rule`` summed over ``positions`` (``"all"`` or ``"end"``)."""
        for r in self.rows:
            if r["rule"] == rule and r["positions"] == positions:
                return r
        raise KeyError(f"no row for rule {rule!r} at positions {positions!r}")

    @property
    def write_up(self) -> dict[str, Any]:
        """The row of the write-up's rule over all tokens (the write-up's own measure)."""
        return self.row(WRITE_UP_RULE, "all")

    @property
    def write_up_end(self) -> dict[str, Any]:
        """The row of the write-up's rule over the end-of-prompt tokens only."""
        return self.row(WRITE_UP_RULE, "end")

    def table(self, decimals: int = 3) -> pd.DataFrame:
        """(positions, rule) (index) by :data:`TABLE_COLUMNS`, rounded to ``decimals``."""
        frame = pd.DataFrame(self.rows)
        frame["positions"] = frame["positions"].map(POSITIONS)
        return frame.set_index(["positions", "rule"])[TABLE_COLUMNS].round(decimals)

    def title(self) -> str:
        """Title of the overlap figure: scale, interval coverage and bootstrap unit."""
        return (f"Cannot/Harmful latent overlap ({self.scale} scale, {int(self.ci * 100)}% intervals, bootstrap over "
                f"{self.data.bootstrap_unit()})")

    def robust_rules(self) -> list[str]:
        """Rows (:func:`row_label`) whose interval for chat minus base lies above zero."""
        return [row_label(r) for r in self.rows if r["chat_minus_base_low"] > 0]

    def recovered(self) -> bool:
        """Whether the write-up rule finds chat > base with an interval that excludes zero (the planted effect)."""
        w = self.write_up
        return w["chat_minus_base"] > 0 and w["chat_minus_base_low"] > 0

    def questions(self) -> str:
        """Distinct questions and prompts per set, in words."""
        q, n = self.data.question_counts(), self.data.prompt_counts()
        return ", ".join(f"{k} {q[k]} ({n[k]} prompts)" for k in q)

    def summary(self) -> str:
        """The page's Summary: scale and models, the write-up rule (all tokens, then end of prompt) against the
        write-up's numbers and chance, the bootstrap unit and question counts, the stricter rules, the correlations and
        (lab pairs) whether the planted harm/refusal coupling is recovered."""
        w, e, corr = self.write_up, self.write_up_end, self.correlations
        lines = [
            f"Scale {self.scale!r}: {self.data.description}.",
            f"Write-up rule, all tokens: Jaccard base {_interval(w, 'base')}, chat {_interval(w, 'chat')} (write-up: "
            f"base 0.19, chat 0.39; chance level for sets of these sizes: base {w['base_chance']:.2f}, chat "
            f"{w['chat_chance']:.2f}); chat - base {_interval(w, 'chat_minus_base', True)}.",
            f"Write-up rule, end of prompt: Jaccard base {_interval(e, 'base')}, chat {_interval(e, 'chat')} (chance: "
            f"base {e['base_chance']:.2f}, chat {e['chat_chance']:.2f}); chat - base "
            f"{_interval(e, 'chat_minus_base', True)}.",
            f"Intervals: {int(self.ci * 100)}% paired bootstrap over {self.data.bootstrap_unit()}; distinct questions "
            f"per set: {self.questions()}.",
        ]
        for r in self.rows:
            if r["rule"] == WRITE_UP_RULE:
                continue
            lines.append(
                f"{row_label(r)}: base {_interval(r, 'base')}, chat {_interval(r, 'chat')}, chat - base "
                f"{_interval(r, 'chat_minus_base', True)}, P(chat <= base) {r['p_chat_le_base']:.2f}.")
        lines.append(f"Rows whose interval for chat - base excludes zero: {self.robust_rules() or 'none'} "
                     f"(of {len(self.rows)}).")
        lines.append("Correlation of the per-latent preferences (Cannot vs Harmful): " + "; ".join(
            f"{POSITIONS[p]} base {corr[p]['base']:.2f}, chat {corr[p]['chat']:.2f}" for p in corr) + ".")
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
        the book's Findings page and the README): the write-up rule over all tokens (``exp3_jaccard``, ...) and over
        the end of prompt (``exp3_jaccard_end``, ...). A verdict names a direction only when the bootstrap interval of
        chat - base excludes zero (:func:`tiedlib.analysis.stats.verdict`)."""
        t = self.data.truth
        out = {
            "exp3_setup": f"{self.scale} scale: {self.data.description}",
            "exp3_questions": f"{self.questions()}; bootstrap over {self.data.bootstrap_unit()}",
            "exp3_robust": f"{len(self.robust_rules())} of {len(self.rows)} (rule, positions) rows"
                           + (f" ({'; '.join(self.robust_rules())})" if self.robust_rules() else ""),
            "exp3_correlation": "; ".join(f"{POSITIONS[p]}: base {c['base']:.2f}, chat {c['chat']:.2f}"
                                          for p, c in self.correlations.items()),
        }  # fmt: skip
        for suffix, r in (("", self.write_up), ("_end", self.write_up_end)):
            # A bootstrap interval over questions, not over seeds (n = 0 seeds): only its bounds are read by verdict().
            diff = Interval(r["chat_minus_base"], r["chat_minus_base_low"], r["chat_minus_base_high"], 0)
            out[f"exp3_jaccard{suffix}"] = f"base {_interval(r, 'base')}, chat {_interval(r, 'chat')}"
            out[f"exp3_chance{suffix}"] = f"base {r['base_chance']:.2f}, chat {r['chat_chance']:.2f}"
            out[f"exp3_diff{suffix}"] = (f"{_interval(r, 'chat_minus_base', True)} ({int(self.ci * 100)}% bootstrap "
                                         f"over {self.data.bootstrap_unit()})")
            out[f"exp3_verdict{suffix}"] = verdict(diff, above="chat overlaps more than base",
                                                   below="base overlaps more than chat")
        if t is None:
            out["exp3_planted"] = out["exp3_recovered"] = "n/a (no ground truth for this pair)"
        else:
            out["exp3_planted"] = f"phi {t['web']['phi']:.2f} in web vs {t['chat']['phi']:.2f} in chat documents"
            out["exp3_recovered"] = "yes" if self.recovered() else "no"
        return out


def analyse(data: Exp3Data, settings: Exp3Settings, scale: str) -> OverlapReport:
    """Bootstrap the overlap under every rule of :func:`selection_rules` and position set (``settings.n_boot`` draws
    over the distinct questions of ``data.question_ids``, seed ``settings.seed``) and correlate the per-latent
    preferences of each model."""
    rules = selection_rules(settings.margin, settings.top_k)
    rows = [{"positions": pos, **row}
            for pos in POSITIONS
            for row in overlap_table(data.sums[pos], rules, clusters=data.question_ids, n_boot=settings.n_boot,
                                     ci=settings.ci, seed=settings.seed)]
    corr = {pos: {model: difference_correlation(data.sums[pos][model]) for model in MODELS} for pos in POSITIONS}
    return OverlapReport(scale, data, rows, corr, settings.ci)
