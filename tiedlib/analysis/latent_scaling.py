"""Latent Scaling (Minder, Dumas et al. 2025, arXiv 2504.02922): is a "chat-only" latent absent from the base model?

An L1 crosscoder can call a latent chat-only when the base model does carry its direction, in two ways:

* **Complete Shrinkage**: the base decoder vector shrank to zero although the direction is there: the base
  *error* (what the crosscoder fails to reconstruct) holds it whenever the latent fires;
* **Latent Decoupling**: the base model's copy of the concept is reconstructed by *other* latents: the base
  *reconstruction* holds the direction whenever the latent fires.

Latent Scaling measures both with one least-squares scale per latent ``j``, its direction ``d`` (the chat decoder
vector) and a target ``y`` per token: ``beta = argmin sum_t ||beta f_j(t) d - y(t)||^2``, whose closed form is
(REFERENCE.md, Minder et al. Sec. 3)

    beta = d . (sum_t f_j(t) y(t)) / (sum_t f_j(t)^2 ||d||^2).

For each model ``m`` we fit two targets:

* reconstruction: ``y = x_hat_m - b_dec_m`` (every latent's contribution, the latent's own included; no bias);
* error: ``y = x_m - x_hat_m + f_j d_j^m``, the activation minus the reconstruction by the *other* latents (the
  latent's own contribution ``f_j d_j^m`` added back, so that a latent that reconstructs its model well gets
  ``beta`` near 1 rather than near 0, and the chat ratio's denominator is stable).

``nu_reconstruction = beta_rec[base] / beta_rec[chat]`` and ``nu_error = beta_err[base] / beta_err[chat]``: near 0
the base model does not carry the direction (a robust chat-specific latent); large ``nu_error`` flags Complete
Shrinkage, large ``nu_reconstruction`` Latent Decoupling.

Tied crosscoders: the latent is one group's part of a triple. Its direction is the triple's chat decoder vector and its
own contribution follows the tied decoder: the chat part decodes into the chat model only, the base part into the base
model only, the shared part into both. ``exclude_triple=True`` also leaves the triple's other parts out of the
reconstruction target, so that Latent Decoupling counts only base copies held by other triples.
Everything runs in the crosscoder's normalised units (both models at mean norm ``sqrt(d_model)``), so the base and
chat betas are comparable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tiedlib.analysis.firing import Batch, iter_normalized
from tiedlib.config import BASE, CHAT, GROUP_NAMES
from tiedlib.crosscoders.crosscoder import Crosscoder


def scaling_betas(
    f: Float[Tensor, "n_tokens k"], directions: Float[Tensor, "k d_model"], y: Float[Tensor, "n_tokens d_model"]
) -> Float[Tensor, " k"]:
    """Least-squares ``beta_j`` of ``beta f_j(t) d_j ~ y(t)`` for each of ``k`` latents (NaN where ``f_j`` is all 0).

    Args:
        f: latent activations per token.
        directions: one direction per latent.
        y: the target per token.
    """
    num = ((f.T @ y) * directions).sum(-1)
    den = f.pow(2).sum(0) * directions.pow(2).sum(-1)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.nan)


class LatentScaling(NamedTuple):
    """Latent Scaling betas of ``k`` latents (index 0 of the model axis is base, 1 chat)."""

    latents: Int[Tensor, " k"]
    """Latent indices (within ``group`` for a tied crosscoder)."""
    group: str | None
    """``"shared"``, ``"base"`` or ``"chat"`` for a tied crosscoder; ``None`` for a standard one."""
    beta_reconstruction: Float[Tensor, "2 k"]
    beta_error: Float[Tensor, "2 k"]
    n_active: Int[Tensor, " k"]
    """Tokens on which each latent fired (its betas are NaN when 0)."""

    @property
    def nu_reconstruction(self) -> Float[Tensor, " k"]:
        """``beta_rec[base] / beta_rec[chat]``: large means Latent Decoupling."""
        return self.beta_reconstruction[BASE] / self.beta_reconstruction[CHAT]

    @property
    def nu_error(self) -> Float[Tensor, " k"]:
        """``beta_err[base] / beta_err[chat]``: large means Complete Shrinkage."""
        return self.beta_error[BASE] / self.beta_error[CHAT]

    def select(self, keep: Bool[Tensor, " k"]) -> LatentScaling:
        """The latents where ``keep`` is True (e.g. ``ls.n_active >= 5``)."""
        keep = torch.as_tensor(keep, dtype=torch.bool).cpu()
        return LatentScaling(self.latents[keep], self.group, self.beta_reconstruction[:, keep],
                             self.beta_error[:, keep], self.n_active[keep])  # fmt: skip

    def verdicts(self, threshold: float = 0.5) -> list[str]:
        """Per latent: ``"complete shrinkage"`` (``nu_error > threshold``), ``"latent decoupling"``
        (``nu_reconstruction > threshold``), ``"both"``, ``"chat-specific"`` (neither) or ``"never fires"``.

        ``threshold`` is our choice, not the paper's: 0.5 reads "the base model carries at least half as much of the
        direction as the chat model".
        """
        out = []
        for nu_e, nu_r, n in zip(self.nu_error.tolist(), self.nu_reconstruction.tolist(), self.n_active.tolist(),
                                 strict=True):  # fmt: skip
            shrink, decouple = nu_e > threshold, nu_r > threshold
            if n == 0:
                out.append("never fires")
            else:
                out.append("both" if shrink and decouple else "complete shrinkage" if shrink
                           else "latent decoupling" if decouple else "chat-specific")  # fmt: skip
        return out

    def table(self, threshold: float = 0.5) -> pd.DataFrame:
        """One row per latent: the four betas, both ratios, tokens fired and the verdict."""
        return pd.DataFrame({
            "latent": self.latents.tolist(),
            "beta_rec_base": self.beta_reconstruction[BASE].tolist(),
            "beta_rec_chat": self.beta_reconstruction[CHAT].tolist(),
            "beta_err_base": self.beta_error[BASE].tolist(),
            "beta_err_chat": self.beta_error[CHAT].tolist(),
            "nu_reconstruction": self.nu_reconstruction.tolist(),
            "nu_error": self.nu_error.tolist(),
            "n_active": self.n_active.tolist(),
            "verdict": self.verdicts(threshold),
        }).set_index("latent")  # fmt: skip


def _select(model: Crosscoder, latents: Tensor, group: str | None) -> tuple[int, Tensor]:
    """Flat column offset of ``group`` and the ``(2, k, d_model)`` own contribution per model of each latent."""
    W = model.W_dec.detach()[latents]  # (k, 2, d_model)
    own = W.permute(1, 0, 2).clone()
    if model.cfg.n_groups == 1:
        if group is not None:
            raise ValueError(f"a standard crosscoder has no latent groups; pass group=None, not {group!r}")
        return 0, own
    if group not in GROUP_NAMES:
        raise ValueError(f"a tied crosscoder needs group in {GROUP_NAMES}, got {group!r}")
    g = GROUP_NAMES.index(group)
    if group == "chat":
        own[BASE] = 0  # the chat part decodes into the chat model only
    elif group == "base":
        own[CHAT] = 0
    return g * model.cfg.n_latents, own


@torch.no_grad()
def latent_scaling(
    model: Crosscoder,
    batches: Iterable[Batch],
    latents: Sequence[int] | Tensor,
    *,
    group: str | None = None,
    exclude_token_ids: Iterable[int] = (),
    normalized: bool = False,
    chunk_size: int = 2048,
    exclude_triple: bool = False,
) -> LatentScaling:
    """Latent Scaling betas of ``latents`` over every token of ``batches`` (see the module docstring).

    Args:
        model: a standard or tied crosscoder (in eval mode for BatchTopK).
        batches: activation batches as in :mod:`tiedlib.analysis.firing` (raw unless ``normalized``).
        latents: latent indices (``(k,)``); for a tied crosscoder, indices of triples.
        group: tied crosscoders: the part of each triple to scale (``"chat"`` for chat-only latents);
            ``None`` for a standard crosscoder.
        exclude_token_ids: token ids of :class:`~tiedlib.activations.HarvestBatch` rows to skip.
        normalized: the batches are already scaled by the model's normalisation factors.
        chunk_size: rows per encoder pass.
        exclude_triple: tied crosscoders: leave the *other two parts of the latent's own triple* out of the
            reconstruction target. The tied architecture is built to carry a concept's base copy in the same triple
            (its shared or base part, firing at other times); with this flag, Latent Decoupling counts only copies
            held by *other* triples.

    Raises:
        ValueError: latents out of range, or ``group`` wrong for the architecture.
    """
    if exclude_triple and model.cfg.n_groups == 1:
        raise ValueError("exclude_triple applies to tied crosscoders only")
    latents = torch.as_tensor(latents, dtype=torch.long).reshape(-1).cpu()
    n = model.cfg.n_latents
    if latents.numel() and (latents.min() < 0 or latents.max() >= n):
        raise ValueError(f"latent indices must be in [0, {n}), got {latents.tolist()}")
    offset, own = _select(model, latents.to(model.W_dec.device), group)
    d = model.W_dec.detach()[latents.to(model.W_dec.device), CHAT]  # (k, d_model): the chat decoder vectors
    k, d_model = latents.numel(), model.cfg.d_model
    dev = model.W_dec.device
    fy_rec = torch.zeros(2, k, d_model, dtype=torch.float64, device=dev)
    fy_err = torch.zeros(2, k, d_model, dtype=torch.float64, device=dev)
    f_sq = torch.zeros(k, dtype=torch.float64, device=dev)
    n_active = torch.zeros(k, dtype=torch.long, device=dev)
    cross = torch.zeros(model.cfg.n_groups, k, dtype=torch.float64, device=dev)  # sum_t f f_p per part p of the triple
    columns = (latents.to(dev) + offset) if k else latents.to(dev)
    for x in iter_normalized(model, batches, exclude_token_ids=exclude_token_ids, normalized=normalized,
                             chunk_size=chunk_size):  # fmt: skip
        f_all = model.encode(x)
        x_hat = model.decode(f_all)
        f = f_all.reshape(x.shape[0], -1)[:, columns].double()
        for m in (BASE, CHAT):
            fy_rec[m] += f.T @ (x_hat[:, m] - model.b_dec[m]).double()
            fy_err[m] += f.T @ (x[:, m] - x_hat[:, m]).double()
        f_sq += f.pow(2).sum(0)
        n_active += (f > 0).sum(0)
        if exclude_triple:
            cross += torch.einsum("tk,tgk->gk", f, f_all[:, :, latents.to(dev)].double())
    d64, own64 = d.double(), own.double()
    d_sq = d64.pow(2).sum(-1)
    den = f_sq * d_sq
    fired = den > 0
    beta_rec = torch.full((2, k), torch.nan, dtype=torch.float64, device=dev)
    beta_err = torch.full((2, k), torch.nan, dtype=torch.float64, device=dev)
    for m in (BASE, CHAT):
        rec = (fy_rec[m] * d64).sum(-1)
        if exclude_triple:
            # The other parts p of triple i add f_p d_i^m to model m when p decodes into m (shared: both models).
            g = GROUP_NAMES.index(group)
            parts = [p for p, name in enumerate(GROUP_NAMES) if p != g and name in ("shared", GROUP_NAMES[1 + m])]
            d_m = model.W_dec.detach()[latents.to(dev), m].double()
            rec = rec - cross[parts].sum(0) * (d_m * d64).sum(-1)
        beta_rec[m] = torch.where(fired, rec / den.clamp_min(1e-300), torch.nan)
        # The error target adds back the latent's own f_j d_j^m: its beta is sum_t f^2 (d . own) / sum_t f^2 ||d||^2.
        own_term = (own64[m] * d64).sum(-1) / d_sq.clamp_min(1e-300)
        beta_err[m] = torch.where(fired, (fy_err[m] * d64).sum(-1) / den.clamp_min(1e-300) + own_term, torch.nan)
    return LatentScaling(latents, group, beta_rec.float().cpu(), beta_err.float().cpu(), n_active.cpu())
