"""How many triples sit in each corner of the ratio scatter, with a bootstrap interval over held-out documents.

A triple counts in the top-left corner when its chat part fires at least ``min_exclusive_firings`` times and at least
``corner_ratio`` times as often as its shared part and as its base part (bottom-right: the base part, over shared and
chat), among the triples kept by the frequency filter. Firing counts are taken per document once; each bootstrap
resample draws documents with replacement, separately within web and within chat documents so that every resample
keeps the sample's mix, and recounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tiedlib.analysis.contexts import TokenSample
from tiedlib.analysis.firing import iter_normalized
from tiedlib.config import BASE_ONLY, CHAT_ONLY, SHARED
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.experiments.exp1.presets import Exp1Settings


@torch.no_grad()
def document_firing_counts(model: Crosscoder, sample: TokenSample, chunk_size: int = 2048,
                           ) -> tuple[Int[Tensor, "n_docs n_groups n_latents"], Int[Tensor, " n_docs"]]:  # fmt: skip
    """Per document of ``sample``: tokens on which each latent fires (> 0), and tokens counted. Summed over
    documents these are :func:`tiedlib.analysis.firing.evaluate`'s firing counts on the same sample."""
    n_docs, n_groups, n = len(sample.sequences), model.cfg.n_groups, model.cfg.n_latents
    counts = torch.zeros(n_docs, n_groups * n, dtype=torch.int32)
    tokens = torch.zeros(n_docs, dtype=torch.long)
    for h in sample.batches(chunk_size):
        x = torch.cat(list(iter_normalized(model, [h], chunk_size=chunk_size)))
        fires = (model.encode(x).reshape(x.shape[0], -1) > 0).cpu()
        counts.index_add_(0, h.doc_index, fires.int())
        tokens.index_add_(0, h.doc_index, torch.ones_like(h.doc_index))
    return counts.reshape(n_docs, n_groups, n), tokens


def corner_masks(counts: Float[Tensor, "... 3 n_latents"], n_tokens: Float[Tensor, "..."], *, min_frequency: float,
                 min_firings: int, ratio: float) -> dict[str, Bool[Tensor, "... n_latents"]]:  # fmt: skip
    """``{"kept", "top-left", "bottom-right"}`` masks of the triples, from their (possibly resampled) firing counts.

    Kept: the three parts together fire on at least ``min_frequency`` of ``n_tokens`` (the scatter's filter).
    Top-left: kept, chat count >= ``min_firings`` and >= ``ratio`` x the shared count and x the base count.

    Raises:
        ValueError: ``min_firings < 1`` (a triple that never fires would count) or ``ratio < 1``.
    """
    if min_firings < 1 or ratio < 1:
        raise ValueError(f"corners need min_firings >= 1 and ratio >= 1, got {min_firings} and {ratio}")
    s, b, c = counts[..., SHARED, :], counts[..., BASE_ONLY, :], counts[..., CHAT_ONLY, :]
    kept = counts.sum(dim=-2) >= min_frequency * n_tokens.unsqueeze(-1)
    return {"kept": kept,
            "top-left": kept & (c >= min_firings) & (c >= ratio * s) & (c >= ratio * b),
            "bottom-right": kept & (b >= min_firings) & (b >= ratio * s) & (b >= ratio * c)}  # fmt: skip


@dataclass(frozen=True)
class BootShare:
    """A share of kept triples, and its 95% percentile-bootstrap interval."""

    share: float
    low: float
    high: float
    count: int
    """Triples in the corner on the whole sample."""

    def text(self) -> str:
        """``"12.1% [8.0%, 15.2%] (31 triples)"`` (one decimal: one triple in 512 is 0.2%)."""
        return f"{self.share:.1%} [{self.low:.1%}, {self.high:.1%}] ({self.count} triples)"


@dataclass
class CornerShares:
    """Shares of kept triples in the top-left and bottom-right corners, with bootstrap intervals."""

    top_left: BootShare
    bottom_right: BootShare
    n_kept: int
    n_docs: int
    n_boot: int

    def text(self) -> str:
        return f"top-left {self.top_left.text()}, bottom-right {self.bottom_right.text()} of {self.n_kept} kept"

    def row(self) -> dict[str, str]:
        """The two shares as table cells (for the side-by-side table)."""
        return {"top-left share [95% CI]": self.top_left.text(),
                "bottom-right share [95% CI]": self.bottom_right.text()}  # fmt: skip


def _shares(counts: Tensor, tokens: Tensor, settings: Exp1Settings) -> dict[str, Tensor]:
    m = corner_masks(counts, tokens, min_frequency=settings.min_frequency, min_firings=settings.min_exclusive_firings,
                     ratio=settings.corner_ratio)  # fmt: skip
    n = {k: v.sum(dim=-1) for k, v in m.items()}
    return {k: n[k] / n["kept"].clamp_min(1).double() for k in ("top-left", "bottom-right")} | {
        f"n {k}": v for k, v in n.items()}  # fmt: skip


def corner_shares(doc_counts: Int[Tensor, "n_docs 3 n_latents"], doc_tokens: Int[Tensor, " n_docs"],
                  settings: Exp1Settings, *, strata: Sequence[int] | None = None, seed: int = 0,
                  chunk: int = 100) -> CornerShares:  # fmt: skip
    """Corner shares on all documents and ``settings.n_boot`` resamples of them (95% percentile interval: the 2.5th
    and 97.5th percentiles of the resampled shares; Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993,
    ch. 13). ``strata`` (one label per document, e.g. 0 web, 1 chat) resamples within each label."""
    n_docs = doc_counts.shape[0]
    if n_docs == 0:
        raise ValueError("no documents to bootstrap")
    strata_t = torch.zeros(n_docs, dtype=torch.long) if strata is None else torch.as_tensor(strata, dtype=torch.long)
    if strata_t.shape != (n_docs,):
        raise ValueError(f"strata has {strata_t.numel()} labels for {n_docs} documents")
    flat, tokens = doc_counts.reshape(n_docs, -1).double(), doc_tokens.double()
    full = _shares(flat.sum(dim=0).reshape(doc_counts.shape[1:]), tokens.sum(), settings)
    gen = torch.Generator().manual_seed(seed)
    groups = [(strata_t == g).nonzero().squeeze(1) for g in strata_t.unique()]
    boot: dict[str, list[Tensor]] = {"top-left": [], "bottom-right": []}
    for start in range(0, settings.n_boot, chunk):
        b = min(chunk, settings.n_boot - start)
        weights = torch.zeros(b, n_docs, dtype=torch.float64)  # how often each document is drawn
        for idx in groups:
            draws = idx[torch.randint(len(idx), (b, len(idx)), generator=gen)]
            weights.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
        s = _shares((weights @ flat).reshape(b, *doc_counts.shape[1:]), weights @ tokens, settings)
        for k in boot:
            boot[k].append(s[k])

    def share(k: str) -> BootShare:
        q = np.quantile(torch.cat(boot[k]).numpy(), [0.025, 0.975])
        return BootShare(float(full[k]), float(q[0]), float(q[1]), int(full[f"n {k}"]))

    return CornerShares(share("top-left"), share("bottom-right"), int(full["n kept"]), n_docs, settings.n_boot)


def sample_corner_shares(model: Crosscoder, web: TokenSample, chat: TokenSample, settings: Exp1Settings,
                         ) -> CornerShares:  # fmt: skip
    """:func:`corner_shares` of ``model`` on the held-out web and chat documents (resampled within each source)."""
    counts, tokens = zip(*(document_firing_counts(model, s) for s in (web, chat)), strict=True)
    strata = [0] * len(web.sequences) + [1] * len(chat.sequences)
    return corner_shares(torch.cat(counts), torch.cat(tokens), settings, strata=strata)


def shares_table(shares: dict[str, CornerShares]) -> pd.DataFrame:
    """One row per model: the two corner shares with their intervals, kept triples and resamples."""
    return pd.DataFrame({name: {**s.row(), "kept triples": s.n_kept, "documents": s.n_docs, "resamples": s.n_boot}
                         for name, s in shares.items()}).T  # fmt: skip
