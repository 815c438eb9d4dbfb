"""The write-up's baseline: in a standard crosscoder, take a chat-exclusive latent and the latents whose *base*
decoder vectors are closest by cosine to its *chat* decoder vector. Do they detect the same concept, the way the tied
triple's base part does?"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor

from tiedlib.analysis import concepts as gt
from tiedlib.analysis.firing import HeldOutMetrics, decoder_cosine_neighbours, evaluate, exclusive_latents
from tiedlib.config import BASE_ONLY
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.experiments.exp1.data import HeldOutSamples
from tiedlib.experiments.exp1.ground_truth import ConceptScores

CHAT_EXCLUSIVE = 0.7
"""Relative decoder norm above which a standard latent is chat-exclusive (the write-up's threshold)."""


def pick_query(candidates: Int[Tensor, " k"], score: Float[Tensor, " n_latents"]) -> int | None:
    """The candidate latent with the highest score (the first on ties), or None when there is no candidate."""
    if candidates.numel() == 0:
        return None
    return int(candidates[score[candidates].argmax()])


def best_tied_triple(auc_row: Float[Tensor, " n_all"], n_latents: int) -> tuple[int, float]:
    """The tied triple that detects a concept best in any of its parts, and the AUROC of its base part.

    Args:
        auc_row: AUROC of every tied latent for one concept, flattened ``group * n_latents + index`` (3 groups).
    """
    by_group = rearrange(auc_row, "(group latent) -> group latent", latent=n_latents)
    triple = int(by_group.nan_to_num(0).max(dim=0).values.argmax())
    return triple, float(by_group[BASE_ONLY, triple])


@dataclass
class ConceptBaseline:
    """Ground-truth part of the baseline (lab pairs): the query's concept and what its neighbours detect."""

    concept: str
    """The concept the query latent detects best (web + chat data)."""
    query_auroc: float
    neighbour_best: float
    """Best AUROC for ``concept`` among the neighbours (NaN counted as 0)."""
    tied_triple: int
    """The tied triple best at ``concept`` in any part."""
    tied_base: float
    """AUROC of that triple's base part for ``concept``."""
    table: pd.DataFrame
    """The query and its neighbours: cosine, relative norm, AUROC for ``concept``, best concept."""
    neighbour_aurocs: list[float]


@dataclass
class StandardBaseline:
    """The standard crosscoder's held-out metrics, its chat-exclusive latents and the nearest-decoder query."""

    held: HeldOutMetrics
    """Metrics on the web + chat sample."""
    chat_exclusive: Int[Tensor, " k"]
    query: int | None
    """The chat-exclusive latent that fires and detects some concept best (by firing count without ground truth);
    None when no chat-exclusive latent fires."""
    neighbours: Int[Tensor, " n_neighbours"] | None = None
    cosines: Float[Tensor, " n_neighbours"] | None = None
    concepts: ConceptBaseline | None = None

    def describe(self) -> str:
        return f"standard crosscoder: {self.held.as_dict()}; {len(self.chat_exclusive)} chat-exclusive latents"

    def verdict(self) -> str | None:
        """The summary's sentence (None without a query or without ground truth)."""
        c = self.concepts
        if self.query is None or c is None or self.neighbours is None:
            return None
        return (f"Baseline: standard chat-exclusive latent {self.query} detects '{c.concept}' "
                f"(AUROC {c.query_auroc:.3f}); its {len(self.neighbours)} nearest base decoder vectors reach "
                f"at best AUROC {c.neighbour_best:.3f} for it; the tied triple best at it ({c.tied_triple}) has a base "
                f"part at AUROC {c.tied_base:.3f}.")  # fmt: skip


def concept_baseline(std: Crosscoder, std_auc: Float[Tensor, "n_concepts n_latents"], query: int,
                     neighbours: Tensor, cosines: Tensor, tied: ConceptScores) -> ConceptBaseline:  # fmt: skip
    """What the query and its neighbours detect (``std_auc``: the standard crosscoder's AUROC table on web + chat),
    and the tied triple best at the query's concept (from ``tied.mix``)."""
    concepts = tied.concepts
    concept = gt.best_concepts(std_auc, torch.tensor([query]), concepts)[0]
    c = concepts.index(concept)
    rows = [query, *neighbours.tolist()]
    table = pd.DataFrame({"latent": rows,
                          "role": ["query (chat-exclusive)"] + ["neighbour"] * len(neighbours),
                          "cosine": [1.0, *cosines.numpy().round(3)],
                          "relative norm": std.relative_decoder_norm()[rows].numpy().round(2),
                          f"AUROC {concept}": std_auc[c, rows].numpy().round(3),
                          "best concept": gt.best_concepts(std_auc, torch.tensor(rows), concepts)})  # fmt: skip
    triple, base = best_tied_triple(tied.mix[c], tied.n_latents)
    return ConceptBaseline(concept, float(std_auc[c, query]), float(std_auc[c, neighbours].nan_to_num(0).max()),
                           triple, base, table, std_auc[c, neighbours].tolist())  # fmt: skip


def standard_baseline(std: Crosscoder, samples: HeldOutSamples, n_neighbours: int,
                      tied: ConceptScores | None = None) -> StandardBaseline:  # fmt: skip
    """Evaluate ``std`` on web + chat, pick the query among its firing chat-exclusive latents and find the
    ``n_neighbours`` latents whose base decoder vectors are closest to the query's chat decoder vector.

    With ground truth (``tied``: the tied crosscoder's concept scores), the query is the chat-exclusive latent with the
    highest AUROC for any concept and :class:`ConceptBaseline` is filled in; without it, the most frequent one.
    """
    held = evaluate(std, samples.mix.batches())
    chat_excl = exclusive_latents(std, "chat", CHAT_EXCLUSIVE)
    alive = held.firing.counts[0] > 0
    std_auc = gt.concept_auroc(std, samples.mix, tied.concepts) if tied is not None else None
    candidates = chat_excl[alive[chat_excl]]
    score = std_auc.nan_to_num(0).max(dim=0).values if std_auc is not None else held.firing.counts[0].double()
    query = pick_query(candidates, score)
    if query is None:
        return StandardBaseline(held, chat_excl, None)
    neighbours, cosines = decoder_cosine_neighbours(std.W_dec, query, n_neighbours)
    concepts = concept_baseline(std, std_auc, query, neighbours, cosines, tied) if std_auc is not None else None
    return StandardBaseline(held, chat_excl, query, neighbours, cosines, concepts)
