"""Experiment 4 over seeds: short standard crosscoders on the same activations, one per seed of initialisation and
batch order, each giving the median max cosine of its exclusive latents minus that of its shared latents per query
model; the comparison is stated with a 95% t interval over the seeds (:mod:`tiedlib.analysis.stats`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tiedlib.activations.collect import PairActivations, collect_activations
from tiedlib.analysis.stats import INCONCLUSIVE, Interval, t_interval, verdict
from tiedlib.pairs import load_pair, training_sequences
from tiedlib.training import train_crosscoder

from .pipeline import PanelStats, max_cosine_panels, panel_stats
from .presets import Exp4Settings

QUERIES = ("base", "chat")


@dataclass
class SeedRuns:
    """Panel statistics (base query, chat query) of one short standard crosscoder per seed."""

    seeds: list[int]
    n_steps: int
    stats: list[list[PanelStats]]
    """Per seed, :func:`~.pipeline.panel_stats` of its two panels (base query first)."""

    def difference(self, query: str) -> Interval | None:
        """Per-seed median max cosine of the ``query``-exclusive latents minus that of the shared latents; seeds with
        no exclusive latent (NaN) are dropped, and None is returned when no seed has one."""
        if query not in QUERIES:
            raise ValueError(f"query must be one of {QUERIES}, got {query!r}")
        i = QUERIES.index(query)
        values = [s[i].median_exclusive - s[i].median_shared for s in self.stats]
        return t_interval(values) if any(not math.isnan(v) for v in values) else None

    def difference_text(self, query: str) -> str:
        """:meth:`difference` as text (``"n/a (...)"`` when no seed has a ``query``-exclusive latent)."""
        d = self.difference(query)
        return d.text() if d is not None else f"n/a (no {query}-exclusive latent in any seed)"

    def verdict(self, query: str) -> str:
        """The write-up's claim (exclusive latents have closer partners) only where the interval excludes 0."""
        d = self.difference(query)
        if d is None:
            return f"no {query}-exclusive latents to compare: {INCONCLUSIVE}"
        return verdict(d, above=f"{query}-exclusive latents have closer partners than shared ones",
                       below=f"{query}-exclusive latents have farther partners than shared ones (the write-up's "
                             "claim reversed)")  # fmt: skip

    def summary(self) -> str:
        """What was trained, and per query model the difference with its interval and verdict."""
        lines = [f"{len(self.seeds)} standard crosscoders (seeds {self.seeds}, {self.n_steps} steps each)."]
        lines += [f"{q} query: median max cosine, exclusive minus shared {self.difference_text(q)} -> "
                  f"{self.verdict(q)}." for q in QUERIES]  # fmt: skip
        return "\n".join(lines)


def seed_runs(settings: Exp4Settings, run_dir: str | Path) -> SeedRuns:
    """Harvest the pair once (the headline run's documents: ``settings.seed``), then train (or load) one standard
    crosscoder per seed of ``settings.seeds`` on those activations, with ``seed_steps`` steps and initialisation and
    batch order drawn with the seed, into ``run_dir/seed<k>``; compute both max-cosine panels of each.

    Raises:
        ValueError: the settings name no seeds, or analyse a released checkpoint (there is nothing to reseed).
    """
    if not settings.seeds:
        raise ValueError("settings.seeds is empty: there is nothing to train (the paper preset runs no seeds)")
    if settings.checkpoint is not None:
        raise ValueError(f"settings analyse the released checkpoint {settings.checkpoint}: seed runs need training")
    acts = harvest(settings)
    stats = []
    for seed in settings.seeds:
        crosscoder, _ = train_crosscoder(
            Path(run_dir) / f"seed{seed}", acts, architecture="standard", n_latents=settings.n_latents,
            n_steps=settings.seed_steps, batch_size=settings.batch_size, lr=settings.lr, l1_coeff=settings.l1_coeff,
            seed=seed, device=settings.device)  # fmt: skip
        r = crosscoder.relative_decoder_norm().detach().cpu()
        stats.append(panel_stats(max_cosine_panels(crosscoder.W_dec, r, settings)))
    return SeedRuns(list(settings.seeds), settings.seed_steps, stats)


def harvest(settings: Exp4Settings) -> PairActivations:
    """The pair's activations on ``n_docs`` documents of its training mix (``web_fraction`` web, drawn with
    ``settings.seed``), as :func:`~.pipeline.standard_crosscoder` harvests them."""
    pair = load_pair(settings.pair, layer=settings.layer, device=settings.device)
    seqs = training_sequences(pair, settings.n_docs, web_fraction=settings.web_fraction, seed=settings.seed)
    return collect_activations(pair, seqs, progress=False)
