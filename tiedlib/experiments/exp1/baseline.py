"""The write-up's baseline: in a standard crosscoder, take a chat-exclusive latent and the latents whose *base*
decoder vectors are closest by cosine to its *chat* decoder vector. Do they pick out the same concept, the way the tied
triple's base part does? Scored by precision at k at each concept's positions, as the tied parts are."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor

from tiedlib.analysis import concepts as gt
from tiedlib.analysis.contexts import latent_activations
from tiedlib.analysis.firing import HeldOutMetrics, decoder_cosine_neighbours, evaluate, exclusive_latents
from tiedlib.config import BASE_ONLY
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.experiments.exp1.data import HeldOutSamples
from tiedlib.experiments.exp1.ground_truth import ConceptScores, best_part_concepts

CHAT_EXCLUSIVE = 0.7
"""Relative decoder norm above which a standard latent is chat-exclusive (the write-up's threshold)."""


def pick_query(candidates: Int[Tensor, " k"], score: Float[Tensor, " n_latents"]) -> int | None:
    """The candidate latent with the highest score (the first on ties), or None when there is no candidate."""
    if candidates.numel() == 0:
        return None
    return int(candidates[score[candidates].argmax()])


def best_tied_triple(score_row: Float[Tensor, " n_all"], n_latents: int) -> tuple[int, float]:
    """The tied triple that picks out a concept best in any of its parts, and the score of its base part.

    Args:
        score_row: a score (precision at k, or AUROC) of every tied latent for one concept, flattened
            ``group * n_latents + index`` (3 groups).
    """
    by_group = rearrange(score_row, "(group latent) -> group latent", latent=n_latents)
    triple = int(by_group.nan_to_num(0).max(dim=0).values.argmax())
    return triple, float(by_group[BASE_ONLY, triple])


@dataclass
class ConceptBaseline:
    """Ground-truth part of the baseline (lab pairs): the query's concept and what its neighbours pick out, scored
    by ``metric`` (precision at k at the concept's positions, as the tied parts are)."""

    concept: str
    """The concept the query latent picks out best (web + chat data)."""
    query_score: float
    neighbour_best: float
    """Best score for ``concept`` among the neighbours (NaN counted as 0)."""
    tied_triple: int
    """The tied triple best at ``concept`` in any part."""
    tied_base: float
    """Score of that triple's base part for ``concept``."""
    table: pd.DataFrame
    """The query and its neighbours: cosine, relative norm, score for ``concept``, best concept."""
    neighbour_scores: list[float]
    metric: str = "precision@k"
    """What the scores are (``"precision@20"``)."""


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
        return (f"Baseline: standard chat-exclusive latent {self.query} picks out '{c.concept}' "
                f"({c.metric} {c.query_score:.2f}); its {len(self.neighbours)} nearest base decoder vectors reach "
                f"at best {c.neighbour_best:.2f} for it; the tied triple best at it ({c.tied_triple}) has a base "
                f"part at {c.tied_base:.2f}.")  # fmt: skip


def concept_baseline(std: Crosscoder, std_score: Float[Tensor, "n_concepts n_latents"], query: int,
                     neighbours: Tensor, cosines: Tensor, tied: ConceptScores) -> ConceptBaseline:  # fmt: skip
    """What the query and its neighbours pick out (``std_score``: the standard crosscoder's precision-at-k table on
    web + chat, at each concept's positions), and the tied triple best at the query's concept (from
    ``tied.part("mix")``)."""
    concepts, k = tied.concepts, tied.part("mix").k
    metric = f"precision@{k}"
    c = concepts.index(gt.best_concepts(std_score, torch.tensor([query]), concepts)[0])  # its best, even at 0
    rows = [query, *neighbours.tolist()]
    table = pd.DataFrame({"latent": rows,
                          "role": ["query (chat-exclusive)"] + ["neighbour"] * len(neighbours),
                          "cosine": [1.0, *cosines.numpy().round(3)],
                          "relative norm": std.relative_decoder_norm()[rows].numpy().round(2),
                          f"{metric} {concepts[c]}": std_score[c, rows].numpy().round(3),
                          "best concept": best_part_concepts(std_score, torch.tensor(rows), concepts)})  # fmt: skip
    triple, base = best_tied_triple(tied.part("mix").precision[c], tied.n_latents)
    return ConceptBaseline(concepts[c], float(std_score[c, query]),
                           float(std_score[c, neighbours].nan_to_num(0).max()), triple, base, table,
                           std_score[c, neighbours].tolist(), metric)  # fmt: skip


def standard_baseline(std: Crosscoder, samples: HeldOutSamples, n_neighbours: int,
                      tied: ConceptScores | None = None) -> StandardBaseline:  # fmt: skip
    """Evaluate ``std`` on web + chat, pick the query among its firing chat-exclusive latents and find the
    ``n_neighbours`` latents whose base decoder vectors are closest to the query's chat decoder vector.

    With ground truth (``tied``: the tied crosscoder's concept scores), the query is the chat-exclusive latent with the
    highest precision at k for any concept (at each concept's positions, as the tied parts are scored) and
    :class:`ConceptBaseline` is filled in; without it, the most frequent one.
    """
    held = evaluate(std, samples.mix.batches())
    chat_excl = exclusive_latents(std, "chat", CHAT_EXCLUSIVE)
    alive = held.firing.counts[0] > 0
    std_score = None
    if tied is not None:
        mix = samples.mix
        acts = latent_activations(std, mix.batches(), [(0, i) for i in range(std.cfg.n_latents)])
        labels = gt.positional_labels(mix.docs, mix.doc_index, mix.position, tied.concepts)
        std_score = gt.part_scores(acts, *labels, tied.part("mix").k).precision
    candidates = chat_excl[alive[chat_excl]]
    score = std_score.nan_to_num(0).max(dim=0).values if std_score is not None else held.firing.counts[0].double()
    query = pick_query(candidates, score)
    if query is None:
        return StandardBaseline(held, chat_excl, None)
    neighbours, cosines = decoder_cosine_neighbours(std.W_dec, query, n_neighbours)
    concepts = concept_baseline(std, std_score, query, neighbours, cosines, tied) if std_score is not None else None
    return StandardBaseline(held, chat_excl, query, neighbours, cosines, concepts)
