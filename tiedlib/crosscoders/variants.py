"""Pure helpers behind the crosscoder variants of issue 8 ("Does the tied crosscoder tie?").

* :func:`batch_topk`: BatchTopK sparsity (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders"; used for
  crosscoders by Minder, Dumas et al. 2025, REFERENCE.md).
* :func:`project_decoder_`: re-impose equal or unit per-model decoder norms after an optimizer step.
* :func:`tie_designated_`: keep the two decoder halves of designated shared latents equal (Anthropic, Feb 2025).
* :func:`contrast_init_`: a distinct start for the tied encoder's exclusive groups (issue 15).
* :func:`batch_topk_groups`: BatchTopK with its own ``k`` and threshold per tied group (issue 15).
* :func:`update_dead_counter_` and :func:`aux_k_activations`: the auxiliary-k loss's dead-latent bookkeeping and
  latents (Gao et al. 2024, arXiv 2406.04093, appendix A.2; issue 15).

The crosscoder classes call these; they take and return tensors only so they can be tested on their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float
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


def batch_topk_groups(
    f: Float[Tensor, "batch n_all"],
    weights: Float[Tensor, "n_groups n"],
    k_groups: Sequence[float],
    thresholds: Sequence[float] | None = None,
) -> tuple[Float[Tensor, "batch n_all"], list[float]]:
    """:func:`batch_topk` run on each group separately (``n_all = n_groups * n``, groups contiguous, as the tied
    crosscoder flattens ``(3, n)``): group ``g`` keeps ``round(k_groups[g] * batch)`` entries in training (none when
    ``k_groups[g] == 0``), or its scores above ``thresholds[g]`` when thresholds are given.

    Returns:
        ``(kept, min_kept_scores)``: ``f`` with the other entries zeroed, and per group the smallest positive kept
        score (0 when none), from which training estimates that group's threshold.
    """
    n_groups, n = weights.shape
    if f.ndim != 2 or f.shape[1] != n_groups * n or len(k_groups) != n_groups:
        raise ValueError(f"need f (batch, {n_groups * n}) and {n_groups} k values for weights {tuple(weights.shape)}, "
                         f"got f {tuple(f.shape)} and k_groups {tuple(k_groups)}")  # fmt: skip
    if thresholds is not None and len(thresholds) != n_groups:
        raise ValueError(f"need {n_groups} thresholds, got {len(thresholds)}")
    fg = f.reshape(f.shape[0], n_groups, n)
    parts, mins = [], []
    for g, k_g in enumerate(k_groups):
        if k_g <= 0:
            parts.append(torch.zeros_like(fg[:, g]))
            mins.append(0.0)
            continue
        kept, m = batch_topk(fg[:, g], weights[g], k_g, None if thresholds is None else thresholds[g])
        parts.append(kept)
        mins.append(m)
    return torch.stack(parts, dim=1).reshape(f.shape), mins


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



@torch.no_grad()
def update_dead_counter_(tokens_since_fired: Tensor, f: Float[Tensor, "batch n_all"]) -> None:
    """In place: add the batch's rows to every latent's count of tokens since it last fired, and reset the latents
    that fired (``f > 0``) in this batch to 0 (Gao et al. 2024, appendix A.2: dead = not fired in the last N tokens)."""
    if f.ndim != 2 or f.shape[1] != tokens_since_fired.numel():
        raise ValueError(f"need f (batch, {tokens_since_fired.numel()}), got {tuple(f.shape)}")
    tokens_since_fired.add_(f.shape[0])
    tokens_since_fired.masked_fill_((f > 0).any(dim=0), 0)


def aux_k_activations(
    pre: Float[Tensor, "batch n_dead"], k_aux: int
) -> tuple[Float[Tensor, "batch n_dead"], Bool[Tensor, "batch n_dead"]]:
    """Latents of the auxiliary-k loss: on each row, the ``k_aux`` dead latents with the largest pre-activation.

    Gao et al. (2024, appendix A.2) keep those latents' TopK activations. A dead *ReLU* latent has no positive
    pre-activation, so a ReLU there would give it no gradient; here the kept latents take ``softplus(pre)``: positive
    (their decoder rows move towards the residual they are asked to explain) with a gradient at any pre-activation
    (their encoders move up where their decoder rows help). ``pre`` holds the dead latents' pre-activations only.

    Returns:
        ``(activations, chosen)``: zero outside the chosen entries.
    """
    if pre.ndim != 2:
        raise ValueError(f"need pre-activations (batch, n_dead), got {tuple(pre.shape)}")
    k = min(int(k_aux), pre.shape[1])
    if k <= 0:
        return torch.zeros_like(pre), torch.zeros_like(pre, dtype=torch.bool)
    idx = pre.detach().topk(k, dim=1, sorted=False).indices
    chosen = torch.zeros_like(pre, dtype=torch.bool).scatter_(1, idx, True)
    return torch.nn.functional.softplus(pre) * chosen, chosen
