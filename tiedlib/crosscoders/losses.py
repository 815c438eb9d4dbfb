"""Pure loss and metric functions shared by the standard and tied crosscoders.

Shapes use one spelling everywhere: ``batch``, ``n_models`` (= 2, base then chat), ``d_model``, ``n_latents``,
``n_groups`` (1 for standard, 3 for tied: shared, base, chat).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def squared_error_per_model(
    x: Float[Tensor, "batch n_models d_model"], x_hat: Float[Tensor, "batch n_models d_model"]
) -> Float[Tensor, " n_models"]:
    """Sum over batch and d_model of the squared reconstruction error, per model.

    The reconstruction loss is ``squared_error_per_model(...).sum() / batch``: the mean over the batch of
    ``sum_{m,d} (x_hat - x)^2`` (REFERENCE.md, public crosscoder replication).
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but x_hat has shape {tuple(x_hat.shape)}")
    return (x_hat - x).pow(2).sum(dim=(0, 2))


@torch.no_grad()
def explained_variance_per_model(
    x: Float[Tensor, "batch n_models d_model"], squared_error: Float[Tensor, " n_models"]
) -> Float[Tensor, " n_models"]:
    """``1 - sum(err^2) / sum((x - mean_batch(x))^2)`` per model (one minus the fraction of variance unexplained).

    This is the ratio of sums over the batch. The public crosscoder code averaged per-token ratios instead, which
    weighs low-variance tokens heavily; the two agree only roughly, so compare with published figures with care.
    """
    total_variance = (x - x.mean(dim=0, keepdim=True)).pow(2).sum(dim=(0, 2))
    return 1 - squared_error / total_variance.clamp_min(torch.finfo(x.dtype).tiny)


def decoder_norms(W_dec: Float[Tensor, "n_latents n_models d_model"]) -> Float[Tensor, "n_latents n_models"]:
    """L2 norm of each latent's decoder vector in each model."""
    return W_dec.norm(dim=-1)


def weighted_sparsity(
    f: Float[Tensor, "batch n_groups n_latents"], weights: Float[Tensor, "n_groups n_latents"]
) -> Float[Tensor, " n_groups"]:
    """Mean over the batch of ``sum_i f[g, i] * weights[g, i]``, per group.

    Reducing ``f`` over the batch first keeps this one pass over the latents with no ``batch x latents``
    temporary; the gradient is the same as that of the elementwise form.
    """
    return (f.sum(dim=0) * weights).sum(dim=-1) / f.shape[0]


def standard_penalty_weights(
    norms: Float[Tensor, "n_latents n_models"], n_designated: int = 0, designated_scale: float = 1.0
) -> Float[Tensor, "1 n_latents"]:
    """Per-latent weight of a standard crosscoder's L1 term: the *sum* of per-model decoder norms.

    Anthropic's crosscoder note: summing the per-model norms (rather than taking the norm of the concatenation)
    is what lets model-exclusive latents exist. The first ``n_designated`` latents (designated shared latents,
    Anthropic's February 2025 update) have their weight multiplied by ``designated_scale``.
    """
    weights = norms.sum(dim=-1)
    if n_designated:
        scale = torch.ones_like(weights)
        scale[:n_designated] = designated_scale
        weights = weights * scale
    return weights.unsqueeze(0)


def tied_penalty_weights(
    norms: Float[Tensor, "n_latents n_models"], eta: float, shared: str = "sum"
) -> Float[Tensor, "3 n_latents"]:
    """Per-latent weights of the tied crosscoder's penalty, groups ordered shared, base, chat.

    From the write-up (Experiment 1, "Setup"):
    ``L_reg = E_x[ sum_i f_shared_i (||W_dec_base_i|| + ||W_dec_chat_i||)
                       + eta (f_base_i ||W_dec_base_i|| + f_chat_i ||W_dec_chat_i||) ]``.
    With ``shared="max"`` the shared weight is ``2 max(||W_dec_base_i||, ||W_dec_chat_i||)`` instead (issue 8): a
    triple that shrinks one half then pays for the shared group as if both halves were full, so the shared group
    stops being a cheaper base-only (or chat-only) latent than the exclusive group once eta < 2.
    """
    n_base, n_chat = norms[:, 0], norms[:, 1]
    if shared == "sum":
        w_shared = n_base + n_chat
    elif shared == "max":
        w_shared = 2 * torch.maximum(n_base, n_chat)
    else:
        raise ValueError(f"shared must be 'sum' or 'max', got {shared!r}")
    return torch.stack([w_shared, eta * n_base, eta * n_chat])


@torch.no_grad()
def l0_per_group(f: Float[Tensor, "batch n_groups n_latents"]) -> Float[Tensor, " n_groups"]:
    """Mean number of firing (> 0) latents per token, per group."""
    # count_nonzero avoids materialising a (batch, groups, latents) boolean mask; f >= 0 after the ReLU. The mean is
    # at least fp32 (bf16 latents under autocast would round an L0 of 143.4 to 143).
    return torch.count_nonzero(f, dim=(0, 2)).to(torch.promote_types(f.dtype, torch.float32)) / f.shape[0]


def written_disagreement_penalty(
    f: Float[Tensor, "batch 3 n_latents"], norms: Float[Tensor, "n_latents n_models"], eta: float
) -> Float[Tensor, ""]:
    """A tied penalty on what each triple *writes*, charging extra only where the two models disagree (issue 15).

    With ``w_m = (f_shared + f_m) ||d_m||`` the amount index ``i`` writes into model ``m`` on a row, the charge is
    ``w_base + w_chat + (eta - 1) |w_base - w_chat|`` (mean over the batch, summed over indices); at ``eta = 2`` that
    is ``2 max(w_base, w_chat)``: the triple pays for the larger of its halves. Where both models get the same amount
    (a shared firing on equal halves) it equals the write-up's shared term; a base-alone firing on equal halves
    costs ``eta ||d_base||`` as in the write-up. Unlike the write-up's loss, a triple that shrinks its chat half and
    fires its *shared* group writes base only and pays the full ``eta`` charge: the free-norm loophole of issue 8
    is closed without fixing the norms.
    """
    if f.ndim != 3 or f.shape[1] != 3 or norms.shape != (f.shape[2], 2):
        raise ValueError(f"need f (batch, 3, n) and norms (n, 2), got {tuple(f.shape)} and {tuple(norms.shape)}")
    written = (f[:, 1:] + f[:, :1]) * norms.T.unsqueeze(0)  # (batch, 2, n)
    wb, wc = written[:, 0], written[:, 1]
    return (wb + wc + (eta - 1) * (wb - wc).abs()).sum() / f.shape[0]
