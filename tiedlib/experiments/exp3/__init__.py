"""Experiment 3 (notebook 03): overlap of refusal ('cannot') and harmfulness latents in base vs chat SAEs.

The notebook needs only the names re-exported here: :data:`TABLE` (settings per scale), :func:`run` (SAEs and latent
sums), :func:`analyse` (bootstrap table, correlations, Summary) and :mod:`figures`.
"""

from tiedlib.experiments.exp3 import figures
from tiedlib.experiments.exp3.presets import TABLE, Exp3Settings
from tiedlib.experiments.exp3.report import WRITE_UP_RULE, OverlapReport, analyse, selection_rules
from tiedlib.experiments.exp3.run import Exp3Data, run

__all__ = ["TABLE", "WRITE_UP_RULE", "Exp3Data", "Exp3Settings", "OverlapReport", "analyse", "figures", "run",
           "selection_rules"]
