"""Dead latents of Experiment 4: a latent that never fires on a held-out sample of the pair's data is left out of every
panel (its decoder vector was never trained towards anything, so its max cosine says nothing about exclusivity)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from tiedlib.activations.harvest import HarvestBatch, harvest
from tiedlib.analysis.firing import firing_counts
from tiedlib.pairs import heldout_sequences, load_pair

from .presets import Exp4Settings


def heldout_sample(settings: Exp4Settings) -> list[HarvestBatch]:
    """Raw paired activations of ``settings.heldout_docs`` held-out documents (``web_fraction`` of them web, the rest
    chat; the lab pair's ``heldout`` split, or held-out Pile/LMSys rows for the paper pair), BOS and padding dropped,
    template tokens kept as in training."""
    pair = load_pair(settings.pair, layer=settings.layer, device=settings.device)
    n_web = round(settings.heldout_docs * settings.web_fraction)
    web, _ = heldout_sequences(pair, "web", n_web)
    chat, _ = heldout_sequences(pair, "chat", settings.heldout_docs - n_web)
    seqs = [*web, *chat]
    return list(harvest(pair.base, pair.chat, seqs, pair.layer, progress=False))


@dataclass
class Alive:
    """Which latents of one crosscoder fired at least once on the held-out sample."""

    mask: Bool[Tensor, " n_latents"]
    """True for a latent that fired (in any latent group) on at least one held-out token."""
    n_tokens: int
    """Held-out tokens counted."""

    @property
    def n_dead(self) -> int:
        return int((~self.mask).sum())

    def text(self) -> str:
        """``"<dead> of <n> latents dead (no firing on <tokens> held-out tokens), left out of every panel"``."""
        return (f"{self.n_dead} of {self.mask.numel()} latents dead (no firing on {self.n_tokens:,} held-out tokens), "
                "left out of every panel")


def alive_latents(crosscoder: Any, sample: Sequence[HarvestBatch | Tensor]) -> Alive:
    """Latents of ``crosscoder`` that fire (activation > 0, :func:`tiedlib.analysis.firing.firing_counts`) on at least
    one token of ``sample`` (raw activations, scaled by the crosscoder's normalisation factors).

    Raises:
        ValueError: the sample holds no token (every latent would count as dead).
    """
    counts = firing_counts(crosscoder, sample)
    if counts.n_tokens == 0:
        raise ValueError("the held-out sample holds no token: cannot tell dead latents from live ones")
    return Alive(counts.counts.sum(dim=0) > 0, counts.n_tokens)


def alive_index(alive: Bool[Tensor, " n_latents"] | None, n_latents: int) -> Tensor:
    """Indices of the live latents (all ``n_latents`` when ``alive`` is None)."""
    if alive is None:
        return torch.arange(n_latents)
    if alive.shape != (n_latents,):
        raise ValueError(f"alive mask of shape {tuple(alive.shape)} does not match {n_latents} latents")
    return torch.nonzero(alive.cpu()).flatten()
