"""Experiment 1's headline numbers as text, keyed ``exp1_*``: the notebook glues each one (myst-nb) for the book's
Findings page and for ``scripts/findings.py``, which writes them into the README. Nothing here is typed by hand."""

from __future__ import annotations

from typing import Any

from tiedlib.analysis.firing import HeldOutMetrics
from tiedlib.config import BASE, CHAT
from tiedlib.experiments.exp1.baseline import StandardBaseline
from tiedlib.experiments.exp1.ground_truth import CornerConcepts, RefusalTriple
from tiedlib.experiments.exp1.presets import Exp1Settings
from tiedlib.experiments.exp1.seeds import SeedRuns

NO_GROUND_TRUTH = "n/a (no ground-truth labels for this pair)"


def findings(scale: str, pair: Any, tied: Any, held: HeldOutMetrics, settings: Exp1Settings, *,
             refusal: RefusalTriple | None = None, corners: CornerConcepts | None = None,
             baseline: StandardBaseline | None = None, seeds: SeedRuns | None = None) -> dict[str, str]:  # fmt: skip
    """Every headline number of notebook 01, formatted, under a stable ``exp1_*`` key.

    Args:
        scale: the notebook's ``SCALE``.
        pair: the model pair (``name`` and ``layer`` are read).
        tied: the headline tied crosscoder (``cfg.n_latents``, ``cfg.eta``).
        held: its metrics on the held-out web + chat sample.
        settings: the notebook's settings.
        refusal, corners: the ground-truth results (lab pairs), None without ground truth.
        baseline: the standard-crosscoder baseline.
        seeds: the seed runs (None when the scale runs none).
    """
    n = tied.cfg.n_latents
    out = {
        "exp1_setup": f"{scale} scale, pair {pair.name} (layer {pair.layer}), {n} x 3 latents, eta {tied.cfg.eta}, "
                      f"{settings.n_steps} steps",
        "exp1_ev": f"base {held.explained_variance[BASE]:.3f}, chat {held.explained_variance[CHAT]:.3f}",
        "exp1_l0": f"shared {held.l0[0]:.1f}, base-only {held.l0[1]:.2f}, chat-only {held.l0[2]:.2f}",
        "exp1_dead": f"base-only {int(held.dead[1])}, chat-only {int(held.dead[2])} of {n}",
    }  # fmt: skip
    if refusal is None or corners is None:
        out.update(exp1_refusal=NO_GROUND_TRUTH, exp1_refusal_recovered=NO_GROUND_TRUTH, exp1_top_left=NO_GROUND_TRUTH)
    else:
        passed = refusal.found(settings.auroc_threshold)
        out["exp1_refusal"] = (f"triple {refusal.triple}: chat part AUROC {refusal.chat_auroc:.2f} on chat refusals, "
                               f"base part {refusal.base_auroc:.2f} on web {refusal.base_concept}s")  # fmt: skip
        out["exp1_refusal_recovered"] = (f"{'yes' if passed else 'no'}: joint AUROC {refusal.joint_auroc:.2f} "
                                         f"{'>=' if passed else '<'} {settings.auroc_threshold}")  # fmt: skip
        out["exp1_top_left"] = (f"{corners.top_left_chat_frac:.0%} of top-left triples vs {corners.all_chat_frac:.0%} "
                                f"of all {corners.n_alive} kept triples")  # fmt: skip
    c = baseline.concepts if baseline is not None else None
    if baseline is None or baseline.query is None:
        out["exp1_baseline"] = "no firing chat-exclusive latent in the standard crosscoder"
    elif c is None:
        out["exp1_baseline"] = f"query latent {baseline.query} ({NO_GROUND_TRUTH})"
    else:
        out["exp1_baseline"] = (f"standard latent {baseline.query} detects '{c.concept}' (AUROC {c.query_auroc:.2f}); "
                                f"its nearest base decoders reach {c.neighbour_best:.2f}, the tied triple's base part "
                                f"{c.tied_base:.2f} (one seed)")  # fmt: skip
    if seeds is None:
        none = "no seed runs at this scale"
        out.update(exp1_seeds=none, exp1_seed_l0=none, exp1_seed_dead=none, exp1_seed_verdict=none)
    else:
        out.update(exp1_seeds=f"{len(seeds.seeds)} seeds x {seeds.n_steps} steps",
                   exp1_seed_l0=seeds.l0_chat_minus_base().text(),
                   exp1_seed_dead=seeds.dead_chat_minus_base().text(1),
                   exp1_seed_verdict=seeds.l0_verdict())  # fmt: skip
    return out
