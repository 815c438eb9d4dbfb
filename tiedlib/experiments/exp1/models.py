"""Experiment 1's crosscoders (the write-up's tied one, the project's recommended tied configuration and the standard
baseline, all trained on the same data, or loaded from released checkpoints) and their held-out metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from tiedlib.analysis.contexts import TokenSample
from tiedlib.analysis.firing import HeldOutMetrics, evaluate
from tiedlib.config import CrosscoderConfig, TrainConfig
from tiedlib.crosscoders.checkpoints import load_crosscoder
from tiedlib.crosscoders.crosscoder import Crosscoder, recommended_tied_config
from tiedlib.experiments.exp1.data import TrainingData
from tiedlib.experiments.exp1.presets import Exp1Settings
from tiedlib.training import train_or_load


def train_config(settings: Exp1Settings, n_steps: int) -> TrainConfig:
    """The optimisation settings both crosscoders share; only the number of steps differs."""
    return TrainConfig(n_steps=n_steps, lr=settings.lr, l1_coeff=settings.l1_coeff, device=settings.device,
                       log_every=settings.log_every, progress=True)  # fmt: skip


def tied_config(settings: Exp1Settings, d_model: int) -> CrosscoderConfig:
    """The tied crosscoder: ``n_latents`` triples (shared, base, chat) and the write-up's penalty exponent ``eta``."""
    return CrosscoderConfig(d_model=d_model, n_latents=settings.n_latents, architecture="tied", eta=settings.eta)


def recommended_config(settings: Exp1Settings, d_model: int) -> CrosscoderConfig:
    """The project's recommended tied configuration (:func:`tiedlib.crosscoders.crosscoder.recommended_tied`: the
    written-disagreement penalty, ``shared_penalty="written"``, at its eta) with the write-up model's
    ``n_latents`` triples (:func:`~tiedlib.crosscoders.crosscoder.recommended_tied_config`)."""
    return recommended_tied_config(d_model, settings.n_latents)


def standard_config(settings: Exp1Settings, d_model: int) -> CrosscoderConfig:
    """The standard crosscoder of the baseline (``standard_n_latents`` latents)."""
    return CrosscoderConfig(d_model=d_model, n_latents=settings.standard_n_latents, architecture="standard")


def _train_or_checkpoint(checkpoint: str | None, run_dir: Path, cfg: CrosscoderConfig, train_cfg: TrainConfig,
                         data: TrainingData) -> tuple[Crosscoder, list[dict]]:  # fmt: skip
    if checkpoint:
        model, log = load_crosscoder(checkpoint, device=data.settings.device), []
        if model.cfg.needs_norm_factors and model.cfg.norm_factors is None:
            set_estimated_norm_factors(model, data)
    else:
        model, log = train_or_load(run_dir, cfg, train_cfg, data.make_data, source=data.pair.fingerprint)
    model.eval()
    return model, log


def set_estimated_norm_factors(model: Crosscoder, data: TrainingData, log: Callable[[str], None] = print) -> None:
    """Give a released crosscoder (which stores no normalisation factors) the factors of this experiment's training
    activations: :func:`tiedlib.activations.estimate_norm_factors` on the raw harvested training mix, as the
    in-memory batches or activation buffer of ``data.make_data()`` carry them. Prints that they were estimated.

    Raises:
        ValueError: the training data carries no ``norm_factors`` to take.
    """
    factors = getattr(data.make_data(), "norm_factors", None)
    if factors is None:
        raise ValueError(
            f"cannot estimate normalisation factors for {model.source or 'the released checkpoint'}: the training "
            "data source has no norm_factors (expected InMemoryBatches or an ActivationBuffer)"
        )
    model.set_norm_factors_(factors)
    log(f"{model.source or 'released checkpoint'}: normalisation factors (base, chat) "
        f"{[round(float(f), 6) for f in model.cfg.norm_factors]} estimated on this experiment's training activations "
        "(the release does not store them)")  # fmt: skip


def tied_crosscoder(data: TrainingData, run_dir: str | Path) -> tuple[Crosscoder, list[dict]]:
    """Train the tied crosscoder into ``run_dir`` (or load the finished run there), or load ``settings.checkpoint``.

    Returns the crosscoder in eval mode and its logged metrics (empty for a released checkpoint).
    """
    s = data.settings
    return _train_or_checkpoint(s.checkpoint, Path(run_dir), tied_config(s, data.pair.d_model),
                                train_config(s, s.n_steps), data)  # fmt: skip


def recommended_crosscoder(data: TrainingData, run_dir: str | Path) -> tuple[Crosscoder, list[dict]]:
    """Train the recommended tied crosscoder (:func:`recommended_config`) into ``run_dir`` (or load it) on the same
    data, with the same optimiser settings and steps as :func:`tied_crosscoder`. Never a released checkpoint: the
    write-up released none with this penalty."""
    s = data.settings
    return _train_or_checkpoint(None, Path(run_dir), recommended_config(s, data.pair.d_model),
                                train_config(s, s.n_steps), data)  # fmt: skip


def standard_crosscoder(data: TrainingData, run_dir: str | Path) -> tuple[Crosscoder, list[dict]]:
    """Train the standard baseline into ``run_dir`` (or load it), or load ``settings.standard_checkpoint``."""
    s = data.settings
    return _train_or_checkpoint(s.standard_checkpoint, Path(run_dir), standard_config(s, data.pair.d_model),
                                train_config(s, s.standard_n_steps), data)  # fmt: skip


def held_out_metrics(model: Crosscoder, samples: Mapping[str, TokenSample]) -> dict[str, HeldOutMetrics]:
    """Explained variance, L0, dead latents and firing counts of ``model`` on each named sample."""
    return {name: evaluate(model, s.batches()) for name, s in samples.items()}


def held_out_table(held: Mapping[str, HeldOutMetrics]) -> pd.DataFrame:
    """One column per sample, one row per metric (``explained_variance_base``, ``l0_shared``, ``dead_chat``, ...)."""
    return pd.DataFrame({name: m.as_dict() for name, m in held.items()})
