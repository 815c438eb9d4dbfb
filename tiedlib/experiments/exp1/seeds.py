"""Experiment 1 over seeds: short tied crosscoders, one per seed of initialisation and batch order, on the same
training activations, each evaluated on the held-out web + chat sample. The chat-vs-base comparison of the exclusive
groups (L0 and dead latents) is stated with a 95% t interval over the seeds (:mod:`tiedlib.analysis.stats`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from tiedlib.analysis.firing import HeldOutMetrics, evaluate
from tiedlib.analysis.stats import Interval, t_interval, verdict
from tiedlib.config import BASE, CHAT
from tiedlib.experiments.exp1.data import HeldOutSamples, TrainingData
from tiedlib.training import train_crosscoder

# Tied groups in latent order (shared, base-only, chat-only), as HeldOutMetrics.l0 and .dead list them.
_BASE_GROUP, _CHAT_GROUP = 1, 2


@dataclass
class SeedRuns:
    """Held-out metrics of one short tied crosscoder per seed."""

    seeds: list[int]
    n_steps: int
    """Training steps of every seed run."""
    held: list[HeldOutMetrics]
    """Metrics on the web + chat sample, one per seed (``l0`` and ``dead`` per group: shared, base, chat)."""

    def l0_chat_minus_base(self) -> Interval:
        """Per-seed L0 of the chat-only group minus that of the base-only group (latents firing per token)."""
        return t_interval([float(m.l0[_CHAT_GROUP] - m.l0[_BASE_GROUP]) for m in self.held])

    def dead_chat_minus_base(self) -> Interval:
        """Per-seed dead chat-only latents minus dead base-only latents."""
        return t_interval([float(m.dead[_CHAT_GROUP] - m.dead[_BASE_GROUP]) for m in self.held])

    def explained_variance(self, model: int) -> Interval:
        """Per-seed held-out explained variance of ``model`` (``BASE`` or ``CHAT``)."""
        return t_interval([float(m.explained_variance[model]) for m in self.held])

    def l0_verdict(self) -> str:
        """Which exclusive group fires more, only where the interval of the difference excludes 0."""
        return verdict(self.l0_chat_minus_base(), above="the chat-only group fires more than the base-only group",
                       below="the base-only group fires more than the chat-only group")  # fmt: skip

    def table(self) -> dict[str, list[float]]:
        """One column per metric, one row per seed (for display)."""
        return {"seed": self.seeds,
                "explained_variance_base": [round(float(m.explained_variance[BASE]), 4) for m in self.held],
                "explained_variance_chat": [round(float(m.explained_variance[CHAT]), 4) for m in self.held],
                "l0_base": [round(float(m.l0[_BASE_GROUP]), 3) for m in self.held],
                "l0_chat": [round(float(m.l0[_CHAT_GROUP]), 3) for m in self.held],
                "dead_base": [int(m.dead[_BASE_GROUP]) for m in self.held],
                "dead_chat": [int(m.dead[_CHAT_GROUP]) for m in self.held]}  # fmt: skip

    def summary(self) -> str:
        """Two lines: what was trained, and the chat-minus-base differences with their intervals and verdict."""
        return (f"{len(self.seeds)} tied crosscoders (seeds {self.seeds}, {self.n_steps} steps each); held-out "
                f"explained variance base {self.explained_variance(BASE).text()}, chat "
                f"{self.explained_variance(CHAT).text()}.\n"
                f"L0 chat-only minus base-only: {self.l0_chat_minus_base().text()}; dead chat-only minus base-only: "
                f"{self.dead_chat_minus_base().text(1)} -> {self.l0_verdict()}.")  # fmt: skip


def seed_runs(data: TrainingData, samples: HeldOutSamples, run_dir: str | Path) -> SeedRuns:
    """Train (or load) one tied crosscoder per seed of ``data.settings.seeds`` into ``run_dir/<settings hash>/seed<k>``,
    with the settings of the headline run but ``seed_steps`` steps, initialisation and batch order seeded by the seed;
    and evaluate each on ``samples.mix``.

    Raises:
        ValueError: the settings name no seeds, or ``data`` holds no in-memory activations (the paper pair).
    """
    s = data.settings
    if not s.seeds:
        raise ValueError("settings.seeds is empty: there is nothing to train (the paper preset runs no seeds)")
    if data.activations is None:
        raise ValueError(f"pair {data.pair.name!r} streams its activations: seed runs need the in-memory lab pairs")
    # A finished run is loaded whatever its number of steps: key the folder by every setting, as exp2/exp4 run ids do.
    folder = Path(run_dir) / hashlib.sha256(repr(s).encode()).hexdigest()[:10]
    held = []
    for seed in s.seeds:
        model, _ = train_crosscoder(folder / f"seed{seed}", data.activations(), architecture="tied",
                                    n_latents=s.n_latents, n_steps=s.seed_steps, batch_size=s.batch_size, lr=s.lr,
                                    l1_coeff=s.l1_coeff, eta=s.eta, seed=seed, device=s.device,
                                    source=data.pair.fingerprint)  # fmt: skip
        model.eval()
        with torch.no_grad():
            held.append(evaluate(model, samples.mix.batches()))
    return SeedRuns(list(s.seeds), s.seed_steps, held)
