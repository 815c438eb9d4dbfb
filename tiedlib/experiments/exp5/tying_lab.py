"""Issue 8 beyond the synthetic benchmark: picking the fix from a sweep, and checking it on a model pair.

* :func:`best_fix`: from :func:`~.tying.aggregate_rows`, the variant that best keeps timing-shifted concepts on
  one index among those whose explained variance stays within a tolerance of the standard crosscoder's.
* :func:`variant_config`: the :class:`CrosscoderConfig` of a :data:`~.tying.VARIANTS` entry for any pair.
* :func:`half_balance`: the free-norm loophole on a trained tied crosscoder: triples whose smaller decoder half is
  (nearly) gone, and how often their *shared* group fires (then acting as a one-model latent).
* :func:`activation_data`, :func:`colour_triple`, :func:`colour_masks`, :func:`triple_firing`: the colour toy of
  Experiment 2 (does blue/green end up as one tied triple?).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib.config import CrosscoderConfig
from tiedlib.experiments.exp5.tying import VARIANTS


def _ev(row: dict[str, Any]) -> float:
    if "explained_variance" in row:
        return float(row["explained_variance"])
    return (float(row["explained_variance_base"]) + float(row["explained_variance_chat"])) / 2


def best_fix(
    rows: Sequence[dict[str, Any]],
    *,
    metric: str = "timing_one_index",
    baseline: str = "standard",
    ev_tolerance: float = 0.03,
    exclude: Sequence[str] = ("standard", "tied"),
) -> dict[str, Any]:
    """The (variant, eta) row with the highest ``metric`` among rows whose explained variance is at least the
    ``baseline`` variant's minus ``ev_tolerance`` (``exclude``: variants that are not fixes, e.g. the write-up's tied).

    ``rows``: one row per (variant, eta), e.g. from :func:`~.tying.aggregate_rows`. Returns ``{"variant",
    "eta", metric, "explained_variance", "baseline_ev", "ev_cost", "candidates"}`` (``candidates``: how many rows
    passed the EV test); ``variant`` is None when none passed.

    Raises:
        ValueError: no row of the ``baseline`` variant.
    """
    base = [r for r in rows if r["variant"] == baseline]
    if not base:
        raise ValueError(f"no row of the baseline variant {baseline!r}")
    base_ev = max(_ev(r) for r in base)
    ok = [r for r in rows if r["variant"] not in exclude and _ev(r) >= base_ev - ev_tolerance
          and r.get(metric) is not None and r[metric] == r[metric]]  # fmt: skip
    out: dict[str, Any] = {"variant": None, "eta": None, metric: float("nan"), "explained_variance": float("nan"),
                           "baseline_ev": base_ev, "ev_cost": float("nan"), "candidates": len(ok)}  # fmt: skip
    if ok:
        best = max(ok, key=lambda r: (r[metric], _ev(r)))
        out.update(variant=best["variant"], eta=best["eta"], explained_variance=_ev(best), ev_cost=base_ev - _ev(best))
        out[metric] = float(best[metric])
    return out


def variant_config(name: str, d_model: int, n_latents: int, *, eta: float = 2.0, **extra: Any) -> CrosscoderConfig:
    """:class:`CrosscoderConfig` of the variant ``name`` of :data:`~.tying.VARIANTS` (a fraction
    ``n_designated_shared`` becomes a count of latents; BatchTopK variants need ``k`` in ``extra``)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {sorted(VARIANTS)}")
    overrides = dict(VARIANTS[name]["crosscoder"])
    if "n_designated_shared" in overrides:
        overrides["n_designated_shared"] = max(1, int(overrides["n_designated_shared"] * n_latents))
    overrides.update(extra)
    return CrosscoderConfig(d_model=d_model, n_latents=n_latents, eta=eta, **overrides)


@torch.no_grad()
def half_balance(model: Any, shared_counts: Tensor | None = None, *, below: float = 0.3) -> dict[str, Any]:
    """Decoder-half balance of a tied crosscoder: ``ratio`` (smaller / larger half norm per triple) and
    ``one_sided`` (ratio < ``below``).

    With ``shared_counts`` (firings of the shared group per triple, e.g. ``FiringCounts.counts[SHARED]``) also:
    ``one_sided_frac`` among triples whose shared group fires, and ``shared_firings_one_sided``: the share of all
    shared-group firings that land on one-sided triples (the shared group acting as a one-model latent).
    """
    norms = model.W_dec.detach().norm(dim=-1).cpu()
    ratio = norms.min(dim=1).values / norms.max(dim=1).values.clamp_min(1e-12)
    one_sided = ratio < below
    out: dict[str, Any] = {"ratio": ratio, "one_sided": one_sided}
    if shared_counts is not None:
        c = shared_counts.cpu().double()
        fires = c > 0
        out["one_sided_frac"] = float(one_sided[fires].float().mean()) if fires.any() else float("nan")
        out["shared_firings_one_sided"] = float(c[one_sided].sum() / c.sum()) if c.sum() > 0 else float("nan")
    return out


def activation_data(acts: Any, batch_size: int, *, seed: int = 0) -> Callable[[], Iterator[Tensor]]:
    """A ``make_data()`` for :func:`tiedlib.training.train_or_load` serving the normalised rows of a
    :class:`~tiedlib.activations.PairActivations` in shuffled batches, repeated for as many epochs as training needs."""

    def make_data() -> Iterator[Tensor]:
        warnings.filterwarnings("ignore", message="InMemoryBatches: starting epoch")
        return acts.batches(batch_size, seed=seed)

    return make_data


def colour_triple(
    W_dec: Float[Tensor, "n_latents 2 d_model"],
    W_U_base: Float[Tensor, "d_model vocab"],
    W_U_chat: Float[Tensor, "d_model vocab"],
    colour_ids: dict[str, int],
    *,
    top_k: int = 3,
    colour_rate: Tensor | None = None,
    min_rate: float = 0.05,
) -> dict[str, Any]:
    """The tied index whose two decoder halves both read as blue/green through the logit lens.

    Each half is read through its own model's unembedding
    (:func:`~tiedlib.analysis.logit_lens.colour_latents`); an index is ranked by the worse of its two
    halves' worst colour rank. Returns ``{"triple", "rank_base", "rank_chat",
    "hits_base", "hits_chat", "both", "single"}``: ``hits_*`` are the indices whose half has both colours among its
    top ``top_k`` positive logits, ``both`` their intersection, ``single``: exactly one index is blue/green and on
    both halves (the concept is one triple).

    ``colour_rate`` (per index, e.g. how often any of its groups fires on colour tokens) restricts the hits to indices
    firing at least ``min_rate`` and breaks rank ties in favour of the index that fires most (with a small vocabulary
    many dead or unrelated decoder vectors happen to rank the two colours high).
    """
    from tiedlib.analysis.logit_lens import colour_latents

    W = W_dec.detach().float().to(W_U_base.device)
    halves = [colour_latents(W[:, m], W_U, colour_ids) for m, W_U in enumerate((W_U_base, W_U_chat))]
    rank = torch.zeros(2, W.shape[0], dtype=torch.long)
    for m, cl in enumerate(halves):
        rank[m, cl.indices] = cl.worst_rank
    worst = rank.max(dim=0).values
    rate = torch.zeros(W.shape[0]) if colour_rate is None else torch.as_tensor(colour_rate, dtype=torch.float).cpu()
    live = torch.ones(W.shape[0], dtype=torch.bool) if colour_rate is None else rate >= min_rate
    pool = live.nonzero().squeeze(1).tolist() or list(range(W.shape[0]))
    triple = int(min(pool, key=lambda i: (int(worst[i]), -float(rate[i]), int(rank[:, i].sum()))))
    hits_b, hits_c = (set(i for i in cl.hits(top_k).tolist() if live[i]) for cl in halves)
    both = sorted(hits_b & hits_c)
    return {"triple": triple, "rank_base": int(rank[0, triple]), "rank_chat": int(rank[1, triple]),
            "hits_base": sorted(hits_b), "hits_chat": sorted(hits_c), "both": both,
            "single": len(both) == 1 and hits_b == hits_c}  # fmt: skip


def colour_masks(
    token_ids: Tensor, doc_index: Tensor, position: Tensor, seqs: Sequence[Sequence[int]], colour_ids: dict[str, int]
) -> dict[str, Bool[Tensor, " n_tokens"]]:
    """Rows of a harvest of ``seqs`` (each a prefix followed by its colour token): ``"<c> token"`` (the colour token
    itself) and ``"before <c>"`` (the last prefix token, where the model predicts the colour) for each colour."""
    last = torch.tensor([s[-1] for s in seqs], dtype=torch.long)[doc_index]
    length = torch.tensor([len(s) for s in seqs], dtype=torch.long)[doc_index]
    out = {}
    for c, cid in colour_ids.items():
        ends_with = last == cid
        out[f"{c} token"] = ends_with & (position == length - 1) & (token_ids == cid)
        out[f"before {c}"] = ends_with & (position == length - 2)
    return out


@torch.no_grad()
def triple_firing(model: Any, rows: Tensor, masks: dict[str, Tensor], triple: int) -> dict[str, list[float]]:
    """Fraction of the masked rows (normalised activations) on which each group (shared, base, chat) of ``triple``
    fires, per mask; an empty mask gives NaNs."""
    out = {}
    for name, m in masks.items():
        if not m.any():
            out[name] = [float("nan")] * 3
            continue
        f = model.encode(rows[m.to(rows.device)])[:, :, triple]  # (n, 3)
        out[name] = (f > 0).float().mean(dim=0).cpu().tolist()
    return out


__all__ = ["activation_data", "best_fix", "colour_masks", "colour_triple", "half_balance", "triple_firing",
           "variant_config"]  # fmt: skip
