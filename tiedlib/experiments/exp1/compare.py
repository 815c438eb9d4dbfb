"""The write-up's tied crosscoder beside the project's recommended tied configuration (issue 16): the same data, the
same steps, the same held-out documents, one column (or panel) each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from tiedlib.analysis.firing import HeldOutMetrics
from tiedlib.config import BASE, CHAT
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.experiments.exp1.corners import CornerShares, sample_corner_shares
from tiedlib.experiments.exp1.data import HeldOutSamples
from tiedlib.experiments.exp1.ground_truth import (
    ConceptScores,
    CornerConcepts,
    RefusalTriple,
    concept_scores,
    corner_concepts,
    refusal_triple,
)
from tiedlib.experiments.exp1.models import held_out_metrics
from tiedlib.experiments.exp1.presets import Exp1Settings
from tiedlib.experiments.exp1.ratios import RatioScatter, ratio_scatter


@dataclass
class ArchResults:
    """One tied crosscoder's headline results on the held-out samples."""

    name: str
    model: Crosscoder
    held: HeldOutMetrics
    """Metrics on the web + chat sample."""
    scatter: RatioScatter
    shares: CornerShares
    scores: ConceptScores | None = None
    """Ground truth (lab pairs only), as are ``refusal`` and ``corners``."""
    refusal: RefusalTriple | None = None
    corners: CornerConcepts | None = None


def analyse(name: str, model: Crosscoder, samples: HeldOutSamples, settings: Exp1Settings,
            ground_truth: bool) -> ArchResults:  # fmt: skip
    """Held-out metrics, ratio scatter, corner shares and (with ``ground_truth``) the part scores, Figure-3 triple and
    corner concepts of ``model``: everything the notebook shows for the write-up's crosscoder, in one call."""
    held = held_out_metrics(model, {"web + chat": samples.mix})["web + chat"]
    scatter = ratio_scatter(held.firing, settings)
    shares = sample_corner_shares(model, samples.web, samples.chat, settings)
    if not ground_truth:
        return ArchResults(name, model, held, scatter, shares)
    scores = concept_scores(model, samples, k=settings.precision_k)
    return ArchResults(name, model, held, scatter, shares, scores, refusal_triple(scores),
                       corner_concepts(scores, scatter, settings.min_exclusive_firings))  # fmt: skip


def side_by_side(results: Sequence[ArchResults], settings: Exp1Settings) -> pd.DataFrame:
    """The headline numbers, one column per crosscoder: explained variance, L0 and dead latents per group, corner
    shares with their bootstrap intervals and, with ground truth, the Figure-3 triple and the top-left concepts."""
    cols = {}
    for r in results:
        m, cfg = r.held, r.model.cfg
        col = {"penalty": f"{cfg.shared_penalty}, eta {cfg.eta}",
               "explained variance base / chat": f"{m.explained_variance[BASE]:.3f} / {m.explained_variance[CHAT]:.3f}",
               "L0 shared / base / chat": f"{m.l0[0]:.1f} / {m.l0[1]:.2f} / {m.l0[2]:.2f}",
               "dead shared / base / chat": " / ".join(str(int(d)) for d in m.dead),
               "triples plotted": str(r.scatter.n_plotted), **r.shares.row()}  # fmt: skip
        if r.refusal is not None and r.corners is not None:
            f = r.refusal
            col |= {"Figure-3 triple": str(f.triple),
                    f"chat part on chat refusals (precision@{f.k}, P | fires)":
                        f"{f.chat_precision:.2f}, {f.chat_p_fires:.2f}",
                    f"base part on web refusals or disclaimers (precision@{f.k}, P | fires)":
                        f"{f.base_precision:.2f}, {f.base_p_fires:.2f} ({f.base_concept}s)",
                    "Figure-3 triple found": "yes" if f.found(settings.precision_threshold) else "no",
                    "top-left best at a chat-only concept":
                        f"{r.corners.top_left_chat_frac:.0%} of {len(r.corners.top_left)}",
                    "all kept triples best at one": f"{r.corners.all_chat_frac:.0%} of {r.corners.n_alive}",
                    }  # fmt: skip
        cols[r.name] = col
    return pd.DataFrame(cols)


def precision_tables(results: Sequence[ArchResults]) -> pd.DataFrame:
    """Best precision at k per concept (rows) for the base part on web and the chat part on chat data, one pair of
    columns per crosscoder (``"<name>: base / web"``, ``"<name>: chat / chat"``)."""
    frames = []
    for r in results:
        if r.scores is None:
            raise ValueError(f"{r.name} has no ground truth (not a lab pair): there is no precision table")
        t = r.scores.precision_table()[["base / web", "chat / chat"]]
        frames.append(t.rename(columns=lambda c, name=r.name: f"{name}: {c}"))
    return pd.concat(frames, axis=1)
