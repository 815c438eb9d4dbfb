"""Notebook 07 (SAE baseline and per-latent dashboards): SAEs on base and chat activations matched by decoder cosine,
against a tied crosscoder's triples, on the lab pair's planted concepts; static dashboards of the tied triples.

Modules: :mod:`.presets` (settings per scale), :mod:`.pipeline` (training, held-out data, concept tables, matches,
dashboards and findings) and :mod:`.figures`.
"""

from . import figures
from .pipeline import (
    ConceptTables,
    Models,
    concept_tables,
    dashboard_latents,
    dashboards,
    findings,
    held_out,
    load,
    matches,
    precision,
    summary,
    train_models,
)
from .presets import TABLE, Exp7Settings

__all__ = [
    "TABLE",
    "ConceptTables",
    "Exp7Settings",
    "Models",
    "concept_tables",
    "dashboard_latents",
    "dashboards",
    "figures",
    "findings",
    "held_out",
    "load",
    "matches",
    "precision",
    "summary",
    "train_models",
]
