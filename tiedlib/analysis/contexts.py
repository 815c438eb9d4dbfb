"""Samples of harvested tokens with their provenance, per-latent activations, top-k contexts and token labels.

A :class:`TokenSample` keeps the raw activations of a set of documents together with, for every activation row, the
document it came from and its position there (BOS, padding and any excluded tokens were dropped at harvest time), so
the top activations of a latent can be shown in context (the write-up's Figures 3-9) and lab concept labels can be
aligned with activation rows (ground truth).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tiedlib.activations.collect import collect_activations
from tiedlib.activations.harvest import HarvestBatch
from tiedlib.analysis.firing import iter_normalized
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.pairs import ModelPair, heldout_sequences


@dataclass
class TokenSample:
    """Raw paired activations of a data sample, and where each row came from."""

    acts: Float[Tensor, "n_tokens n_models d_model"]
    """Raw (unnormalised) activations, as harvested."""
    token_ids: Int[Tensor, " n_tokens"]
    doc_index: Int[Tensor, " n_tokens"]
    """Index into ``sequences`` of each row."""
    position: Int[Tensor, " n_tokens"]
    """Position of each row's token in its sequence (BOS = 0)."""
    sequences: Sequence[Sequence[int]]
    """Token ids of every document (the full sequences, including tokens that were not harvested)."""
    name: str = ""
    docs: Sequence[Any] | None = None
    """Optional source documents (e.g. :class:`tiedlib.lab.LabDoc`, which carry per-token concept ``labels``)."""

    @classmethod
    def from_harvest(cls, h: HarvestBatch, sequences: Sequence[Sequence[int]], name: str = "",
                     docs: Sequence[Any] | None = None) -> "TokenSample":  # fmt: skip
        return cls(h.acts, h.token_ids, h.doc_index, h.position, sequences, name, docs)

    def __len__(self) -> int:
        return int(self.acts.shape[0])

    def batches(self, batch_size: int = 4096) -> Iterator[HarvestBatch]:
        """The sample as an iterator of :class:`HarvestBatch` chunks (what the analysis functions take)."""
        for s in range(0, len(self), batch_size):
            sl = slice(s, s + batch_size)
            yield HarvestBatch(self.acts[sl], self.token_ids[sl], self.doc_index[sl], self.position[sl])


@torch.no_grad()
def latent_activations(
    model: Crosscoder,
    batches: Iterable[Any],
    latents: Sequence[tuple[int, int]],
    *,
    normalized: bool = False,
    chunk_size: int = 8192,
) -> Float[Tensor, "n_tokens n_selected"]:
    """Activations of selected latents on every row of ``batches`` (no masking: one output row per input row).

    Args:
        model: standard or tied crosscoder.
        batches: iterator of ``(n, 2, d_model)`` tensors or HarvestBatch chunks, raw unless ``normalized``.
        latents: ``(group, index)`` pairs; ``group`` is 0 for a standard crosscoder, 0/1/2 = shared/base/chat for tied.

    For ReLU crosscoders only the selected encoder columns are computed (exact: each latent is its own ReLU);
    BatchTopK ones run the full encoder.
    """
    n = model.cfg.n_latents
    for g, i in latents:
        if not (0 <= g < model.cfg.n_groups and 0 <= i < n):
            raise ValueError(f"latent (group={g}, index={i}) out of range for {model.cfg.n_groups} x {n} latents")
    cols = torch.tensor([g * n + i for g, i in latents], dtype=torch.long, device=model.W_dec.device)
    relu = model.cfg.activation == "relu"
    # Columns are flattened as group * n_latents + index, rows as model * d_model + d (both encoders' inputs).
    w = rearrange(model.W_enc, "model d ... -> (model d) (...)")[:, cols]
    b = rearrange(model.b_enc, "... -> (...)")[cols]
    parts = []
    for x in iter_normalized(model, batches, normalized=normalized, chunk_size=chunk_size):
        if relu:
            parts.append(torch.relu(rearrange(x, "row model d -> row (model d)") @ w + b).cpu())
        else:
            parts.append(rearrange(model.encode(x), "row ... -> row (...)")[:, cols].cpu())
    return torch.cat(parts) if parts else torch.zeros(0, len(latents))


@dataclass
class Context:
    """A window of one document around a top-activating token."""

    doc: int
    position: int
    value: float
    """Activation at ``position``."""
    token_ids: list[int]
    values: list[float]
    """Activation of every token of the window; ``nan`` for tokens that were not harvested (BOS, template tokens)."""
    target: int
    """Index of ``position`` inside the window."""
    meta: dict[str, Any] = field(default_factory=dict)


def top_k_contexts(
    values: Float[Tensor, " n_tokens"],
    doc_index: Int[Tensor, " n_tokens"],
    position: Int[Tensor, " n_tokens"],
    sequences: Sequence[Sequence[int]],
    k: int = 10,
    *,
    before: int = 16,
    after: int = 4,
    one_per_doc: bool = True,
) -> list[Context]:
    """The ``k`` highest positive activations, each with a window of its document, highest first.

    Args:
        values: one latent's activation per harvested row (e.g. a column of :func:`latent_activations`).
        doc_index, position: provenance of each row (from the :class:`TokenSample`).
        sequences: token ids of every document.
        k: number of contexts (fewer when the latent fires on fewer tokens / documents).
        before, after: tokens of context shown before and after the top token.
        one_per_doc: keep only the best token of each document (more varied examples).

    Ties are broken by row order (stable sort), so the result is deterministic.
    """
    values = values.detach().float().cpu()
    order = values.argsort(descending=True, stable=True)
    order = order[values[order] > 0]
    if one_per_doc and order.numel():
        _, first = np.unique(doc_index[order].numpy(), return_index=True)
        order = order[torch.from_numpy(np.sort(first))]
    order = order[:k]
    chosen_docs = doc_index[order]
    in_chosen = torch.isin(doc_index, chosen_docs)
    dense: dict[int, np.ndarray] = {int(d): np.full(len(sequences[int(d)]), np.nan) for d in chosen_docs.unique()}
    rows = zip(doc_index[in_chosen].tolist(), position[in_chosen].tolist(), values[in_chosen].tolist(), strict=True)
    for d, p, v in rows:  # only the rows of the (at most k) chosen documents
        dense[d][p] = v
    out = []
    for row in order.tolist():
        d, p = int(doc_index[row]), int(position[row])
        lo, hi = max(0, p - before), min(len(sequences[d]), p + after + 1)
        out.append(Context(doc=d, position=p, value=float(values[row]), token_ids=list(sequences[d][lo:hi]),
                           values=dense[d][lo:hi].tolist(), target=p - lo))  # fmt: skip
    return out


def token_labels(
    docs: Sequence[Any],
    doc_index: Int[Tensor, " n_tokens"],
    position: Int[Tensor, " n_tokens"],
    concepts: Sequence[str],
) -> Bool[Tensor, "n_tokens n_concepts"]:
    """Concept labels of every harvested row, read from documents with per-token ``labels[concept][t]`` lists
    (:class:`tiedlib.lab.LabDoc`). One Python pass over documents; rows are gathered by index."""
    mats = [np.array([d.labels[c] for c in concepts], dtype=bool).T.reshape(len(d.input_ids), len(concepts))
            for d in docs]  # fmt: skip
    offsets = np.concatenate([[0], np.cumsum([m.shape[0] for m in mats])])
    flat = np.concatenate(mats) if mats else np.zeros((0, len(concepts)), dtype=bool)
    rows = offsets[doc_index.numpy()] + position.numpy()
    return torch.from_numpy(flat[rows])


def concat_samples(samples: Sequence[TokenSample], name: str = "") -> TokenSample:
    """One sample holding several (document indices are shifted; ``docs`` kept when every sample has them)."""
    shifts = np.cumsum([0] + [len(s.sequences) for s in samples[:-1]])
    seqs = [q for s in samples for q in s.sequences]
    docs = [d for s in samples for d in s.docs] if all(s.docs is not None for s in samples) else None
    return TokenSample(
        acts=torch.cat([s.acts for s in samples]),
        token_ids=torch.cat([s.token_ids for s in samples]),
        doc_index=torch.cat([s.doc_index + int(o) for s, o in zip(samples, shifts, strict=False)]),
        position=torch.cat([s.position for s in samples]),
        sequences=seqs, name=name, docs=docs,
    )  # fmt: skip


def eval_sample(
    pair: ModelPair,
    source: str,
    n: int,
    *,
    exclude_token_ids: Sequence[int] = (),
    seq_len: int = 1024,
    model_batch_size: int = 32,
    progress: bool = False,
) -> TokenSample:
    """Held-out ``source`` data (``"web"``: Pile-like, ``"chat"``: LMSys-like) harvested into a :class:`TokenSample`.

    Lab pairs use the ``heldout`` split and keep the :class:`tiedlib.lab.LabDoc` documents (with labels); the paper
    pair streams Pile-only or LMSys-only sequences (``docs`` is None).
    """
    seqs, docs = heldout_sequences(pair, source, n, seq_len=seq_len, progress=progress)
    ones = torch.ones(2)  # raw activations are kept; analysis applies the crosscoder's own factors
    # In memory by design (contexts index rows); bounded by n x seq_len tokens (paper: 128 x 1024, 2.4 GB per source,
    # checked in tests/experiments/test_paper_memory.py).
    h = collect_activations(pair, seqs, exclude_token_ids=exclude_token_ids, batch_size=model_batch_size,
                            norm_factors=ones, progress=progress, in_memory=True).harvest  # fmt: skip
    return TokenSample.from_harvest(h, seqs, source, docs)
