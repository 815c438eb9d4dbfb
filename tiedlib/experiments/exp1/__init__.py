"""Experiment 1 (notebook 01): the tied crosscoder, firing-count ratios, top activations of a triple's parts.

The notebook imports only this package: the pipeline modules (:mod:`.data`, :mod:`.models`, :mod:`.ratios`,
:mod:`.corners`, :mod:`.ground_truth`, :mod:`.compare`, :mod:`.baseline`, :mod:`.seeds`, :mod:`.summary`,
:mod:`.findings`), :mod:`.figures`, the settings of :mod:`.presets`, and the
core names it calls directly (re-exported below).
"""

from tiedlib.analysis.widgets import LatentBrowser, latent_html
from tiedlib.experiments.exp1 import figures
from tiedlib.experiments.exp1.baseline import (
    CHAT_EXCLUSIVE,
    ConceptBaseline,
    StandardBaseline,
    best_tied_triple,
    concept_baseline,
    pick_query,
    standard_baseline,
)
from tiedlib.experiments.exp1.compare import ArchResults, analyse, precision_tables, side_by_side
from tiedlib.experiments.exp1.corners import CornerShares, corner_shares, sample_corner_shares, shares_table
from tiedlib.experiments.exp1.data import HeldOutSamples, TrainingData, heldout_samples, prepare_training, quiet_logs
from tiedlib.experiments.exp1.findings import findings
from tiedlib.experiments.exp1.ground_truth import (
    ConceptScores,
    CornerConcepts,
    RefusalTriple,
    concept_scores,
    concept_share,
    corner_concepts,
    focus_triple,
    refusal_triple,
)
from tiedlib.experiments.exp1.models import (
    held_out_metrics,
    held_out_table,
    recommended_config,
    recommended_crosscoder,
    standard_config,
    standard_crosscoder,
    tied_config,
    tied_crosscoder,
    train_config,
)
from tiedlib.experiments.exp1.presets import TABLE, Exp1Settings
from tiedlib.experiments.exp1.ratios import RatioScatter, ratio_scatter
from tiedlib.experiments.exp1.seeds import SeedRuns, seed_runs
from tiedlib.experiments.exp1.summary import summary
from tiedlib.pairs import is_lab, load_pair

__all__ = [
    "ArchResults",
    "CHAT_EXCLUSIVE",
    "CornerShares",
    "TABLE",
    "ConceptBaseline",
    "ConceptScores",
    "CornerConcepts",
    "Exp1Settings",
    "HeldOutSamples",
    "LatentBrowser",
    "RatioScatter",
    "RefusalTriple",
    "SeedRuns",
    "StandardBaseline",
    "TrainingData",
    "analyse",
    "best_tied_triple",
    "concept_baseline",
    "concept_scores",
    "concept_share",
    "corner_concepts",
    "corner_shares",
    "figures",
    "findings",
    "focus_triple",
    "held_out_metrics",
    "held_out_table",
    "heldout_samples",
    "is_lab",
    "latent_html",
    "load_pair",
    "pick_query",
    "precision_tables",
    "prepare_training",
    "quiet_logs",
    "ratio_scatter",
    "recommended_config",
    "recommended_crosscoder",
    "refusal_triple",
    "sample_corner_shares",
    "seed_runs",
    "shares_table",
    "side_by_side",
    "standard_baseline",
    "standard_config",
    "standard_crosscoder",
    "summary",
    "tied_config",
    "tied_crosscoder",
    "train_config",
]
