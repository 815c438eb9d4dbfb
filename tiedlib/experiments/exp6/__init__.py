"""Notebook 06 (next steps: the evaluations the field expects): spliced CE/KL, Latent Scaling and localisation of a
standard crosscoder and three tied ones (the write-up's at eta 2 and at a smaller eta, the recommended configuration)
trained on the same activations; totally new chat latents of the tied ones; the timing/representation ablation of the
write-up's tied one.

Modules: :mod:`.presets` (settings per scale), :mod:`.pipeline` (training, held-out data, the three evaluations, their
tables and the findings), :mod:`.novel` (new chat latents and the planted concepts they match), :mod:`.ablation`
(timing vs representation, with its synthetic ground truth) and :mod:`.figures`.
"""

from . import figures, novel
from .ablation import (
    SyntheticAblationSize,
    ablation_findings,
    ablation_table,
    ideal_costs,
    lab_costs,
    synthetic_ground_truth,
    train_synthetic,
)
from .pipeline import (
    ARCHITECTURES,
    Crosscoders,
    HeldOut,
    chat_latent_scaling,
    chat_localisation,
    chat_only_candidates,
    crosscoder_config,
    findings,
    held_out,
    load,
    localisation_table,
    scaling_table,
    spliced_evaluation,
    summary,
    train_crosscoders,
)
from .presets import TABLE, Exp6Settings

__all__ = [
    "ARCHITECTURES",
    "crosscoder_config",
    "novel",
    "SyntheticAblationSize",
    "ablation_findings",
    "ablation_table",
    "ideal_costs",
    "lab_costs",
    "synthetic_ground_truth",
    "train_synthetic",
    "TABLE",
    "Crosscoders",
    "Exp6Settings",
    "HeldOut",
    "chat_latent_scaling",
    "chat_localisation",
    "chat_only_candidates",
    "figures",
    "findings",
    "held_out",
    "load",
    "localisation_table",
    "scaling_table",
    "spliced_evaluation",
    "summary",
    "train_crosscoders",
]
