"""Experiment 2 (correlating blue and green by fine-tuning): settings per scale.

Paper values follow the write-up: 1k + 1k fine-tuning prefixes, a standard crosscoder on 40k + 40k prefixes repeated
up to 60M tokens, Gemma-2-2b layer 14, the public replication's crosscoder hyperparameters. The tiny and smoke scales
shrink every count so the notebook runs on a laptop CPU (tiny) or inside the test suite (smoke).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exp2Settings:
    pair: str
    """Model pair whose *base* model is fine-tuned: a lab pair (``"smoke"``, ``"tiny"``) or ``"gemma-2-2b"``."""
    colour_source: str
    """``"lab"`` (the lab web corpus) or ``"pile"`` (the Pile streamed with ``datasets``)."""
    n_finetune_per_colour: int
    """Prefixes per colour the two fine-tunes are trained on (write-up: 1k)."""
    n_crosscoder_per_colour: int
    """Prefixes per colour the crosscoders are trained on, each followed by its true colour token (write-up: 40k)."""
    max_prefix_tokens: int
    """Longest prefix kept (BOS included; the tokens right before the colour are kept)."""
    finetune_lr: float
    finetune_epochs: int
    finetune_batch_size: int
    n_latents: int
    """Crosscoder latents (latent triples for the tied one)."""
    train_tokens: int
    """Tokens each crosscoder is trained on, repeating the data as needed (write-up: 60M)."""
    batch_size: int
    lr: float
    l1_coeff: float
    eta: float = 2.0
    """eta of the tied crosscoder (the write-up's value)."""
    layer: int | None = None
    """Harvested layer (None: the pair's default, 14 for Gemma-2-2b)."""
    top_k: int = 3
    """A blue/green latent has both colours among its ``top_k`` positive logit-lens logits (write-up: top three)."""
    fold_final_norm: bool = True
    """Fold the final RMSNorm gain into the unembedding before the logit lens, as sae-vis does."""
    device: str = "cpu"
    dtype: str = "float32"
    """Model dtype for fine-tuning and harvesting (paper: ``"bfloat16"`` on a GPU)."""
    seed: int = 0

    @property
    def n_steps(self) -> int:
        return max(1, self.train_tokens // self.batch_size)


TABLE = {
    "smoke": Exp2Settings(pair="smoke", colour_source="lab", n_finetune_per_colour=24, n_crosscoder_per_colour=40,
                          max_prefix_tokens=128, finetune_lr=1e-3, finetune_epochs=1, finetune_batch_size=16,
                          n_latents=128, train_tokens=20_000, batch_size=256, lr=1e-3, l1_coeff=2.0),
    "tiny": Exp2Settings(pair="tiny", colour_source="lab", n_finetune_per_colour=300, n_crosscoder_per_colour=800,
                         max_prefix_tokens=128, finetune_lr=3e-4, finetune_epochs=3, finetune_batch_size=16,
                         n_latents=512, train_tokens=250_000, batch_size=512, lr=5e-4, l1_coeff=2.0),
    "paper": Exp2Settings(pair="gemma-2-2b", colour_source="pile", n_finetune_per_colour=1000,
                          n_crosscoder_per_colour=40_000, max_prefix_tokens=1024, finetune_lr=1e-5, finetune_epochs=1,
                          finetune_batch_size=8, n_latents=16_384, train_tokens=60_000_000, batch_size=4096, lr=5e-5,
                          l1_coeff=2.0, device="cuda", dtype="bfloat16"),
}
