"""The notebook's closing summary, written from the results computed above it."""

from __future__ import annotations

from typing import Any

from tiedlib.analysis.firing import HeldOutMetrics
from tiedlib.config import BASE, CHAT
from tiedlib.experiments.exp1.baseline import StandardBaseline
from tiedlib.experiments.exp1.compare import ArchResults
from tiedlib.experiments.exp1.corners import CornerShares
from tiedlib.experiments.exp1.ground_truth import CornerConcepts, RefusalTriple
from tiedlib.experiments.exp1.presets import Exp1Settings
from tiedlib.experiments.exp1.ratios import RatioScatter


def _first(triples) -> str:
    return str(int(triples[0])) if triples.numel() else "none (no triple has enough exclusive firings)"


def summary(scale: str, pair: Any, tied: Any, held: HeldOutMetrics, scatter: RatioScatter, settings: Exp1Settings,
            *, refusal: RefusalTriple | None = None, corners: CornerConcepts | None = None,
            baseline: StandardBaseline | None = None, shares: CornerShares | None = None,
            recommended: ArchResults | None = None) -> str:  # fmt: skip
    """The run's findings, one sentence per line.

    Args:
        scale: the notebook's ``SCALE``.
        pair: the model pair (``name`` and ``layer`` are read).
        tied: the tied crosscoder (``cfg.n_latents`` and ``cfg.eta`` are read).
        held: the tied crosscoder's metrics on the web + chat sample.
        refusal, corners: the ground-truth results (lab pairs only; both or neither).
        baseline: the standard-crosscoder baseline; its sentence needs ground truth and a query latent.
        shares: the corner shares of ``tied`` (bootstrap over held-out documents).
        recommended: the recommended tied crosscoder's results, summarised after the write-up's.
    """
    m = held
    lines = [f"Scale: {scale} (pair {pair.name}, layer {pair.layer}, {tied.cfg.n_latents} x 3 latents, "
             f"eta {tied.cfg.eta}).",
             f"Held-out explained variance: base {m.explained_variance[BASE]:.3f}, chat "
             f"{m.explained_variance[CHAT]:.3f}; L0 shared/base/chat {m.l0[0]:.1f}/{m.l0[1]:.1f}/{m.l0[2]:.1f}; dead "
             f"{m.dead.tolist()} over {m.firing.n_tokens:,} tokens.",
             f"Ratio scatter: {scatter.n_plotted} triples plotted, {scatter.n_rare} dropped as rare, "
             f"{scatter.n_never_shared} never shared; most top-left {_first(scatter.corners.top_left)}, most "
             f"bottom-right {_first(scatter.corners.bottom_right)}."]  # fmt: skip
    if (refusal is None) != (corners is None):
        raise ValueError("pass both ground-truth results (refusal and corners) or neither")
    if refusal is not None and corners is not None:
        lines += [refusal.verdict(settings.precision_threshold), corners.verdict()]
        if baseline is not None and baseline.verdict() is not None:
            lines.append(baseline.verdict())
    if shares is not None:
        lines.append(f"Corner shares (>= {settings.min_exclusive_firings} exclusive firings, 95% bootstrap over "
                     f"{shares.n_docs} documents): {shares.text()}.")  # fmt: skip
    if recommended is not None:
        r, cfg = recommended, recommended.model.cfg
        e = r.held.explained_variance
        lines.append(f"Recommended tied ({cfg.shared_penalty} shared penalty, eta {cfg.eta}, same data and steps): "
                     f"explained variance base {e[BASE]:.3f}, chat {e[CHAT]:.3f}; L0 {r.held.l0[0]:.1f}/"
                     f"{r.held.l0[1]:.1f}/{r.held.l0[2]:.1f}; corner shares {r.shares.text()}.")  # fmt: skip
        if r.refusal is not None and r.corners is not None:
            lines += [f"Recommended: {r.refusal.verdict(settings.precision_threshold)}",
                      f"Recommended: {r.corners.verdict()}"]  # fmt: skip
    return "\n".join(lines)
