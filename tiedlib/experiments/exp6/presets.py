"""Notebook 06 (next steps: the evaluations the field expects) at each scale.

A standard crosscoder, the write-up's tied crosscoder (eta = 2), the write-up's tied crosscoder at a smaller eta and
the recommended tied configuration are trained on the same activations and compared on spliced CE/KL, Latent Scaling
of their chat-only latents, where those latents fire and (tied ones) how many chat latents are totally new.
``paper`` uses the write-up's configuration (Gemma-2-2b / -it, layer 14, 16,384 latents, 250M tokens at 4,096 a step,
lr 5e-5, l1 coefficient 2); ``tiny`` and ``smoke`` scale it down to the offline lab pair, with a larger learning rate
so a CPU run converges.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tiedlib.config import scaled_l1


@dataclass(frozen=True)
class Exp6Settings:
    pair: str
    """``"smoke"``, ``"tiny"`` (lab pairs) or ``"gemma-2-2b"``."""
    n_latents: int
    """Latents of the standard crosscoder and latent triples of the tied one."""
    train_docs: int
    """Documents (lab) or sequences (paper) of the training mix."""
    n_steps: int
    batch_size: int
    lr: float
    l1_coeff: float
    eval_docs: int
    """Held-out documents per source (web and chat) for Latent Scaling and localisation."""
    ce_docs: int
    """Held-out documents per source (web and chat) for the spliced CE/KL."""
    eta: float = 2.0
    """The tied crosscoder's penalty factor for its base and chat parts (the write-up's 2)."""
    small_eta: float = 1.25
    """eta of the second write-up tied crosscoder (the write-up: "I believe that if we use a smaller eta we may find
    some totally new chat latents"). Kept above 1: the write-up takes eta > 1 so that a concept both models fire is
    cheaper on the shared part; at eta <= 1 a base and a chat firing cost no more than one shared firing, the shared
    part has no reason to fire, and every chat part would count as new by construction."""
    new_min_fires: int = 10
    """A chat part is judged (new or not) when it fires on at least this many held-out chat tokens."""
    new_max_overlap: float = 0.1
    """New chat latent: at most this share of its chat part's firings have the triple's shared part firing too."""
    match_k: int = 20
    """Lab pairs: precision at k of a new chat latent's chat part for each planted concept."""
    match_precision: float = 0.5
    """Lab pairs: a new chat latent matches its best concept when the precision at k reaches this ..."""
    match_purity: float = 0.5
    """... and its purity over chance, (P(concept | fires) - chance) / (1 - chance), reaches this."""
    web_fraction: float = 0.5
    high: float = 0.7
    """Standard crosscoder: chat-exclusive when the relative decoder norm exceeds this (the write-up's threshold)."""
    min_active: int = 5
    """Chat-only latents firing on fewer held-out tokens are left out of Latent Scaling and localisation."""
    nu_threshold: float = 0.5
    """A latent is flagged (Complete Shrinkage / Latent Decoupling) when its ratio exceeds this (our choice)."""
    template_threshold: float = 0.5
    """A latent "fires mainly on template tokens" when more than this share of its activation mass is there."""
    ce_batch_size: int = 8
    model_batch_size: int = 32
    layer: int | None = None
    seq_len: int = 1024
    """Paper pair only: tokens per held-out sequence."""
    device: str = "cpu"
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if min(self.n_latents, self.train_docs, self.n_steps, self.batch_size, self.eval_docs, self.ce_docs) < 1:
            raise ValueError("n_latents, train_docs, n_steps, batch_size, eval_docs and ce_docs must be positive")
        for name in ("high", "template_threshold"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if not (self.small_eta > 0 and self.new_min_fires >= 1 and self.match_k >= 1 and 0 <= self.new_max_overlap < 1):
            raise ValueError(f"need small_eta > 0, new_min_fires >= 1, match_k >= 1 and new_max_overlap in [0, 1), got "
                             f"{self.small_eta}, {self.new_min_fires}, {self.match_k}, {self.new_max_overlap}")
        if self.nu_threshold <= 0 or self.min_active < 1:
            raise ValueError(f"need nu_threshold > 0 and min_active >= 1, got {self.nu_threshold}, {self.min_active}")

    @property
    def run_id(self) -> str:
        """10 hex digits over every setting: the run folder changes whenever a setting changes."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:10]


TABLE: dict[str, Exp6Settings] = {
    "smoke": Exp6Settings(pair="smoke", n_latents=64, train_docs=60, n_steps=60, batch_size=256, lr=2e-3,
                          l1_coeff=0.5, eval_docs=12, ce_docs=3, ce_batch_size=3, min_active=2, new_min_fires=3,
                          match_k=5, log_every=20),
    "tiny": Exp6Settings(pair="tiny", n_latents=256, train_docs=700, n_steps=700, batch_size=512, lr=1e-3,
                         l1_coeff=scaled_l1(128), eval_docs=120, ce_docs=16),
    "paper": Exp6Settings(pair="gemma-2-2b", layer=14, n_latents=16_384, train_docs=250_000, n_steps=61_035,
                          batch_size=4096, lr=5e-5, l1_coeff=2.0, eval_docs=64, ce_docs=32, ce_batch_size=2,
                          model_batch_size=8, device="cuda", log_every=500),
}  # fmt: skip
"""Settings per scale; use ``tiedlib.config.pick(TABLE, SCALE, **overrides)``."""
