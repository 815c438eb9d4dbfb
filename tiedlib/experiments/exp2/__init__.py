"""Experiment 2 (notebook 02): colour fine-tunes that correlate blue and green, and the exclusive latents a
crosscoder then learns on them.

Modules: :mod:`.presets` (settings per scale), :mod:`.toy` (the colour toy, its fine-tunes' colour choice),
:mod:`.latents` (standard crosscoders and their blue/green latents by category), :mod:`.tied` (a tied crosscoder's
blue/green triple: the write-up's and the recommended one), :mod:`.report` (the closing summary) and :mod:`.figures`.
"""

from . import figures
from .latents import (
    ARCHITECTURES,
    CategoryColourLatents,
    acts_report,
    collect,
    colour_latents_by_category,
    final_metrics,
    fit_summary,
    train,
)
from .presets import TABLE, Exp2Settings
from .report import summary
from .tied import TiedColourTriple, tied_colour_triple
from .toy import HeldOutChoice, finetune_report, held_out_choice, load_colour_toy, sets_report, unembeddings

__all__ = [
    "ARCHITECTURES",
    "TABLE",
    "CategoryColourLatents",
    "Exp2Settings",
    "HeldOutChoice",
    "TiedColourTriple",
    "acts_report",
    "collect",
    "colour_latents_by_category",
    "figures",
    "final_metrics",
    "finetune_report",
    "fit_summary",
    "held_out_choice",
    "load_colour_toy",
    "sets_report",
    "summary",
    "tied_colour_triple",
    "train",
    "unembeddings",
]
