"""Experiment 4 (notebook 04): exclusive latents are less exclusive than shared ones (decoder max-cosines).

Modules: :mod:`.presets` (settings per scale), :mod:`.pipeline` (the crosscoder, the max-cosine panels, their
statistics and the summary) and :mod:`.figures`.
"""

from . import figures
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

__all__ = [
    "TABLE",
    "Exp4Settings",
    "PanelStats",
    "StandardRun",
    "figures",
    "max_cosine_panels",
    "panel_stats",
    "standard_crosscoder",
    "stats_table",
    "summary",
]
