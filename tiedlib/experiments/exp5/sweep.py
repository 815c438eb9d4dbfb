"""Section 1 of notebook 05: the synthetic eta sweep over every variant, its tables, and the fix it picks.

* :func:`run_benchmark` runs :func:`~.tying.run_tying_benchmark` for every seed of the settings and aggregates the
  rows (:class:`BenchmarkResult`: its ``summary()``, ``table()`` and ``recovery_table()``).
* :func:`choose_fix` compares the standard crosscoder, the write-up's tied crosscoder at each eta and the best fix
  (:func:`~.tying_lab.best_fix`) in a :class:`FixChoice` whose ``lines()`` the notebook prints.
* :func:`best_per_variant` and :func:`row_name` serve the notebook's summary.
* :func:`run_robustness`: issue 15's robustness grid (:mod:`tiedlib.synthetic.grid`) at the notebook's scale, with
  the recommendation it picks (:class:`GridResult`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tiedlib.experiments.exp5.presets import Exp5Settings
from tiedlib.experiments.exp5.tying import BENCHMARK_SIZES, BenchmarkSize, aggregate_rows, run_tying_benchmark
from tiedlib.experiments.exp5.tying_lab import best_fix
from tiedlib.synthetic.grid import TIED_METRIC, Recommendation, recommend, run_grid, summarize

TABLE_COLUMNS = ("variant", "eta", "n", "explained_variance", "timing_one_index", "timing_n_indices",
                 "exclusive_usage", "one_sided_frac", "l0_shared", "l0_base", "l0_chat", "dead_frac")  # fmt: skip
"""Columns of :meth:`BenchmarkResult.table` (absent ones are blank)."""
RECOVERY_KINDS = ("shared", "timing", "direction", "base_only", "chat_only")
"""Feature kinds of :meth:`BenchmarkResult.recovery_table` (its ``recovery_<kind>`` columns)."""
NOT_FIXES = ("standard", "tied")
"""Variants that are the comparison, not a fix: the standard crosscoder and the write-up's tied crosscoder."""


def row_name(row: dict[str, Any]) -> str:
    """``"tied_equal (eta 2)"``, or the bare variant name when eta plays no part (``eta`` is None)."""
    return row["variant"] if row["eta"] is None else f"{row['variant']} (eta {row['eta']:g})"


@dataclass
class BenchmarkResult:
    """Every trained model's row of the sweep and their mean over seeds."""

    size: BenchmarkSize
    seeds: tuple[int, ...]
    rows: list[dict[str, Any]]
    """One row per (seed, variant, eta), from :func:`~.tying.run_tying_benchmark`."""
    agg: list[dict[str, Any]]
    """One row per (variant, eta): the mean (and ``<column>_std``) over seeds, from :func:`~.tying.aggregate_rows`."""

    def summary(self) -> str:
        """One line: how many models, the data and dictionary size, the total training time."""
        seconds = sum(r["seconds"] for r in self.rows)
        return (f"{len(self.rows)} models ({len(self.seeds)} seed(s)), {self.size.synthetic.d_model}-d rows, "
                f"{self.size.n_latents} latents / triples, {self.size.n_steps} steps each; {seconds:.0f} s of training")

    def table(self, columns: Sequence[str] = TABLE_COLUMNS) -> pd.DataFrame:
        """The aggregated rows, one per (variant, eta), with ``columns`` (missing values: NaN)."""
        return pd.DataFrame([{c: r.get(c) for c in columns} for r in self.agg])

    def recovery_table(self) -> pd.DataFrame:
        """Recovery per feature kind (mean best decoder cosine with each true direction), one row per (variant, eta);
        kinds the data lacks are left out."""
        kinds = [k for k in RECOVERY_KINDS if f"recovery_{k}" in self.agg[0]]
        return pd.DataFrame([{"variant": r["variant"], "eta": r["eta"], **{k: r[f"recovery_{k}"] for k in kinds}}
                             for r in self.agg])  # fmt: skip


def run_benchmark(settings: Exp5Settings, *, n_threads: int | None = 1) -> BenchmarkResult:
    """Run the sweep of ``settings`` (``bench_size``, ``bench_etas``, ``bench_variants``) once per seed of
    ``bench_seeds``, in that order, and aggregate over seeds."""
    size = BENCHMARK_SIZES[settings.bench_size] if isinstance(settings.bench_size, str) else settings.bench_size
    rows: list[dict[str, Any]] = []
    for seed in settings.bench_seeds:
        rows += run_tying_benchmark(size, etas=settings.bench_etas, variants=settings.bench_variants, seed=seed,
                                    n_threads=n_threads)  # fmt: skip
    return BenchmarkResult(size=size, seeds=tuple(settings.bench_seeds), rows=rows, agg=aggregate_rows(rows))


@dataclass
class FixChoice:
    """The sweep's verdict: the standard crosscoder, the write-up's tied crosscoder at each eta, and the best fix."""

    standard: dict[str, Any]
    """The standard crosscoder's aggregated row."""
    tied: list[dict[str, Any]]
    """The write-up's tied crosscoder's aggregated rows, by increasing eta."""
    fix: dict[str, Any]
    """:func:`~.tying_lab.best_fix` (``variant`` is None when no fix keeps the explained variance)."""
    ev_tolerance: float

    def lines(self) -> list[str]:
        """What the notebook prints: the standard and tied ``timing_one_index``, then the chosen fix."""
        s, f, tol = self.standard, self.fix, self.ev_tolerance
        out = [f"standard: timing_one_index {s['timing_one_index']:.2f}, EV {s['explained_variance']:.3f}",
               "write-up tied: " + ", ".join(f"eta {r['eta']:g} -> {r['timing_one_index']:.2f} "
                                             f"(one-sided {r['one_sided_frac']:.2f})" for r in self.tied)]  # fmt: skip
        if f["variant"] is None:
            out.append(f"no variant stays within {tol} EV of the standard crosscoder")
        else:
            out.append(f"best fix: {f['variant']} (eta {f['eta']}): timing_one_index {f['timing_one_index']:.2f}, "
                       f"EV {f['explained_variance']:.3f} (standard {f['baseline_ev']:.3f}; {f['candidates']} "
                       f"variant/eta rows within {tol})")
        return out


def choose_fix(agg: Sequence[dict[str, Any]], *, ev_tolerance: float = 0.03) -> FixChoice:
    """The fix with the highest ``timing_one_index`` among the non-baseline variants whose explained variance is
    within ``ev_tolerance`` of the standard crosscoder's, next to the standard and tied rows of ``agg``.

    Raises:
        ValueError: ``agg`` has no ``standard`` row.
    """
    standard = next((r for r in agg if r["variant"] == "standard"), None)
    if standard is None:
        raise ValueError("the sweep has no 'standard' row to compare with; include 'standard' in bench_variants")
    tied = sorted((r for r in agg if r["variant"] == "tied"), key=lambda r: r["eta"])
    return FixChoice(standard=standard, tied=tied, fix=best_fix(agg, ev_tolerance=ev_tolerance),
                     ev_tolerance=ev_tolerance)  # fmt: skip


def best_per_variant(agg: Sequence[dict[str, Any]], *, metric: str = "timing_one_index",
                     exclude: Sequence[str] = NOT_FIXES) -> dict[str, dict[str, Any]]:  # fmt: skip
    """For each variant not in ``exclude``, its row with the highest ``metric`` (the first one on ties), in order of
    first appearance."""
    best: dict[str, dict[str, Any]] = {}
    for r in agg:
        v = r["variant"]
        if v not in exclude and (v not in best or r[metric] > best[v][metric]):
            best[v] = r
    return best


# ---- issue 15: the robustness grid ----------------------------------------------------------------------------------
@dataclass
class GridResult:
    """The robustness grid of :mod:`tiedlib.synthetic.grid` run at one scale, summarised and with its verdict."""

    scale: str
    rows: list[dict[str, Any]]
    """One row per (setting, config, seed) from :func:`~tiedlib.synthetic.grid.run_grid`."""
    table: pd.DataFrame
    """Per (setting, config): means and 95% intervals over seeds (:func:`~tiedlib.synthetic.grid.summarize`)."""
    recommendation: Recommendation

    def summary(self) -> str:
        """One line: runs, settings, configs and seeds, training time."""
        seconds = sum(r["seconds"] for r in self.rows)
        n_set, n_cfg = self.table["setting"].nunique(), self.table["config"].nunique()
        seeds = len({r["seed"] for r in self.rows})
        return (f"grid '{self.scale}': {len(self.rows)} crosscoders = {n_set} settings x {n_cfg} configs x {seeds} "
                f"seeds; {seconds:.0f} s of training")  # fmt: skip

    def wide(self, metric: str = TIED_METRIC) -> pd.DataFrame:
        """``metric`` as a config x setting table of means (settings in grid order)."""
        return self.table.pivot_table(index="config", columns="setting", values=metric, sort=False)

    def limits(self) -> list[str]:
        """The recommendation's lines (:meth:`Recommendation.lines`), then how many settings each config passes."""
        rec = self.recommendation
        lines = list(rec.lines())
        passing = self.table.groupby("config", sort=False)["passes"].sum()
        lines.append("settings passed per config: " + ", ".join(f"{c} {int(n)}" for c, n in passing.items()))
        return lines


def run_robustness(settings: Exp5Settings, *, n_threads: int | None = 1) -> GridResult:
    """Run the grid scale ``settings.grid`` (3 seeds per setting) and pick the recommendation from all of it."""
    rows = run_grid(settings.grid, n_threads=n_threads)
    return GridResult(scale=settings.grid, rows=rows, table=summarize(rows), recommendation=recommend(rows))
