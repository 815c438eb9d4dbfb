"""Experiment 1's headline numbers as text, keyed ``exp1_*``: the notebook glues each one (myst-nb) for the book's
Findings page and for ``scripts/findings.py``, which writes them into the README. Nothing here is typed by hand."""

from __future__ import annotations

from typing import Any

from tiedlib.analysis.firing import HeldOutMetrics
from tiedlib.config import BASE, CHAT
from tiedlib.experiments.exp1.baseline import StandardBaseline
from tiedlib.experiments.exp1.compare import ArchResults
from tiedlib.experiments.exp1.corners import CornerShares
from tiedlib.experiments.exp1.ground_truth import CornerConcepts, RefusalTriple
from tiedlib.experiments.exp1.presets import Exp1Settings
from tiedlib.experiments.exp1.seeds import SeedRuns

NO_GROUND_TRUTH = "n/a (no ground-truth labels for this pair)"
NOT_TRAINED = "n/a (the recommended tied crosscoder was not trained in this run)"


def _model_findings(prefix: str, scale: str, pair: Any, tied: Any, held: HeldOutMetrics, settings: Exp1Settings,
                    refusal: RefusalTriple | None, corners: CornerConcepts | None,
                    shares: CornerShares | None) -> dict[str, str]:  # fmt: skip
    """The headline numbers of one tied crosscoder under ``<prefix>setup``, ``<prefix>ev``, ... keys."""
    n, cfg = tied.cfg.n_latents, tied.cfg
    penalty = "" if cfg.shared_penalty == "sum" else f", {cfg.shared_penalty} shared penalty"
    out = {
        f"{prefix}setup": f"{scale} scale, pair {pair.name} (layer {pair.layer}), {n} x 3 latents, eta {cfg.eta}"
                          f"{penalty}, {settings.n_steps} steps",
        f"{prefix}ev": f"base {held.explained_variance[BASE]:.3f}, chat {held.explained_variance[CHAT]:.3f}",
        f"{prefix}l0": f"shared {held.l0[0]:.1f}, base-only {held.l0[1]:.2f}, chat-only {held.l0[2]:.2f}",
        f"{prefix}dead": f"base-only {int(held.dead[1])}, chat-only {int(held.dead[2])} of {n}",
        f"{prefix}corners": shares.text() if shares is not None else "not measured",
    }  # fmt: skip
    if refusal is None or corners is None:
        for key in ("refusal", "refusal_recovered", "top_left"):
            out[f"{prefix}{key}"] = NO_GROUND_TRUTH
        return out
    passed, k = refusal.found(settings.precision_threshold), refusal.k
    out[f"{prefix}refusal"] = (f"triple {refusal.triple}: at the end of the prompt, chat part precision@{k} "
                               f"{refusal.chat_precision:.2f} (P | fires {refusal.chat_p_fires:.2f}, chance "
                               f"{refusal.chat_chance:.2f}) on chat refusals, base part {refusal.base_precision:.2f} "
                               f"(P | fires {refusal.base_p_fires:.2f}, chance {refusal.base_chance:.2f}) on web "
                               f"{refusal.base_concept}s")  # fmt: skip
    out[f"{prefix}refusal_recovered"] = (f"{'yes' if passed else 'no'}: joint precision@{k} {refusal.joint:.2f} "
                                         f"{'>=' if passed else '<'} {settings.precision_threshold}")  # fmt: skip
    out[f"{prefix}top_left"] = (f"{corners.top_left_chat_frac:.0%} of {len(corners.top_left)} top-left triples (chat "
                                f"part >= {corners.min_firings} firings) vs {corners.all_chat_frac:.0%} of all "
                                f"{corners.n_alive} kept triples")  # fmt: skip
    return out


def findings(scale: str, pair: Any, tied: Any, held: HeldOutMetrics, settings: Exp1Settings, *,
             refusal: RefusalTriple | None = None, corners: CornerConcepts | None = None,
             baseline: StandardBaseline | None = None, seeds: SeedRuns | None = None,
             shares: CornerShares | None = None, recommended: ArchResults | None = None) -> dict[str, str]:  # fmt: skip
    """Every headline number of notebook 01, formatted, under a stable ``exp1_*`` key; the recommended tied
    crosscoder's under the same names with ``exp1_rec_`` (when ``recommended`` is given).

    Args:
        scale: the notebook's ``SCALE``.
        pair: the model pair (``name`` and ``layer`` are read).
        tied: the headline tied crosscoder (``cfg.n_latents``, ``cfg.eta``).
        held: its metrics on the held-out web + chat sample.
        settings: the notebook's settings.
        refusal, corners: the ground-truth results (lab pairs), None without ground truth.
        baseline: the standard-crosscoder baseline.
        seeds: the seed runs (None when the scale runs none).
        shares: the write-up crosscoder's corner shares with their bootstrap intervals.
        recommended: the recommended tied crosscoder's results (:func:`tiedlib.experiments.exp1.compare.analyse`).
    """
    out = _model_findings("exp1_", scale, pair, tied, held, settings, refusal, corners, shares)
    if recommended is not None:
        r = recommended
        out |= _model_findings("exp1_rec_", scale, pair, r.model, r.held, settings, r.refusal, r.corners, r.shares)
    else:  # every exp1_rec_* key the page may paste exists
        out |= {k.replace("exp1_", "exp1_rec_", 1): NOT_TRAINED for k in list(out)}
    c = baseline.concepts if baseline is not None else None
    if baseline is None or baseline.query is None:
        out["exp1_baseline"] = "no firing chat-exclusive latent in the standard crosscoder"
    elif c is None:
        out["exp1_baseline"] = f"query latent {baseline.query} ({NO_GROUND_TRUTH})"
    else:
        out["exp1_baseline"] = (f"standard latent {baseline.query} picks out '{c.concept}' ({c.metric} "
                                f"{c.query_score:.2f}); its nearest base decoders reach {c.neighbour_best:.2f}, the "
                                f"tied triple's base part {c.tied_base:.2f} (one seed)")  # fmt: skip
    if seeds is None:
        none = "no seed runs at this scale"
        out.update(exp1_seeds=none, exp1_seed_l0=none, exp1_seed_dead=none, exp1_seed_verdict=none)
    else:
        out.update(exp1_seeds=f"{len(seeds.seeds)} seeds x {seeds.n_steps} steps",
                   exp1_seed_l0=seeds.l0_chat_minus_base().text(),
                   exp1_seed_dead=seeds.dead_chat_minus_base().text(1),
                   exp1_seed_verdict=seeds.l0_verdict())  # fmt: skip
    return out
