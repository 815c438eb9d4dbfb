"""Experiment 3 settings (refusal/harmful SAE-latent overlap) per scale; notebooks call ``pick(TABLE, SCALE)``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exp3Settings:
    """What the Experiment 3 notebook runs on and how much work it does."""

    pair: str
    """``"smoke"`` or ``"tiny"`` (the offline lab pair; SAEs trained here with sae_lens) or ``"paper"``
    (Gemma-2-9b / -9b-it with Gemma Scope 16k SAEs from sae_lens's pretrained registry)."""
    layer: int | None
    """Decoder layer whose *output* (resid_post) is read; None = the lab pair's harvesting layer minus one
    (``ModelConfig.default_layer - 1``: the residual stream entering the layer the crosscoders read)."""
    n_cannot: int
    """Prompts in each of the Cannot and Can sets (write-up: 84). Lab pairs draw the held-out questions (83
    "cannot", 84 "can"), each once before any repeats with another name."""
    n_harmful: int
    """Prompts in each of the Harmful and Harmless sets (write-up: 250, Arditi et al. train split)."""
    n_mix_docs: int
    """Lab web/chat documents whose activations train each SAE (lab pairs only)."""
    web_fraction: float
    """Share of web documents in that mix."""
    d_sae_multiple: int
    """Latents per residual dimension of the lab SAEs (paper: Gemma Scope's 16k are fixed)."""
    l1_coefficient: float
    """L1 coefficient of the lab SAEs (sae_lens ``StandardTrainingSAEConfig``)."""
    train_samples: int
    """Activation vectors each lab SAE trains on (the mix is reshuffled and repeated as needed)."""
    sae_batch_size: int
    """Activation vectors per SAE training step."""
    sae_lr: float
    """Adam learning rate of the lab SAEs."""
    harvest_batch_size: int
    """Prompts per forward pass."""
    n_boot: int
    """Bootstrap draws over distinct questions (prompts without a question id count as their own)."""
    margin: float
    """Relative margin of the stricter rule: keep a latent if ``(S_a - S_b) / (S_a + S_b) > margin``."""
    top_k: int
    """Size of the top-k rule (the k latents with the largest ``S_a - S_b``)."""
    min_questions: int = 0
    """Fewest distinct questions a lab prompt set may have (:func:`~tiedlib.experiments.exp3.overlap.require_questions`
    raises below it); paper-scale sets are only counted, and the table reports the counts either way."""
    ci: float = 0.95
    """Coverage of the bootstrap intervals."""
    seed: int = 0
    """Seed of SAE training and of the bootstrap."""
    device: str = "cpu"
    """Where models and SAEs run."""
    dtype: str = "float32"
    """Model dtype (``"bfloat16"`` for Gemma-2-9b)."""

    def __post_init__(self) -> None:
        if self.pair not in ("smoke", "tiny", "paper"):
            raise ValueError(f"pair must be 'smoke', 'tiny' or 'paper', got {self.pair!r}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if min(self.n_cannot, self.n_harmful, self.n_boot, self.top_k) < 1:
            raise ValueError("n_cannot, n_harmful, n_boot and top_k must be positive")
        if self.min_questions < 0:
            raise ValueError(f"min_questions must be >= 0, got {self.min_questions}")


TABLE: dict[str, Exp3Settings] = {
    "smoke": Exp3Settings(pair="smoke", layer=None, n_cannot=24, n_harmful=24, n_mix_docs=150, web_fraction=0.5,
                          d_sae_multiple=4, l1_coefficient=1.0, train_samples=20_000, sae_batch_size=512,
                          sae_lr=1e-3, harvest_batch_size=32, n_boot=200, margin=0.1, top_k=16, min_questions=20),
    "tiny": Exp3Settings(pair="tiny", layer=None, n_cannot=84, n_harmful=250, n_mix_docs=1500, web_fraction=0.5,
                         d_sae_multiple=8, l1_coefficient=1.0, train_samples=400_000, sae_batch_size=1024,
                         sae_lr=1e-3, harvest_batch_size=64, n_boot=1000, margin=0.1, top_k=50, min_questions=80),
    "paper": Exp3Settings(pair="paper", layer=20, n_cannot=84, n_harmful=250, n_mix_docs=0, web_fraction=0.5,
                          d_sae_multiple=0, l1_coefficient=0.0, train_samples=0, sae_batch_size=0, sae_lr=0.0,
                          harvest_batch_size=8, n_boot=1000, margin=0.1, top_k=200, device="cuda",
                          dtype="bfloat16"),
}
