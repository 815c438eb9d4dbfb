"""Experiment 4 (exclusive latents are less exclusive than shared ones): settings per scale.

At paper scale the standard crosscoder is the public replication's released checkpoint
(``ckkissane/crosscoder-gemma-2-2b-model-diff``, 16,384 latents, Gemma-2-2b vs -it, layer 14); at the tiny and smoke
scales the notebook trains one on the lab pair, harvested on :func:`tiedlib.lab.crosscoder_mix`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tiedlib.config import scaled_l1


@dataclass(frozen=True)
class Exp4Settings:
    pair: str
    """``"smoke"``, ``"tiny"`` (lab pairs) or ``"gemma-2-2b"``."""
    checkpoint: str | None
    """A crosscoder to load instead of training one: a tiedlib folder or a released ``.pt`` file (None: train)."""
    n_docs: int
    """Documents of the lab crosscoder mix harvested for training."""
    web_fraction: float
    n_latents: int
    n_steps: int
    batch_size: int
    lr: float
    l1_coeff: float
    low: float = 0.3
    """Base-exclusive: relative decoder norm below this (the write-up's threshold)."""
    high: float = 0.7
    """Chat-exclusive: relative decoder norm above this."""
    chunk_size: int = 1024
    """Side of the largest cosine block held in memory."""
    layer: int | None = None
    bins: int = 40
    device: str = "cpu"
    seed: int = 0
    norm_docs: int = 64
    """Documents of the pair's training mix harvested to estimate a released checkpoint's normalisation factors
    (the releases do not store them)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds (initialisation and batch order, on the headline run's documents) of the short runs whose comparison
    gets a 95% interval (:mod:`.seeds`); empty: no seed runs (the paper scale analyses one released checkpoint)."""
    seed_steps: int = 300
    """Training steps of each seed run (shorter than ``n_steps`` to fit the book's time budget)."""
    heldout_docs: int = 200
    """Held-out documents (``web_fraction`` web, the rest chat) on which a latent must fire at least once to be live;
    dead latents are left out of every panel (:mod:`.dead`)."""

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high <= 1:
            raise ValueError(f"need 0 <= low <= high <= 1, got low={self.low}, high={self.high}")
        if self.checkpoint is None and min(self.n_docs, self.n_latents, self.n_steps, self.batch_size) < 1:
            raise ValueError("training a crosscoder needs positive n_docs, n_latents, n_steps and batch_size")
        if self.checkpoint is not None and self.norm_docs < 1:
            raise ValueError("a released checkpoint needs norm_docs >= 1 documents to estimate its norm factors")
        if min(self.chunk_size, self.bins, self.heldout_docs) < 1:
            raise ValueError("chunk_size, bins and heldout_docs must be positive")

    @property
    def run_id(self) -> str:
        """10 hex digits over every setting: the run folder changes whenever a setting changes."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:10]


TABLE = {
    "smoke": Exp4Settings(pair="smoke", checkpoint=None, n_docs=200, web_fraction=0.5, n_latents=256, n_steps=300,
                          batch_size=256, lr=1e-3, l1_coeff=2.0, chunk_size=64, seeds=(0, 1),
                          seed_steps=10, heldout_docs=20),
    "tiny": Exp4Settings(pair="tiny", checkpoint=None, n_docs=3000, web_fraction=0.5, n_latents=1024, n_steps=1500,
                         batch_size=512, lr=5e-4, l1_coeff=scaled_l1(128), chunk_size=256),
    "paper": Exp4Settings(pair="gemma-2-2b", checkpoint="crosscoder-gemma-2-2b-model-diff/cc_weights.pt", n_docs=0,
                          web_fraction=0.5, n_latents=16_384, n_steps=0, batch_size=4096, lr=5e-5, l1_coeff=2.0,
                          chunk_size=2048, device="cuda", seeds=(), heldout_docs=64),
}
