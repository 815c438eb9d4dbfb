"""Experiment 4's null comparison: the same max-cosine statistic, with the partners looked for in a *second* standard
crosscoder that differs from the first only in its seed (same data, same settings).

For query model q, crosscoder A's q-exclusive latents are compared (q decoder half) with the other model's decoder
halves of crosscoder B's shared and B's other-model-exclusive latents (the keys of the real statistic, taken from B),
and A's shared latents with the other model's decoder halves of all of B's latents (there is no "itself" to leave out:
B's copy of a shared latent is a legitimate partner). Nothing differs between A and B, so this is what a close partner
looks like when the partner is the same feature learnt again: exclusive latents whose within-crosscoder partners
(the real statistic) are no closer than their partners in B are not duplicated within the crosscoder any more than
two independent runs duplicate each other.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib.analysis.cosines import ExclusiveVsShared, exclusivity_categories, max_cosine
from tiedlib.config import BASE, CHAT

from .dead import alive_index
from .pipeline import to_full_indices
from .presets import Exp4Settings


def cross_seed_panels(
    W_a: Float[Tensor, "n_a 2 d_model"], W_b: Float[Tensor, "n_b 2 d_model"], settings: Exp4Settings, *,
    alive_a: Bool[Tensor, " n_a"] | None = None, alive_b: Bool[Tensor, " n_b"] | None = None,
) -> list[ExclusiveVsShared]:
    """Both null panels (base query first) of crosscoder A (decoder ``W_a``) against its seed twin B (``W_b``).

    Categories are A's (by A's relative decoder norms, thresholds of ``settings``); each latent's partner index is an
    index into B's latents. Dead latents (``alive_*`` False) are left out of both crosscoders.

    Raises:
        ValueError: the decoders differ in width or are not ``(n, 2, d_model)``.
    """
    if W_a.ndim != 3 or W_a.shape[1] != 2 or W_a.shape[1:] != W_b.shape[1:]:
        raise ValueError(f"need two (n, 2, d_model) decoders of one width, got {tuple(W_a.shape)}, {tuple(W_b.shape)}")
    keep_a, keep_b = alive_index(alive_a, W_a.shape[0]), alive_index(alive_b, W_b.shape[0])
    A, B = W_a.detach().cpu()[keep_a], W_b.detach().cpu()[keep_b]
    cats_a, cats_b = (exclusivity_categories(_relative_norm(W), settings.low, settings.high) for W in (A, B))
    panels = []
    for query in ("base", "chat"):
        q_model, k_model = (CHAT, BASE) if query == "chat" else (BASE, CHAT)
        own_a = cats_a.chat_exclusive if query == "chat" else cats_a.base_exclusive
        other_b = cats_b.base_exclusive if query == "chat" else cats_b.chat_exclusive
        keys = torch.cat([cats_b.shared, other_b]).sort().values  # the real statistic's keys, taken from B
        excl = max_cosine(A[own_a, q_model], B[keys, k_model], chunk_size=settings.chunk_size)
        excl = excl._replace(indices=torch.where(excl.indices >= 0, keys[excl.indices.clamp_min(0)], -1))
        shared = max_cosine(A[cats_a.shared, q_model], B[:, k_model], chunk_size=settings.chunk_size)
        panel = ExclusiveVsShared(query, excl, shared, cats_a)
        panels.append(to_full_indices(panel, keep_a, keys=keep_b))
    return panels


def _relative_norm(W: Float[Tensor, "n 2 d_model"]) -> Float[Tensor, " n"]:
    # r = ||d_chat|| / (||d_base|| + ||d_chat||) (the write-up's relative decoder norm, REFERENCE.md)
    norms = W.norm(dim=-1)
    return norms[:, CHAT] / norms.sum(dim=-1).clamp_min(1e-12)
