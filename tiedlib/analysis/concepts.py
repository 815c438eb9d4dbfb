"""Data for Experiment 1 on any pair: training activations, held-out web/chat samples, and concept AUROC tables.

Lab pairs (``"tiny"``, ``"smoke"``) draw documents from :mod:`tiedlib.lab`, whose tokens carry concept labels; the
paper pair streams the public Pile/LMSys mix (:mod:`~tiedlib.pairs.corpora`, online) and has no labels. Nothing here
branches on the scale, only on whether the pair is a lab pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib.analysis.contexts import TokenSample, latent_activations, token_labels
from tiedlib.analysis.firing import auroc
from tiedlib.crosscoders.crosscoder import Crosscoder


def sample_labels(sample: TokenSample, concepts: Sequence[str]) -> Bool[Tensor, "n_tokens n_concepts"]:
    """Concept labels of every row of a lab sample."""
    if sample.docs is None:
        raise ValueError(f"sample {sample.name!r} has no labelled documents (only lab pairs have ground truth)")
    return token_labels(sample.docs, sample.doc_index, sample.position, concepts)


def concept_auroc(model: Crosscoder, sample: TokenSample, concepts: Sequence[str]) -> Float[Tensor, "n_concepts n_all"]:
    """AUROC of every latent (flattened ``group * n_latents + index``) as a detector of every concept on ``sample``."""
    all_latents = [(g, i) for g in range(model.cfg.n_groups) for i in range(model.cfg.n_latents)]
    scores = latent_activations(model, sample.batches(), all_latents)
    return auroc(scores, sample_labels(sample, concepts))


def source_only_concepts(
    labels_here: Bool[Tensor, "n_a n_concepts"],
    labels_elsewhere: Bool[Tensor, "n_b n_concepts"],
    concepts: Sequence[str],
) -> list[str]:
    """Concepts present in the first sample and absent from the second (e.g. chat-only concepts)."""
    here, there = labels_here.any(dim=0), labels_elsewhere.any(dim=0)
    return [c for c, a, b in zip(concepts, here.tolist(), there.tolist(), strict=False) if a and not b]


def best_concepts(auc: Float[Tensor, "n_concepts n_all"], columns: Tensor, concepts: Sequence[str]) -> list[str]:
    """Name of the concept each latent column detects best (highest AUROC)."""
    return [concepts[int(j)] for j in torch.nan_to_num(auc[:, columns], nan=-1.0).argmax(dim=0).reshape(-1)]


def refusal_triple(
    auc_web: Float[Tensor, "n_concepts n_all"],
    auc_chat: Float[Tensor, "n_concepts n_all"],
    concepts: Sequence[str],
    n_latents: int,
    *,
    chat_concept: str = "refusal",
    base_concepts: Sequence[str] = ("refusal", "disclaimer"),
) -> dict[str, Any]:
    """The tied triple whose chat part best detects ``chat_concept`` on chat data *and* whose base part best detects
    one of ``base_concepts`` on web data (the write-up's Figure 3 and 5), judged by the lower of the two AUROCs.

    Returns ``{"triple", "joint_auroc", "chat_auroc", "base_auroc", "base_concept"}``.
    """
    from tiedlib.analysis.firing import best_joint
    from tiedlib.config import BASE_ONLY, CHAT_ONLY

    def groups(row: Tensor) -> Tensor:  # flattened (group latent) columns -> (group, latent)
        return rearrange(row, "(group latent) -> group latent", latent=n_latents)

    chat = groups(auc_chat[concepts.index(chat_concept)])[CHAT_ONLY]
    base_all = torch.stack([groups(auc_web[concepts.index(c)])[BASE_ONLY] for c in base_concepts])
    base_all = torch.nan_to_num(base_all, nan=0.0)
    base, which = base_all.max(dim=0)
    i, joint = best_joint(chat, base)
    return {"triple": i, "joint_auroc": joint, "chat_auroc": float(chat[i]), "base_auroc": float(base[i]),
            "base_concept": base_concepts[int(which[i])]}  # fmt: skip
