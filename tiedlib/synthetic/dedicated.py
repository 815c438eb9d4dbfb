"""A Dedicated-Feature-style crosscoder for the robustness grid of issue 15 (:mod:`tiedlib.synthetic.grid`).

:class:`DedicatedCrosscoder` is a standard crosscoder whose dictionary is partitioned into base-only, chat-only and
shared latents, in the spirit of Dedicated Feature Crosscoders (arXiv 2602.11729, REFERENCE.md): a base-only latent
has no chat decoder half and vice versa, enforced after every optimizer step. The partition sizes are attributes of
the instance, not config fields, so :meth:`save_pretrained` round-trips its weights but not the partition: it is a
benchmark model, trained and evaluated in one process.
"""

from __future__ import annotations

import torch

from tiedlib.config import BASE, CHAT, CrosscoderConfig
from tiedlib.crosscoders.crosscoder import StandardCrosscoder


class DedicatedCrosscoder(StandardCrosscoder):
    """Standard crosscoder with latents ``[0, n_base_only)`` base-only, the next ``n_chat_only`` chat-only and the
    rest shared (free halves). The missing halves are zero from the start and after every step, so the
    decoder-norm-weighted L1 of a one-model latent is its one half's norm."""

    def __init__(self, cfg: CrosscoderConfig, *, n_base_only: int, n_chat_only: int) -> None:
        if n_base_only < 0 or n_chat_only < 0 or n_base_only + n_chat_only >= cfg.n_latents:
            raise ValueError(
                f"need n_base_only, n_chat_only >= 0 leaving at least one shared latent of {cfg.n_latents}, "
                f"got {n_base_only} and {n_chat_only}"
            )
        super().__init__(cfg)
        self.n_base_only, self.n_chat_only = n_base_only, n_chat_only
        self.apply_constraints_()

    @torch.no_grad()
    def apply_constraints_(self) -> None:
        super().apply_constraints_()
        nb, nc = getattr(self, "n_base_only", 0), getattr(self, "n_chat_only", 0)  # unset during super().__init__
        self.W_dec[:nb, CHAT] = 0
        self.W_dec[nb : nb + nc, BASE] = 0

