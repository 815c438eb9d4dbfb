"""Notebook 07 (SAE baseline and per-latent dashboards) at each scale.

One SAE per model (sae_lens, ``d_sae`` latents each) and a tied crosscoder (``n_latents`` triples, the write-up's
eta = 2) train on the same harvested activations; held-out web and chat documents score them on the lab pair's
planted concepts. ``paper`` uses the write-up's crosscoder configuration on Gemma-2-2b / -it (layer 14); it has no
concept labels, so there the precision table is empty and only the fits and the dashboards remain. The paper SAEs'
width (16,384) and L1 coefficient (5, on inputs of norm sqrt(d)) are our choices, not tuned; the paper column has not
been run (the SAEs would train from the streamed buffer, harvesting the pair again for each SAE).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tiedlib.config import scaled_l1


@dataclass(frozen=True)
class Exp7Settings:
    pair: str
    """``"smoke"``, ``"tiny"`` (lab pairs) or ``"gemma-2-2b"``."""
    n_latents: int
    """Latent triples of the tied crosscoder."""
    d_sae: int
    """Latents of each SAE."""
    train_docs: int
    """Documents (lab) or sequences (paper) of the training mix, shared by the SAEs and the crosscoder."""
    n_steps: int
    batch_size: int
    lr: float
    l1_coeff: float
    """The crosscoder's L1 coefficient."""
    sae_l1: float
    """The SAEs' L1 coefficient (sae_lens ``StandardTrainingSAEConfig.l1_coefficient``, on inputs of norm sqrt(d))."""
    sae_lr: float
    eval_docs: int
    """Held-out documents per source (web and chat)."""
    eta: float = 2.0
    web_fraction: float = 0.5
    auroc_threshold: float = 0.9
    """A latent *detects* a concept when its AUROC for it reaches this (our choice)."""
    k: int = 5
    """Base-side latents retrieved per chat-side latent (precision at 1 and at ``k`` are reported)."""
    n_dashboards: int = 6
    """Latents (tied triples) exported as dashboard pages."""
    top_k_contexts: int = 8
    model_batch_size: int = 32
    layer: int | None = None
    seq_len: int = 1024
    device: str = "cpu"
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if min(self.n_latents, self.d_sae, self.train_docs, self.n_steps, self.batch_size, self.eval_docs, self.k,
               self.n_dashboards, self.top_k_contexts) < 1:  # fmt: skip
            raise ValueError("sizes, steps, eval_docs, k, n_dashboards and top_k_contexts must be positive")
        if not 0.5 < self.auroc_threshold <= 1:
            raise ValueError(f"auroc_threshold must be in (0.5, 1], got {self.auroc_threshold}")
        if self.k > min(self.n_latents, self.d_sae):
            raise ValueError(f"k={self.k} is more than the {min(self.n_latents, self.d_sae)} latents to retrieve from")

    @property
    def run_id(self) -> str:
        """10 hex digits over every setting: the run folder changes whenever a setting changes."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:10]


TABLE: dict[str, Exp7Settings] = {
    "smoke": Exp7Settings(pair="smoke", n_latents=32, d_sae=32, train_docs=40, n_steps=60, batch_size=128, lr=3e-3,
                          l1_coeff=0.5, sae_l1=1.0, sae_lr=3e-3, eval_docs=10, k=3, n_dashboards=2,
                          top_k_contexts=3, log_every=20),
    "tiny": Exp7Settings(pair="tiny", n_latents=192, d_sae=192, train_docs=300, n_steps=400, batch_size=256, lr=1e-3,
                         l1_coeff=scaled_l1(128), sae_l1=1.0, sae_lr=1e-3, eval_docs=80),
    "paper": Exp7Settings(pair="gemma-2-2b", layer=14, n_latents=16_384, d_sae=16_384, train_docs=250_000,
                          n_steps=61_035, batch_size=4096, lr=5e-5, l1_coeff=2.0, sae_l1=5.0, sae_lr=5e-5,
                          eval_docs=64, model_batch_size=8, device="cuda", log_every=500),
}  # fmt: skip
"""Settings per scale; use ``tiedlib.config.pick(TABLE, SCALE, **overrides)``."""
