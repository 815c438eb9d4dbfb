"""Experiment 4 (notebook 04): exclusive latents are less exclusive than shared ones (decoder max-cosines).

Modules: :mod:`.presets` (settings per scale), :mod:`.pipeline` (the crosscoder, the max-cosine panels, their
statistics and the summary), :mod:`.seeds` (the comparison over seeds), :mod:`.findings` (the glued headline numbers)
and :mod:`.figures`.
"""

from . import figures
from .findings import findings
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
    "Exp4Settings",
    "PanelStats",
    "SeedRuns",
    "StandardRun",
    "figures",
    "findings",
    "max_cosine_panels",
    "panel_stats",
    "seed_runs",
    "standard_crosscoder",
    "stats_table",
    "summary",
]
