"""Experiment 4 over seeds: short standard crosscoders on the same activations, one per seed of initialisation and
batch order, each giving the median max cosine of its exclusive latents minus that of its shared latents per query
model; the comparison is stated with a 95% t interval over the seeds (:mod:`tiedlib.analysis.stats`). Dead latents
(no firing on the held-out sample) are left out of every run, and each run is also compared with its seed twin (the
next seed's run: :mod:`.null`), the null comparison."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tiedlib.activations.collect import PairActivations, collect_activations
from tiedlib.analysis.stats import INCONCLUSIVE, Interval, t_interval, verdict
from tiedlib.pairs import load_pair, pair_source, training_sequences
from tiedlib.training import train_crosscoder

from .dead import alive_latents, heldout_sample
from .null import cross_seed_panels
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
    null_pairs: list[tuple[int, int]] = field(default_factory=list)
    """(seed of A, seed of B) of each null comparison: each run against the next seed's run (cyclically)."""
    null: list[list[PanelStats]] = field(default_factory=list)
    """Per null pair, :func:`~.pipeline.panel_stats` of :func:`~.null.cross_seed_panels` (A's latents, partners
    in B)."""
    dead: list[int] = field(default_factory=list)
    """Per seed, latents that never fired on the held-out sample (left out)."""
    n_latents: int = 0

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

    def _values(self, runs: Sequence[Sequence[PanelStats]], query: str, which: str) -> Interval | None:
        """Interval over ``runs`` of one query's ``median_exclusive``, ``median_shared`` or their ``difference``."""
        if query not in QUERIES:
            raise ValueError(f"query must be one of {QUERIES}, got {query!r}")
        i = QUERIES.index(query)
        pick = {"exclusive": lambda s: s.median_exclusive, "shared": lambda s: s.median_shared,
                "difference": lambda s: s.median_exclusive - s.median_shared}[which]  # fmt: skip
        values = [pick(r[i]) for r in runs]
        return t_interval(values) if any(not math.isnan(v) for v in values) else None

    def null_difference(self, query: str) -> Interval | None:
        """Per null pair, median max cosine of A's ``query``-exclusive latents minus that of A's shared latents, with
        their partners looked for in the seed twin B (None when there is no null pair or no exclusive latent)."""
        return self._values(self.null, query, "difference")

    def within_minus_null(self, query: str) -> Interval | None:
        """Per null pair (A, B): median max cosine of A's ``query``-exclusive latents within A (the real statistic)
        minus that with partners in B. Above 0: exclusive latents have closer partners inside their own crosscoder
        than in a crosscoder that differs only in seed."""
        if query not in QUERIES:
            raise ValueError(f"query must be one of {QUERIES}, got {query!r}")
        i, real = QUERIES.index(query), dict(zip(self.seeds, self.stats, strict=True))
        values = [real[a][i].median_exclusive - n[i].median_exclusive
                  for (a, _), n in zip(self.null_pairs, self.null, strict=True)]  # fmt: skip
        return t_interval(values) if any(not math.isnan(v) for v in values) else None

    def null_verdict(self, query: str) -> str:
        """Whether exclusive latents' partners within their crosscoder are closer than in a seed twin, only where the
        interval of :meth:`within_minus_null` excludes 0."""
        d = self.within_minus_null(query)
        if d is None:
            return f"no null comparison for the {query} query: {INCONCLUSIVE}"
        return verdict(d, above=f"{query}-exclusive latents have closer partners in their own crosscoder than in a "
                                "seed twin",
                       below=f"{query}-exclusive latents have closer partners in a seed twin than in their own "
                             "crosscoder")  # fmt: skip

    def null_text(self, query: str) -> str:
        """Median max cosines of the ``query``-exclusive and the shared latents, within one crosscoder (real) and
        against a seed twin (null), each with its interval."""

        def text(runs: Sequence[Sequence[PanelStats]], which: str) -> str:
            found = self._values(runs, query, which)
            if found is None:
                return "n/a"
            # Interval.text counts seeds; a null run is a seed pair.
            return found.text(2) if runs is self.stats else found.text(2).replace(" seed", " seed pair")

        return (f"exclusive {text(self.stats, 'exclusive')} vs shared {text(self.stats, 'shared')} within one "
                f"crosscoder; exclusive {text(self.null, 'exclusive')} vs shared {text(self.null, 'shared')} against a "
                "seed twin")  # fmt: skip

    def null_table(self) -> pd.DataFrame:
        """One row per (query, comparison): mean over runs of the median max cosine of the exclusive and of the shared
        latents and of their difference, and the number of runs (seeds, or seed pairs for the null)."""
        rows = []
        for q in QUERIES:
            for name, runs in (("within one crosscoder", self.stats), ("against a seed twin (null)", self.null)):
                row = {"query": q, "comparison": name, "runs": len(runs)}
                for which in ("exclusive", "shared", "difference"):
                    found = self._values(runs, q, which) if runs else None
                    row[f"median {which}" if which != "difference" else "exclusive - shared"] = (
                        math.nan if found is None else round(found.mean, 3))
                rows.append(row)
        return pd.DataFrame(rows).set_index(["query", "comparison"])

    def dead_text(self) -> str:
        """Dead latents per seed (left out of every panel)."""
        if not self.dead:
            return "dead latents not measured"
        return (f"dead latents per seed: {', '.join(map(str, self.dead))} of {self.n_latents} (no firing on the "
                "held-out sample; left out)")

    def summary(self) -> str:
        """What was trained, dead latents, per query model the difference with its interval and verdict, and the
        null comparison."""
        lines = [f"{len(self.seeds)} standard crosscoders (seeds {self.seeds}, {self.n_steps} steps each); "
                 f"{self.dead_text()}."]
        lines += [f"{q} query: median max cosine, exclusive minus shared {self.difference_text(q)} -> "
                  f"{self.verdict(q)}." for q in QUERIES]  # fmt: skip
        if self.null:
            pairs = ", ".join(f"{a} vs {b}" for a, b in self.null_pairs)
            lines.append(f"Null (each run against its seed twin: {pairs}):")
            lines += [f"{q} query: {self.null_text(q)} -> {self.null_verdict(q)}." for q in QUERIES]
        return "\n".join(lines)


def seed_runs(settings: Exp4Settings, run_dir: str | Path, heldout: Sequence | None = None) -> SeedRuns:
    """Harvest the pair once (the headline run's documents: ``settings.seed``), then train (or load) one standard
    crosscoder per seed of ``settings.seeds`` on those activations, with ``seed_steps`` steps and initialisation and
    batch order drawn with the seed, into ``run_dir/seed<k>``; leave out each one's dead latents (no firing on
    ``heldout``, default :func:`~.dead.heldout_sample`), compute both max-cosine panels of each, and compare each run
    with the next seed's (cyclically; one pair for two seeds) with :func:`~.null.cross_seed_panels`.

    Raises:
        ValueError: the settings name no seeds, or analyse a released checkpoint (there is nothing to reseed).
    """
    if not settings.seeds:
        raise ValueError("settings.seeds is empty: there is nothing to train (the paper preset runs no seeds)")
    if settings.checkpoint is not None:
        raise ValueError(f"settings analyse the released checkpoint {settings.checkpoint}: seed runs need training")
    acts = harvest(settings)
    source = pair_source(settings.pair, layer=settings.layer, device=settings.device)  # the pair harvest() loads
    heldout = heldout_sample(settings) if heldout is None else heldout
    stats, decoders, dead = [], [], []
    for seed in settings.seeds:
        crosscoder, _ = train_crosscoder(
            Path(run_dir) / f"seed{seed}", acts, architecture="standard", n_latents=settings.n_latents,
            n_steps=settings.seed_steps, batch_size=settings.batch_size, lr=settings.lr, l1_coeff=settings.l1_coeff,
            seed=seed, device=settings.device, source=source)  # fmt: skip
        alive = alive_latents(crosscoder, heldout)
        r = crosscoder.relative_decoder_norm().detach().cpu()
        stats.append(panel_stats(max_cosine_panels(crosscoder.W_dec, r, settings, alive=alive.mask)))
        decoders.append((crosscoder.W_dec.detach().cpu(), alive.mask))
        dead.append(alive.n_dead)
    n = len(settings.seeds)
    pairs = [(i, (i + 1) % n) for i in range(n if n > 2 else n - 1)]
    null = [panel_stats(cross_seed_panels(decoders[a][0], decoders[b][0], settings, alive_a=decoders[a][1],
                                          alive_b=decoders[b][1])) for a, b in pairs]  # fmt: skip
    return SeedRuns(list(settings.seeds), settings.seed_steps, stats,
                    [(settings.seeds[a], settings.seeds[b]) for a, b in pairs], null, dead, decoders[0][1].numel())


def harvest(settings: Exp4Settings) -> PairActivations:
    """The pair's activations on ``n_docs`` documents of its training mix (``web_fraction`` web, drawn with
    ``settings.seed``), as :func:`~.pipeline.standard_crosscoder` harvests them."""
    pair = load_pair(settings.pair, layer=settings.layer, device=settings.device)
    seqs = training_sequences(pair, settings.n_docs, web_fraction=settings.web_fraction, seed=settings.seed)
    return collect_activations(pair, seqs, progress=False)
