"""Data for Experiment 1 on any pair: training activations, held-out web/chat samples, and concept AUROC tables.

Lab pairs (``"tiny"``, ``"smoke"``) draw documents from :mod:`tiedlib.lab`, whose tokens carry concept labels; the
paper pair streams the public Pile/LMSys mix (:mod:`~tiedlib.pairs.corpora`, online) and has no labels. Nothing here
branches on the scale, only on whether the pair is a lab pair.

Besides AUROC over all tokens, :func:`part_scores` scores each latent part by precision at k and P(concept | part
fires) at the concept's own positions (:data:`POSITIONAL_CONCEPTS`: end of prompt for refusals and requests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Bool, Float, Int
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


# ---- scoring at the mechanism's positions (issue 16) ----------------------------------------------------------------
END_OF_PROMPT = "end_of_prompt"
"""The positions label: chat-template tokens between a user turn and the model's reply (``<end_of_turn>\\n
<start_of_turn>model\\n``), and the newline after a web question's ``Answer:`` (:mod:`tiedlib.lab.docs`)."""

POSITIONAL_CONCEPTS: dict[str, str] = {
    # What the model decides at the end of the prompt: the reply that follows carries the concept.
    "refusal": "reply", "cannot": "reply", "can": "reply", "helpful": "reply", "disclaimer": "reply",
    # What the model has just read: the prompt before the end of prompt carries the concept.
    "harmful_request": "prompt", "harmless_request": "prompt", "medical_legal": "prompt", "code_question": "prompt",
}  # fmt: skip
"""The concepts scored at the end-of-prompt positions only (the one place that says which are positional).

A refusal is decided where the prompt ends, before a single word of the reply: the write-up's refusal latents fire
there, not on the reply's tokens. So a positional concept is scored on the :data:`END_OF_PROMPT` tokens only, and an
end-of-prompt token *carries* it when the segment it closes (``"prompt"``: the tokens since the previous end of
prompt) or opens (``"reply"``: the tokens up to the next one) has a token labelled with it. Every other concept
(turn markers, colours, names, code, ...) is a token-level concept, scored on all tokens with the token's own label."""


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of every maximal run of True in a 1-d boolean array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def document_positional_labels(
    labels: dict[str, Sequence[bool]], concepts: Sequence[str], *, marker: str = END_OF_PROMPT,
    positional: dict[str, str] | None = None,
) -> tuple[Bool[np.ndarray, "seq n_concepts"], Bool[np.ndarray, "seq n_concepts"]]:  # fmt: skip
    """One document's concept labels at the mechanism's positions, and which positions each concept is scored on.

    Args:
        labels: ``labels[concept][t]`` per token (a :class:`tiedlib.lab.LabDoc`'s ``labels``, with ``marker`` in it).
        concepts: the concepts (columns of both outputs).
        positional: concept -> ``"prompt"`` or ``"reply"`` (:data:`POSITIONAL_CONCEPTS` by default).

    Returns:
        ``(carries, scored)``, both ``(seq, n_concepts)``: for a token-level concept the token's own label and
        everywhere True; for a positional one, on ``marker`` tokens only, whether the prompt segment before (or the
        reply segment after) that run of ``marker`` tokens has the concept.
    """
    positional = POSITIONAL_CONCEPTS if positional is None else positional
    for c in concepts:
        if positional.get(c, "token") not in ("prompt", "reply", "token"):
            raise ValueError(f"concept {c!r}: positional kind must be 'prompt' or 'reply', got {positional[c]!r}")
    tokens = np.array([labels[c] for c in concepts], dtype=bool).T.reshape(len(labels[marker]), len(concepts))
    marks = np.asarray(labels[marker], dtype=bool)
    carries, scored = tokens.copy(), np.ones_like(tokens)
    cols = {kind: [j for j, c in enumerate(concepts) if positional.get(c) == kind] for kind in ("prompt", "reply")}
    pos_cols = cols["prompt"] + cols["reply"]
    carries[:, pos_cols] = False
    scored[:, pos_cols] = marks[:, None]
    runs = _runs(marks)
    for r, (start, end) in enumerate(runs):
        prev_end = runs[r - 1][1] if r > 0 else 0
        next_start = runs[r + 1][0] if r + 1 < len(runs) else len(marks)
        carries[start:end, cols["prompt"]] = tokens[prev_end:start, cols["prompt"]].any(axis=0)
        carries[start:end, cols["reply"]] = tokens[end:next_start, cols["reply"]].any(axis=0)
    return carries, scored


def positional_labels(
    docs: Sequence[Any], doc_index: Int[Tensor, " n_tokens"], position: Int[Tensor, " n_tokens"],
    concepts: Sequence[str], *, positional: dict[str, str] | None = None,
) -> tuple[Bool[Tensor, "n_tokens n_concepts"], Bool[Tensor, "n_tokens n_concepts"]]:  # fmt: skip
    """:func:`document_positional_labels` of every harvested row (``docs[doc_index[i]]`` at ``position[i]``).

    Returns ``(carries, scored)``, each ``(n_tokens, n_concepts)``.
    """
    per_doc = [document_positional_labels(d.labels, concepts, positional=positional) for d in docs]
    offsets = np.concatenate([[0], np.cumsum([c.shape[0] for c, _ in per_doc])]).astype(np.int64)
    rows = offsets[doc_index.numpy()] + position.numpy()
    empty = np.zeros((0, len(concepts)), dtype=bool)
    carries = np.concatenate([c for c, _ in per_doc]) if per_doc else empty
    scored = np.concatenate([s for _, s in per_doc]) if per_doc else empty
    return torch.from_numpy(carries[rows]), torch.from_numpy(scored[rows])


@dataclass
class PartScores:
    """How well each latent part (column) picks out each concept at the concept's positions (issue 16).

    Unlike AUROC over all tokens, neither score rewards a part for ranking a handful of positions well while staying
    silent elsewhere by chance: precision at k asks for ``k`` firings on the concept, P(concept | fires) for purity.
    """

    precision: Float[Tensor, "n_concepts n_cols"]
    """Precision at k: of the part's ``k_c = min(k, n_positive[c])`` highest activations among the concept's scored
    positions, the share that carry the concept *and* fire (> 0). NaN where the concept never occurs."""
    p_fires: Float[Tensor, "n_concepts n_cols"]
    """P(concept | part fires): of the scored positions where the part fires, the share carrying the concept; NaN
    where the part never fires there."""
    fires: Int[Tensor, "n_concepts n_cols"]
    """Firings of each part on each concept's scored positions."""
    n_positive: Int[Tensor, " n_concepts"]
    """Scored positions carrying each concept."""
    k: int
    n_scored: Int[Tensor, " n_concepts"] | None = None
    """Positions each concept is scored on."""

    @property
    def chance(self) -> Float[Tensor, " n_concepts"]:
        """Share of each concept's scored positions that carry it: the precision of a part that fires at random.

        Raises:
            ValueError: ``n_scored`` is unknown.
        """
        if self.n_scored is None:
            raise ValueError("these part scores do not record how many positions were scored (n_scored=None)")
        return self.n_positive.double() / self.n_scored.clamp_min(1)


def part_scores(
    acts: Float[Tensor, "n_tokens n_cols"], carries: Bool[Tensor, "n_tokens n_concepts"],
    scored: Bool[Tensor, "n_tokens n_concepts"], k: int,
) -> PartScores:  # fmt: skip
    """Precision at ``k`` and P(concept | fires) of every column of ``acts`` for every concept (see
    :class:`PartScores`); ``carries`` and ``scored`` come from :func:`positional_labels` (or are token labels and all
    True). One top-k per distinct set of scored positions (all tokens; end-of-prompt tokens).

    Raises:
        ValueError: ``k < 1`` or the row counts differ.
    """
    if k < 1:
        raise ValueError(f"precision at k needs k >= 1, got {k}")
    if not (acts.shape[0] == carries.shape[0] == scored.shape[0]) or carries.shape != scored.shape:
        raise ValueError(f"rows differ: acts {tuple(acts.shape)}, carries {tuple(carries.shape)}, "
                         f"scored {tuple(scored.shape)}")  # fmt: skip
    n_concepts, n_cols = carries.shape[1], acts.shape[1]
    precision = torch.full((n_concepts, n_cols), float("nan"))
    p_fires = torch.full((n_concepts, n_cols), float("nan"))
    fires_out = torch.zeros((n_concepts, n_cols), dtype=torch.long)
    carries = carries & scored
    n_positive = carries.sum(dim=0)
    masks, group = torch.unique(scored.T, dim=0, return_inverse=True)
    for g, mask in enumerate(masks):
        cs = (group == g).nonzero().squeeze(1)
        a = acts if bool(mask.all()) else acts[mask]
        lab = carries[mask][:, cs]
        fires = a > 0
        n_fire = fires.sum(dim=0)
        hits = lab.T.float() @ fires.float()  # (concepts in group, n_cols): firings on the concept
        fires_out[cs] = n_fire.expand(len(cs), -1)
        p_fires[cs] = torch.where(n_fire > 0, hits / n_fire.clamp_min(1), torch.tensor(float("nan")))
        kk = min(k, a.shape[0])
        if kk == 0:
            continue
        vals, idx = a.topk(kk, dim=0)  # (kk, n_cols)
        for j, c in enumerate(cs.tolist()):
            k_c = min(kk, int(n_positive[c]))
            if k_c > 0:
                hit = lab[:, j][idx[:k_c]] & (vals[:k_c] > 0)
                precision[c] = hit.float().mean(dim=0)
    return PartScores(precision, p_fires, fires_out, n_positive, k, scored.sum(dim=0))


def joint_triple(
    score_web: Float[Tensor, "n_concepts n_all"], score_chat: Float[Tensor, "n_concepts n_all"],
    concepts: Sequence[str], n_latents: int, *, chat_concept: str = "refusal",
    base_concepts: Sequence[str] = ("refusal", "disclaimer"),
) -> dict[str, Any]:  # fmt: skip
    """:func:`refusal_triple` for any score table where higher is better (precision at k, AUROC, ...).

    Returns ``{"triple", "joint", "chat", "base", "base_concept"}``: ``chat`` is the triple's chat part on
    ``chat_concept`` (chat data), ``base`` its base part on the best of ``base_concepts`` (web data), ``joint`` the
    lower of the two (NaN counted as 0).
    """
    out = refusal_triple(score_web, score_chat, concepts, n_latents, chat_concept=chat_concept,
                         base_concepts=base_concepts)  # fmt: skip
    return {"triple": out["triple"], "joint": out["joint_auroc"], "chat": out["chat_auroc"],
            "base": out["base_auroc"], "base_concept": out["base_concept"]}  # fmt: skip
