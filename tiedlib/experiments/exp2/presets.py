"""Experiment 2 (correlating blue and green by fine-tuning): settings per scale.

The colour toy (which base model is fine-tuned, on which prefixes) is :data:`tiedlib.pairs.colours.COLOUR_TOY`,
shared with Experiment 5; this module adds the crosscoders trained on it. Paper values follow the write-up: a standard
crosscoder on 40k + 40k prefixes repeated up to 60M tokens, Gemma-2-2b layer 14, the public replication's crosscoder
hyperparameters. The tiny and smoke scales shrink every count so the notebook runs on a laptop CPU (tiny) or inside
the test suite (smoke).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tiedlib.config import scaled_l1
from tiedlib.pairs.colours import COLOUR_TOY, ColourToyConfig


@dataclass(frozen=True)
class Exp2Settings:
    toy: ColourToyConfig
    """The colour toy: source pair, colour sets and the two fine-tunes (:data:`COLOUR_TOY` of the scale)."""
    n_latents: int
    """Crosscoder latents (latent triples for the tied one)."""
    train_tokens: int
    """Tokens each crosscoder is trained on, repeating the data as needed (write-up: 60M)."""
    batch_size: int
    lr: float
    l1_coeff: float
    eta: float = 2.0
    """eta of the tied crosscoder (the write-up's value)."""
    top_k: int = 3
    """A blue/green latent has both colours among its ``top_k`` positive logit-lens logits (write-up: top three)."""
    fold_final_norm: bool = True
    """Fold the final RMSNorm gain into the unembedding before the logit lens, as sae-vis does."""
    n_held_out: int = 200
    """Held-out prefixes per colour on which the fine-tunes' colour choice is measured."""
    device: str = "cpu"
    """Device the crosscoders are trained on."""
    seed: int = 0
    """Seed of crosscoder initialisation and batch order."""

    def __post_init__(self) -> None:
        if min(self.n_latents, self.train_tokens, self.batch_size, self.top_k, self.n_held_out) < 1:
            raise ValueError("n_latents, train_tokens, batch_size, top_k and n_held_out must be positive")
        if self.lr <= 0 or self.l1_coeff < 0:
            raise ValueError(f"need lr > 0 and l1_coeff >= 0, got lr={self.lr}, l1_coeff={self.l1_coeff}")

    @property
    def n_steps(self) -> int:
        """Training steps of each crosscoder: ``train_tokens // batch_size`` (at least 1)."""
        return max(1, self.train_tokens // self.batch_size)

    @property
    def run_id(self) -> str:
        """10 hex digits over every setting: crosscoder runs change folder whenever a setting changes."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:10]


TABLE = {
    "smoke": Exp2Settings(toy=COLOUR_TOY["smoke"], n_latents=128, train_tokens=20_000, batch_size=256, lr=1e-3,
                          l1_coeff=2.0),
    "tiny": Exp2Settings(toy=COLOUR_TOY["tiny"], n_latents=512, train_tokens=250_000, batch_size=512, lr=5e-4,
                         l1_coeff=scaled_l1(128)),
    "paper": Exp2Settings(toy=COLOUR_TOY["paper"], n_latents=16_384, train_tokens=60_000_000, batch_size=4096, lr=5e-5,
                          l1_coeff=2.0, device="cuda"),
}
