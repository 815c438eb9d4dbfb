"""Experiment 4's headline numbers as text, keyed ``exp4_*``: the notebook glues each one (myst-nb) for the book's
Findings page and for ``scripts/findings.py``, which writes them into the README."""

from __future__ import annotations

from collections.abc import Sequence

from tiedlib.analysis.cosines import ExclusiveVsShared

from .dead import Alive
from .pipeline import PanelStats, StandardRun
from .presets import Exp4Settings
from .seeds import SeedRuns


def findings(settings: Exp4Settings, run: StandardRun, panels: Sequence[ExclusiveVsShared],
             stats: Sequence[PanelStats], *, scale: str, seeds: SeedRuns | None = None,
             alive: Alive | None = None) -> dict[str, str]:  # fmt: skip
    """Every headline number of notebook 04, formatted, under a stable ``exp4_*`` key (arguments as in
    :func:`~.pipeline.summary`; ``seeds`` from :func:`~.seeds.seed_runs`, None when the scale runs none; ``alive``
    from :func:`~.dead.alive_latents`, None when dead latents were not measured)."""
    if len(stats) != 2 or [s.query for s in stats] != ["base", "chat"]:
        raise ValueError(f"need the base and chat panel statistics in that order, got {[s.query for s in stats]}")
    cats = panels[0].categories
    fit = run.final
    out = {
        "exp4_setup": f"{scale} scale, {settings.pair} pair, "
                      f"{sum(len(c) for c in cats) if alive is None else alive.mask.numel()} latents"
                      + (f", {settings.n_steps} steps" if run.metrics else f" ({run.data})"),
        "exp4_fit": (f"explained variance {fit['explained_variance']:.3f}, L0 {fit['l0']:.1f}" if fit
                     else "released checkpoint (no training log)"),
        "exp4_categories": f"{len(cats.base_exclusive)} base-exclusive, {len(cats.shared)} shared, "
                           f"{len(cats.chat_exclusive)} chat-exclusive" + ("" if alive is None else " (live latents)"),
        "exp4_dead": "not measured" if alive is None else alive.text(),
    }  # fmt: skip
    for s in stats:
        out[f"exp4_{s.query}_medians"] = (f"exclusive {s.median_exclusive:.2f} (n={s.n_exclusive}) vs shared "
                                          f"{s.median_shared:.2f} (n={s.n_shared})")  # fmt: skip
    if seeds is None:
        none = "no seed runs at this scale"
        out.update(exp4_seeds=none, exp4_seed_base=none, exp4_seed_chat=none, exp4_seed_verdict=none,
                   exp4_seed_dead=none, exp4_null_base=none, exp4_null_chat=none, exp4_null_verdict=none)
    else:
        out["exp4_seeds"] = f"{len(seeds.seeds)} seeds x {seeds.n_steps} steps"
        out["exp4_seed_base"] = seeds.difference_text("base")
        out["exp4_seed_chat"] = seeds.difference_text("chat")
        out["exp4_seed_verdict"] = f"base query: {seeds.verdict('base')}; chat query: {seeds.verdict('chat')}"
        out["exp4_seed_dead"] = seeds.dead_text()
        out["exp4_null_base"] = seeds.null_text("base")
        out["exp4_null_chat"] = seeds.null_text("chat")
        out["exp4_null_verdict"] = (f"base query: {seeds.null_verdict('base')}; chat query: "
                                    f"{seeds.null_verdict('chat')}")
    return out
