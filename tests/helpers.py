"""Builders with tiny defaults for tests (d_model=16, 64 latents, CPU, float32)."""

from __future__ import annotations

import torch

from tiedlib import CrosscoderConfig, TrainConfig, make_crosscoder


def make_cfg(**overrides) -> CrosscoderConfig:
    kwargs = dict(d_model=16, n_latents=64, architecture="standard")
    kwargs.update(overrides)
    return CrosscoderConfig(**kwargs)


def make_model(**overrides):
    return make_crosscoder(make_cfg(**overrides))


def make_train_cfg(**overrides) -> TrainConfig:
    kwargs = dict(n_steps=20, lr=1e-3, log_every=5, progress=False)
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def random_rows(n: int = 512, d_model: int = 16, seed: int = 0) -> torch.Tensor:
    """Correlated paired activations: a shared random code seen by both models plus model-specific noise."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.relu(torch.randn(n, 32, generator=gen) - 1.0)
    dirs = torch.randn(32, 2, d_model, generator=gen)
    return torch.einsum("nk,kmd->nmd", codes, dirs) + 0.05 * torch.randn(n, 2, d_model, generator=gen)
