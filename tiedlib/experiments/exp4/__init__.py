"""Experiment 4 (notebook 04): exclusive latents are less exclusive than shared ones (decoder max-cosines).

Modules: :mod:`.presets` (settings per scale), :mod:`.pipeline` (the crosscoder, the max-cosine panels, their
statistics and the summary), :mod:`.dead` (dead latents, left out of every panel), :mod:`.seeds` (the comparison over
seeds), :mod:`.null` (the null comparison: partners looked for in a crosscoder that differs only in seed),
:mod:`.findings` (the glued headline numbers) and :mod:`.figures`.
"""

from . import figures
from .dead import Alive, alive_latents, heldout_sample
from .findings import findings
from .null import cross_seed_panels
from .pipeline import (
    PanelStats,
    StandardRun,
    max_cosine_panels,
    panel_stats,
    standard_crosscoder,
    stats_table,
    summary,
)
from .presets import TABLE, Exp4Settings
from .seeds import SeedRuns, seed_runs

__all__ = [
    "TABLE",
    "Alive",
    "Exp4Settings",
    "PanelStats",
    "SeedRuns",
    "StandardRun",
    "alive_latents",
    "cross_seed_panels",
    "figures",
    "findings",
    "heldout_sample",
    "max_cosine_panels",
    "panel_stats",
    "seed_runs",
    "standard_crosscoder",
    "stats_table",
    "summary",
]
