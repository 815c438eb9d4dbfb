"""Crosscoders of the robustness grid (issue 15) that the config alone cannot describe yet.

* :class:`DedicatedCrosscoder`: a standard crosscoder whose dictionary is partitioned into base-only, chat-only and
  shared latents, in the spirit of Dedicated Feature Crosscoders (arXiv 2602.11729, REFERENCE.md): a base-only latent
  has no chat decoder half and vice versa, enforced after every optimizer step.
* :class:`WrittenPenaltyTied`: a tied crosscoder whose penalty charges each triple for what it *writes* into each
  model, plus ``eta - 1`` times the gap between the two models where they disagree
  (:func:`tiedlib.crosscoders.losses.written_disagreement_penalty`).

Both keep the parent's ``CrosscoderConfig`` (the partition sizes and the penalty are attributes of the instance, not
config fields), so :meth:`save_pretrained` round-trips their weights but not the partition or the penalty: they are
benchmark models, trained and evaluated in one process by :mod:`tiedlib.synthetic.grid`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tiedlib.config import BASE, CHAT, CrosscoderConfig
from tiedlib.crosscoders import losses
from tiedlib.crosscoders.crosscoder import StandardCrosscoder, TiedCrosscoder


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


class WrittenPenaltyTied(TiedCrosscoder):
    """Tied crosscoder trained with :func:`~tiedlib.crosscoders.losses.written_disagreement_penalty` (plain autograd,
    no fused kernel). ``cfg.eta`` sets the disagreement charge; the write-up's groups, decoder and init are kept."""

    def _latents_reconstruction_sparsity(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = self.encode(x)
        penalty = losses.written_disagreement_penalty(f, self.decoder_norms(), self.cfg.eta)
        # One term for the whole triple; reported as the shared group's, the exclusive groups' terms are zero.
        per_group = torch.stack([penalty, penalty.new_zeros(()), penalty.new_zeros(())])
        return f.reshape(x.shape[0], -1), self.decode(f), per_group
