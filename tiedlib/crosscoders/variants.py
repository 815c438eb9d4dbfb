"""Pure helpers behind the crosscoder variants of issue 8 ("Does the tied crosscoder tie?").

* :func:`batch_topk`: BatchTopK sparsity (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders"; used for
  crosscoders by Minder, Dumas et al. 2025, REFERENCE.md).
* :func:`project_decoder_`: re-impose equal or unit per-model decoder norms after an optimizer step.
* :func:`tie_designated_`: keep the two decoder halves of designated shared latents equal (Anthropic, Feb 2025).
* :func:`contrast_init_`: a distinct start for the tied encoder's exclusive groups (issue 15).

The crosscoder classes call these; they take and return tensors only so they can be tested on their own.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

THRESHOLD_MOMENTUM = 0.99
"""Weight of the old value in the running BatchTopK inference threshold (an exponential moving average)."""


def batch_topk(
    f: Float[Tensor, "batch n"],
    weights: Float[Tensor, " n"],
    k: float,
    threshold: float | None = None,
) -> tuple[Float[Tensor, "batch n"], float]:
    """Keep the largest latents of a batch: BatchTopK.

    The score of a latent is ``f * weights`` (its activation times its decoder weight, so that rescaling an encoder
    row against its decoder row does not change which latents win; Minder et al. rank crosscoder latents by the
    activation times the summed decoder norms in the same way). Scores are ranked over the whole batch and all
    latents together.

    Args:
        f: non-negative activations (ReLU already applied), all groups flattened into ``n``.
        weights: non-negative per-latent decoder weight.
        k: mean number of latents kept per row: exactly ``round(k * batch)`` (at least 1) entries are kept, counted
            over the batch, when ``threshold`` is None (if fewer scores are positive, the rest are kept as zeros).
        threshold: if given, the inference rule: keep every entry whose score is above it (no batch coupling).

    Returns:
        ``(kept, min_kept_score)``: ``f`` with the other entries zeroed (gradients flow through the kept ones), and
        the smallest positive kept score (0 when none is positive), from which training estimates the threshold.
    """
    scores = f.detach() * weights.detach()
    if threshold is not None:
        mask = scores > threshold
    else:
        n_keep = min(max(1, round(k * f.shape[0])), f.numel())
        idx = scores.flatten().topk(n_keep, sorted=False).indices
        mask = torch.zeros(f.numel(), dtype=torch.bool, device=f.device)
        mask[idx] = True
        mask = mask.reshape(f.shape)
    kept_scores = scores[mask & (scores > 0)]
    min_kept = float(kept_scores.min()) if kept_scores.numel() else 0.0
    return f * mask, min_kept


def update_threshold(current: float, batch_min: float, momentum: float = THRESHOLD_MOMENTUM) -> float:
    """Running estimate of the BatchTopK inference threshold; ``current < 0`` means "not estimated yet"."""
    if batch_min <= 0:
        return current
    if current < 0:
        return batch_min
    return momentum * current + (1 - momentum) * batch_min


@torch.no_grad()
def project_decoder_(W_dec: Float[Tensor, "n_latents n_models d_model"], mode: str) -> None:
    """In place: ``"unit"`` makes every per-model decoder row norm 1; ``"equal"`` rescales the two halves of each
    latent to the mean of their norms (their sum, the shared penalty, is unchanged); ``"free"`` does nothing."""
    if mode == "free":
        return
    norms = W_dec.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(W_dec.dtype).tiny)
    if mode == "unit":
        W_dec.div_(norms)
    elif mode == "equal":
        W_dec.mul_(norms.mean(dim=1, keepdim=True) / norms)
    else:
        raise ValueError(f"mode must be 'free', 'equal' or 'unit', got {mode!r}")


@torch.no_grad()
def tie_designated_(W_dec: Float[Tensor, "n_latents n_models d_model"], n_designated: int) -> None:
    """In place: set both decoder halves of the first ``n_designated`` latents to their mean (one shared vector)."""
    if n_designated:
        W_dec[:n_designated] = W_dec[:n_designated].mean(dim=1, keepdim=True)


@torch.no_grad()
def contrast_init_(W_enc: Float[Tensor, "n_models d_model 3 n_latents"]) -> None:
    """In place: give the tied encoder's exclusive groups a distinct start (issue 15).

    The write-up's init copies one encoder into all three groups with zero bias, so at step 0 the shared, base and
    chat latents of a triple fire on exactly the same rows, and the exclusive ones (dearer under eta > 1) die. Here
    the base group reads ``+x_base`` and ``-x_chat`` along its index's direction (the chat group the mirror image):
    it starts active where the base model has the direction and the chat model does not, and near zero where both
    have it, which is where the shared group is meant to fire.
    """
    if W_enc.ndim != 4 or W_enc.shape[0] != 2 or W_enc.shape[2] != 3:
        raise ValueError(f"expected a tied encoder (2, d_model, 3, n_latents), got {tuple(W_enc.shape)}")
    W_enc[1, :, 1] = -W_enc[1, :, 1]  # base group: minus the chat reading
    W_enc[0, :, 2] = -W_enc[0, :, 2]  # chat group: minus the base reading

