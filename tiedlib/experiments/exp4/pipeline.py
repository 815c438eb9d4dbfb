"""Experiment 4: a standard crosscoder (trained on the lab pair, or the released one), and how close its exclusive
latents come to the other model's decoder vectors compared with its shared latents (the write-up's Figure 11)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib.activations.collect import collect_activations, count_kept_tokens
from tiedlib.activations.harvest import estimate_norm_factors, harvest
from tiedlib.analysis.cosines import Categories, ExclusiveVsShared, MaxCosine, exclusive_vs_shared
from tiedlib.crosscoders.checkpoints import load_crosscoder
from tiedlib.pairs import load_pair, training_sequences
from tiedlib.training import train_crosscoder

from .dead import Alive, alive_index
from .presets import Exp4Settings

METRIC_KEYS = ("explained_variance", "explained_variance_base", "explained_variance_chat", "l0")


@dataclass
class StandardRun:
    """The crosscoder Experiment 4 analyses, its logged metrics and where its data came from."""

    crosscoder: Any
    metrics: list[dict]
    """Logged training metrics (empty for a released checkpoint)."""
    data: str
    """One line on where the crosscoder came from (its training data, or the released checkpoint)."""

    @property
    def final(self) -> dict[str, float]:
        """The last logged metrics (empty for a released checkpoint)."""
        return self.metrics[-1] if self.metrics else {}

    def final_metrics(self, digits: int = 3) -> dict[str, float]:
        """Explained variance (overall, base, chat) and L0 of the last logged step, rounded (those present)."""
        return {k: round(self.final[k], digits) for k in METRIC_KEYS if k in self.final}


def standard_crosscoder(settings: Exp4Settings, run_dir: str | Path) -> StandardRun:
    """Load ``settings.checkpoint`` when set; otherwise harvest the lab pair on ``n_docs`` documents of its training
    mix (web and chat, ``web_fraction`` web; BOS dropped, template tokens kept), normalise, and train (or load, when
    ``run_dir`` holds the finished run) a standard crosscoder."""
    if settings.checkpoint is not None:
        crosscoder = load_crosscoder(settings.checkpoint, device=settings.device)
        data = f"released crosscoder {settings.checkpoint}"
        if crosscoder.cfg.needs_norm_factors and crosscoder.cfg.norm_factors is None:
            data += "; " + estimate_released_norm_factors(crosscoder, settings)
        return StandardRun(crosscoder, [], data)
    pair = load_pair(settings.pair, layer=settings.layer, device=settings.device)
    seqs = training_sequences(pair, settings.n_docs, web_fraction=settings.web_fraction, seed=settings.seed)
    acts = collect_activations(pair, seqs, progress=False, train_batch_size=settings.batch_size)  # streamed if big
    data = (f"{acts.n_tokens:,} tokens from {len(seqs)} documents, layer {pair.layer}, "
            f"d_model {pair.d_model}; norm factors {acts.norm_factors.tolist()}")
    crosscoder, metrics = train_crosscoder(
        run_dir, acts, architecture="standard", n_latents=settings.n_latents, n_steps=settings.n_steps,
        batch_size=settings.batch_size, lr=settings.lr, l1_coeff=settings.l1_coeff, seed=settings.seed,
        device=settings.device, source=pair.fingerprint)
    return StandardRun(crosscoder, metrics, data)


def estimate_released_norm_factors(crosscoder: Any, settings: Exp4Settings, log: Callable[[str], None] = print) -> str:
    """Set a released crosscoder's normalisation factors (the releases store none) to
    :func:`tiedlib.activations.estimate_norm_factors` on the raw activations of ``settings.norm_docs`` documents of
    the pair's training mix (BOS and padding dropped; streamed, one model batch in memory at a time), print that they
    were estimated, and return that line."""
    pair = load_pair(settings.pair, layer=settings.layer, device=settings.device)
    if pair.d_model != crosscoder.cfg.d_model:
        raise ValueError(f"{settings.checkpoint} has d_model {crosscoder.cfg.d_model} but pair {settings.pair!r} has "
                         f"{pair.d_model} at layer {pair.layer}")  # fmt: skip
    seqs = training_sequences(pair, settings.norm_docs, web_fraction=settings.web_fraction, seed=settings.seed)
    crosscoder.set_norm_factors_(estimate_norm_factors(harvest(pair.base, pair.chat, seqs, pair.layer, progress=False),
                                                       pair.d_model))  # fmt: skip
    n_tokens = count_kept_tokens(seqs, bos_id=pair.tokenizer.bos_token_id)
    line = (f"norm factors {[round(float(f), 6) for f in crosscoder.cfg.norm_factors]} estimated on "
            f"{n_tokens:,} tokens of {len(seqs)} documents (the release does not store them)")
    log(line)
    return line


def max_cosine_panels(W_dec: Float[Tensor, "n_latents 2 d_model"], r: Float[Tensor, " n_latents"] | None,
                      settings: Exp4Settings, alive: Bool[Tensor, " n_latents"] | None = None,
                      ) -> list[ExclusiveVsShared]:  # fmt: skip
    """Both panels of Figure 11, base query first (:func:`tiedlib.analysis.cosines.exclusive_vs_shared` with the
    thresholds and block size of ``settings``).

    ``alive``: live latents (:func:`~.dead.alive_latents`); dead ones are left out of every panel, as queries and as
    keys. Indices and categories of the panels stay indices into all latents.
    """
    W_dec = W_dec.detach().cpu()
    keep = alive_index(alive, W_dec.shape[0])
    r = None if r is None else r.detach().cpu()[keep]
    panels = [exclusive_vs_shared(W_dec[keep], r, query=q, low=settings.low, high=settings.high,
                                  chunk_size=settings.chunk_size) for q in ("base", "chat")]  # fmt: skip
    return [to_full_indices(p, keep) for p in panels]


def to_full_indices(panel: ExclusiveVsShared, keep: Tensor, keys: Tensor | None = None) -> ExclusiveVsShared:
    """``panel`` computed on the latents ``keep`` (its queries) and ``keys`` (its keys; default ``keep``), with its
    categories and partner indices mapped back to indices into all latents (-1 stays -1)."""
    keys = keep if keys is None else keys

    def full(found: MaxCosine) -> MaxCosine:
        idx = found.indices.clone()
        ok = idx >= 0
        idx[ok] = keys[idx[ok]]
        return MaxCosine(found.values, idx)

    return ExclusiveVsShared(panel.query, full(panel.exclusive), full(panel.shared),
                             Categories(*(keep[c] for c in panel.categories)))


@dataclass
class PanelStats:
    """Max-cosine statistics of one query model: its exclusive latents against the shared ones."""

    query: str
    n_exclusive: int
    n_shared: int
    median_exclusive: float
    """Median max cosine of the exclusive latents (NaN when there are none)."""
    median_shared: float
    frac_exclusive_above_half: float
    """Fraction of exclusive latents with max cosine above 0.5 (NaN when there are none)."""
    frac_shared_above_half: float

    @property
    def verdict(self) -> str:
        """Whether the exclusive latents have closer partners than the shared ones (by median)."""
        if self.median_exclusive > self.median_shared:
            return "closer partners than shared latents (less exclusive)"
        return "no closer partners than shared latents" if self.n_exclusive else "none to compare"

    def summary(self) -> str:
        other = "base" if self.query == "chat" else "chat"
        return (f"{self.query}-exclusive latents: median max cosine with {other} decoders {self.median_exclusive:.3f} "
                f"(n={self.n_exclusive}) vs shared latents {self.median_shared:.3f} (n={self.n_shared}); above 0.5: "
                f"{self.frac_exclusive_above_half:.0%} vs {self.frac_shared_above_half:.0%} -> {self.verdict}.")


def _median(x: Tensor) -> float:
    return float(x.median()) if x.numel() else math.nan


def _above(x: Tensor, threshold: float) -> float:
    return float((x > threshold).float().mean()) if x.numel() else math.nan


def panel_stats(panels: Sequence[ExclusiveVsShared]) -> list[PanelStats]:
    """Count, median max cosine and fraction above 0.5 of the exclusive and the shared latents of each panel."""
    out = []
    for p in panels:
        ex, sh = p.exclusive.values, p.shared.values
        out.append(PanelStats(p.query, ex.numel(), sh.numel(), _median(ex), _median(sh), _above(ex, 0.5),
                              _above(sh, 0.5)))
    return out


def stats_table(stats: Sequence[PanelStats]) -> pd.DataFrame:
    """One row per query model with every field of :class:`PanelStats` and its verdict."""
    return pd.DataFrame([{**asdict(s), "verdict": s.verdict} for s in stats]).set_index("query")


def summary(settings: Exp4Settings, run: StandardRun, panels: Sequence[ExclusiveVsShared],
            stats: Sequence[PanelStats], scale: str, alive: Alive | None = None) -> str:
    """The closing summary: setup and fit, dead latents (when ``alive`` is given), latent counts per category (from
    the panels, so live latents only when the panels left dead ones out), one line per query model."""
    if not panels:
        raise ValueError("no max-cosine panels given")
    final = run.final
    fit = f", explained variance {final['explained_variance']:.3f}, L0 {final['l0']:.1f}." if final else "."
    cats = panels[0].categories
    n_latents = sum(len(c) for c in cats)
    return "\n".join([
        f"Scale: {scale} ({settings.pair} pair), standard crosscoder with "
        f"{n_latents if alive is None else alive.mask.numel()} latents" + fit,
        *([] if alive is None else [f"Dead latents: {alive.text()}."]),
        f"{'Latents' if alive is None else 'Live latents'}: {len(cats.base_exclusive)} base-exclusive (r < "
        f"{settings.low}), {len(cats.shared)} shared, "
        f"{len(cats.chat_exclusive)} chat-exclusive (r > {settings.high}).",
        *(s.summary() for s in stats),
    ])
