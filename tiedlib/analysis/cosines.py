"""Exclusivity categories of a standard crosscoder and chunked maximum-cosine tables (the write-up's Experiment 4).

Experiment 4 asks, for each chat-exclusive latent, how close its *chat* decoder vector comes to the *base* decoder
vector of some shared or base-exclusive latent, and compares that with shared latents (chat decoder vector against
the base decoder vectors of every other latent). With 16,384 latents a dense cosine table is 16k x 16k floats
(1 GiB in fp32); :func:`max_cosine` instead walks it in ``chunk_size x chunk_size`` blocks and keeps only a running
maximum per query, so peak extra memory is ``O(chunk_size^2 + n)`` whatever the number of latents.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tiedlib.config import BASE, CHAT

BASE_EXCLUSIVE_MAX = 0.3
"""Relative decoder norm below which a latent is base-exclusive (the write-up's threshold)."""
CHAT_EXCLUSIVE_MIN = 0.7
"""Relative decoder norm above which a latent is chat-exclusive (the write-up's threshold)."""


class Categories(NamedTuple):
    """Latent indices of each exclusivity category (1-D int64 tensors, ascending)."""

    base_exclusive: Int[Tensor, " n_base"]
    shared: Int[Tensor, " n_shared"]
    chat_exclusive: Int[Tensor, " n_chat"]


def exclusivity_categories(
    r: Float[Tensor, " n_latents"], low: float = BASE_EXCLUSIVE_MAX, high: float = CHAT_EXCLUSIVE_MIN
) -> Categories:
    """Split latents by relative decoder norm ``r``: base-exclusive ``r < low``, shared ``low <= r <= high``,
    chat-exclusive ``r > high`` (write-up: 0.3 and 0.7)."""
    if not 0 <= low <= high <= 1:
        raise ValueError(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
    r = r.detach().flatten()
    idx = torch.arange(r.numel())
    return Categories(idx[r < low], idx[(r >= low) & (r <= high)], idx[r > high])


class MaxCosine(NamedTuple):
    """For each query, the largest cosine with any allowed key and that key's index (-1 when none is allowed)."""

    values: Float[Tensor, " n_queries"]
    indices: Int[Tensor, " n_queries"]


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def cosine_blocks(
    queries: Float[Tensor, "n_queries d"], keys: Float[Tensor, "n_keys d"], chunk_size: int
) -> Iterator[tuple[int, int, Float[Tensor, "q_chunk k_chunk"]]]:
    """Yield ``(query_start, key_start, block)`` where ``block`` is the cosine table of one chunk of queries against
    one chunk of keys, at most ``chunk_size x chunk_size``. Rows of zero norm get cosine 0."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    for qs in range(0, queries.shape[0], chunk_size):
        q = _unit(queries[qs : qs + chunk_size].float())
        for ks in range(0, keys.shape[0], chunk_size):
            yield qs, ks, q @ _unit(keys[ks : ks + chunk_size].float()).T


def max_cosine(
    queries: Float[Tensor, "n_queries d"],
    keys: Float[Tensor, "n_keys d"],
    *,
    exclude: Int[Tensor, " n_queries"] | None = None,
    chunk_size: int = 1024,
) -> MaxCosine:
    """The maximum cosine similarity of each query with the keys, computed block by block.

    Args:
        queries: ``(n_queries, d)`` vectors.
        keys: ``(n_keys, d)`` vectors.
        exclude: optional ``(n_queries,)`` key index to leave out for each query (e.g. the query latent itself);
            negative entries exclude nothing.
        chunk_size: side of the largest cosine block held in memory.

    Returns:
        :class:`MaxCosine` with ``values`` (``-inf`` and index ``-1`` where no key is allowed) and ``indices``.
    """
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"expected (n, d) queries and keys with the same d, got {tuple(queries.shape)}, "
                         f"{tuple(keys.shape)}")
    nq = queries.shape[0]
    if exclude is not None and exclude.shape != (nq,):
        raise ValueError(f"exclude must have shape ({nq},), got {tuple(exclude.shape)}")
    best = torch.full((nq,), float("-inf"), device=queries.device)
    best_idx = torch.full((nq,), -1, dtype=torch.long, device=queries.device)
    for qs, ks, block in cosine_blocks(queries, keys, chunk_size):
        if exclude is not None:
            ex = exclude[qs : qs + block.shape[0]].to(block.device) - ks
            rows = torch.nonzero((ex >= 0) & (ex < block.shape[1])).flatten()
            block[rows, ex[rows]] = float("-inf")
        values, idx = block.max(dim=1)
        sl = slice(qs, qs + block.shape[0])
        better = values > best[sl]
        best[sl] = torch.where(better, values, best[sl])
        best_idx[sl] = torch.where(better, idx + ks, best_idx[sl])
    return MaxCosine(best, best_idx)


class ExclusiveVsShared(NamedTuple):
    """One panel of the write-up's Figure 11, for query model ``query`` (``"chat"`` or ``"base"``)."""

    query: str
    exclusive: MaxCosine
    """For each latent exclusive to the query model: max cosine of its query-model decoder vector with the other
    model's decoder vectors of all shared latents and all latents exclusive to the other model (indices into all
    latents)."""
    shared: MaxCosine
    """For each shared latent: max cosine of its query-model decoder vector with the other model's decoder vectors of
    every other latent (itself excluded; indices into all latents)."""
    categories: Categories


def exclusive_vs_shared(
    W_dec: Float[Tensor, "n_latents n_models d_model"],
    r: Float[Tensor, " n_latents"] | None = None,
    *,
    query: str = "chat",
    low: float = BASE_EXCLUSIVE_MAX,
    high: float = CHAT_EXCLUSIVE_MIN,
    chunk_size: int = 1024,
) -> ExclusiveVsShared:
    """Experiment 4 for one query model (``query="chat"``: right panel of Figure 11; ``"base"``: left panel).

    Args:
        W_dec: decoder of a standard crosscoder, ``(n_latents, 2, d_model)``.
        r: relative decoder norms (default: computed from ``W_dec``).
        query: the model whose exclusive latents and decoder vectors are the queries.
        low, high: exclusivity thresholds on ``r``.
        chunk_size: cosine block side (see :func:`max_cosine`).
    """
    if query not in ("chat", "base"):
        raise ValueError(f"query must be 'chat' or 'base', got {query!r}")
    W_dec = W_dec.detach()
    if r is None:
        norms = W_dec.norm(dim=-1)
        r = norms[:, CHAT] / norms.sum(dim=-1).clamp_min(1e-12)
    cats = exclusivity_categories(r, low, high)
    q_model, k_model = (CHAT, BASE) if query == "chat" else (BASE, CHAT)
    own_excl = cats.chat_exclusive if query == "chat" else cats.base_exclusive
    other_excl = cats.base_exclusive if query == "chat" else cats.chat_exclusive
    keys_idx = torch.cat([cats.shared, other_excl]).sort().values
    excl = max_cosine(W_dec[own_excl, q_model], W_dec[keys_idx, k_model], chunk_size=chunk_size)
    excl = MaxCosine(excl.values, _reindex(excl.indices, keys_idx))
    shared = max_cosine(W_dec[cats.shared, q_model], W_dec[:, k_model], exclude=cats.shared, chunk_size=chunk_size)
    return ExclusiveVsShared(query, excl, shared, cats)


def _reindex(local: Tensor, idx: Tensor) -> Tensor:
    out = torch.full_like(local, -1)
    ok = local >= 0
    out[ok] = idx[local[ok]]
    return out
