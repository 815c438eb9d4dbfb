"""Synthetic benchmark for issue 8: "Does the tied crosscoder tie?"

Paired activations ``x (n_rows, 2, d_model)`` are built from a known dictionary of features in superposition (more
features than ``d_model``), each of one kind:

* ``shared``: one direction in both models, fires in both at the same times with the same magnitude.
* ``timing``: *timing-shifted*, the write-up's motivating case: one concept with one direction per model
  (``timing_cos`` apart; equal by default) that fires in both models at some times, and in each model alone at others.
* ``direction``: *direction-shifted*: fires in both at the same times; the chat direction is the base one rotated to
  cosine ``direction_cos``.
* ``base_only`` / ``chat_only``: fire in one model only.

Each feature fires on a small fraction of rows (log-uniform in ``[fire_prob_min, fire_prob_max]``) with exponential or
lognormal magnitudes. :func:`evaluate_crosscoder` compares a trained crosscoder with the ground truth (recovery per
kind, index consistency of timing-shifted concepts, group usage, explained variance, dead latents);
:mod:`tiedlib.experiments.exp5.tying` runs the eta sweep of the crosscoder variants on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from einops import einsum, rearrange
from jaxtyping import Float
from torch import Tensor

from tiedlib.config import BASE, CHAT, _JsonConfig
from tiedlib.crosscoders.crosscoder import Crosscoder

KINDS = ("shared", "timing", "direction", "base_only", "chat_only")
"""Feature kinds, in the order their features appear in a :class:`SyntheticData`."""
ROW_KINDS = ("both", "base_alone", "chat_alone")
"""For one feature: rows where it fires in both models, in base only, in chat only."""
ETAS = (0.5, 1.0, 1.5, 2.0, 3.0)


@dataclass
class SyntheticConfig(_JsonConfig):
    """Size and statistics of the synthetic paired activations (defaults: the small, notebook/test size)."""

    d_model: int = 32
    n_shared: int = 40
    """Number of features of each kind (five fields)."""
    n_timing: int = 24
    n_direction: int = 16
    n_base_only: int = 16
    n_chat_only: int = 16
    n_rows: int = 32768
    fire_prob_min: float = 0.01
    """Each feature fires on a fraction of rows drawn log-uniformly from [fire_prob_min, fire_prob_max]."""
    fire_prob_max: float = 0.05
    magnitude: Literal["exponential", "lognormal"] = "exponential"
    """Firing magnitudes: Exp(1), or lognormal with median 1 and sigma 0.5."""
    timing_both_frac: float = 0.4
    """Fraction of a timing-shifted feature's firings that are in both models; the rest are split evenly between
    base alone and chat alone."""
    timing_cos: float = 1.0
    """Cosine between the chat and base directions of a timing-shifted feature (1: the chat model reuses the base
    direction in new contexts, the write-up's hypothesis)."""
    direction_cos: float = 0.5
    """Cosine between the chat and base directions of a direction-shifted feature."""
    noise_std: float = 0.01
    """Std of isotropic Gaussian noise added to every coordinate."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.n_rows <= 0:
            raise ValueError("d_model and n_rows must be positive")
        if min(self.counts) < 0 or sum(self.counts) == 0:
            raise ValueError(f"feature counts must be >= 0 and not all 0, got {self.counts}")
        if not 0 < self.fire_prob_min <= self.fire_prob_max <= 1:
            raise ValueError("need 0 < fire_prob_min <= fire_prob_max <= 1")
        if self.magnitude not in ("exponential", "lognormal"):
            raise ValueError(f"magnitude must be 'exponential' or 'lognormal', got {self.magnitude!r}")
        if not 0 <= self.timing_both_frac <= 1:
            raise ValueError("timing_both_frac must be in [0, 1]")
        for name in ("timing_cos", "direction_cos"):
            if not -1 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [-1, 1]")
        if self.noise_std < 0:
            raise ValueError("noise_std must be >= 0")

    @property
    def counts(self) -> tuple[int, ...]:
        return (self.n_shared, self.n_timing, self.n_direction, self.n_base_only, self.n_chat_only)

    @property
    def n_features(self) -> int:
        return sum(self.counts)


@dataclass
class SyntheticData:
    """Paired activations with their ground truth."""

    x: Float[Tensor, "n_rows n_models d_model"]
    acts: Float[Tensor, "n_rows n_models n_features"]
    """Activation of each feature in each model on each row (0 where it does not fire in that model)."""
    directions: Float[Tensor, "n_features n_models d_model"]
    """Unit direction of each feature in each model (a one-model feature has its direction in both slots)."""
    kinds: list[str]
    """Kind of each feature, one of :data:`KINDS`."""
    fire_prob: Float[Tensor, " n_features"]
    cfg: SyntheticConfig

    def kind_ids(self, kind: str) -> Tensor:
        """Indices of the features of one kind."""
        return torch.tensor([j for j, k in enumerate(self.kinds) if k == kind], dtype=torch.long)

    @property
    def true_l0(self) -> float:
        """Mean number of firing features per row (a feature firing in both models counts once)."""
        return float((self.acts > 0).any(dim=1).sum(dim=1).float().mean())

    def true_group_l0(self) -> dict[str, float]:
        """What an ideal tied crosscoder's groups would fire per row: features firing in both models (shared), in
        base alone, in chat alone."""
        masks = row_kind_masks(self.acts)
        return {
            f"true_l0_{g}": float(m.sum(dim=1).float().mean())
            for g, m in zip(("shared", "base", "chat"), masks, strict=True)
        }


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def _rotated(u: Tensor, cos: float, gen: torch.Generator) -> Tensor:
    """Unit vectors at cosine ``cos`` from the unit rows of ``u``, in random directions."""
    w = torch.randn(u.shape, generator=gen)
    w = _unit(w - (w * u).sum(-1, keepdim=True) * u)
    return cos * u + math.sqrt(max(0.0, 1 - cos**2)) * w


def make_synthetic(cfg: SyntheticConfig, *, n_rows: int | None = None, row_seed: int | None = None) -> SyntheticData:
    """Build the feature dictionary from ``cfg.seed`` and sample rows from it.

    Args:
        cfg: sizes and statistics.
        n_rows: rows to sample (default ``cfg.n_rows``).
        row_seed: seed of the rows only (default ``cfg.seed``); the same ``cfg`` with another ``row_seed`` gives
            held-out rows from the same dictionary.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    kinds = [k for k, c in zip(KINDS, cfg.counts, strict=True) for _ in range(c)]
    n_feat, d = len(kinds), cfg.d_model
    base = _unit(torch.randn(n_feat, d, generator=gen))
    chat = base.clone()
    kind_t = torch.tensor([KINDS.index(k) for k in kinds])
    for kind, cos in (("timing", cfg.timing_cos), ("direction", cfg.direction_cos)):
        sel = kind_t == KINDS.index(kind)
        if sel.any() and cos < 1:
            chat[sel] = _rotated(base[sel], cos, gen)
    directions = torch.stack([base, chat], dim=1)
    lo, hi = math.log(cfg.fire_prob_min), math.log(cfg.fire_prob_max)
    fire_prob = torch.exp(lo + (hi - lo) * torch.rand(n_feat, generator=gen))

    n = cfg.n_rows if n_rows is None else n_rows
    rgen = torch.Generator().manual_seed(cfg.seed if row_seed is None else row_seed)
    fires = torch.rand(n, n_feat, generator=rgen) < fire_prob
    if cfg.magnitude == "exponential":
        mag = -torch.log1p(-torch.rand(n, n_feat, generator=rgen))
    else:
        mag = torch.exp(0.5 * torch.randn(n, n_feat, generator=rgen))
    # Which models a firing reaches: 0 both, 1 base alone, 2 chat alone.
    u = torch.rand(n, n_feat, generator=rgen)
    alone = (1 - cfg.timing_both_frac) / 2
    event = torch.where(u < cfg.timing_both_frac, 0, torch.where(u < cfg.timing_both_frac + alone, 1, 2))
    event = torch.where(kind_t == KINDS.index("timing"), event, 0)
    event = torch.where(kind_t == KINDS.index("base_only"), 1, event)
    event = torch.where(kind_t == KINDS.index("chat_only"), 2, event)
    a = fires * mag
    acts = torch.stack([a * (event != 2), a * (event != 1)], dim=1)  # (n, 2, F)
    x = einsum(acts, directions, "row model feature, feature model d -> row model d")
    if cfg.noise_std:
        x = x + cfg.noise_std * torch.randn(x.shape, generator=rgen)
    return SyntheticData(x=x, acts=acts, directions=directions, kinds=kinds, fire_prob=fire_prob, cfg=cfg)


# ---- metrics (pure functions of weights, latents and ground truth) --------------------------------------------------
def half_present(W_dec: Float[Tensor, "n_latents n_models d_model"], present_frac: float = 0.1) -> Tensor:
    """``(n_latents, 2)`` bool: a decoder half counts as present when its norm is at least ``present_frac`` times the
    larger half of the same latent (a shrunk half writes almost nothing, whatever its direction)."""
    norms = W_dec.norm(dim=-1)
    return norms >= present_frac * norms.max(dim=-1, keepdim=True).values.clamp_min(1e-12)


def decoder_cosines(
    W_dec: Float[Tensor, "n_latents n_models d_model"],
    directions: Float[Tensor, "n_features n_models d_model"],
    present_frac: float = 0.1,
) -> Float[Tensor, "n_latents n_features n_models"]:
    """Cosine between each latent's decoder half and each feature's true direction in the same model; 0 for absent
    halves (see :func:`half_present`)."""
    cos = einsum(_unit(W_dec.detach().float()), directions.float(),
                 "latent model d, feature model d -> latent feature model")
    return cos * half_present(W_dec.detach(), present_frac)[:, None, :]


def feature_match(cos: Float[Tensor, "n_latents n_features n_models"], kinds: Sequence[str]) -> Tensor:
    """``(n_latents, n_features)`` match score: the cosine in the feature's model for one-model kinds, the mean of the
    two models' cosines otherwise (so a concept split over two indices scores at most 0.5 on each)."""
    use = torch.tensor([[k != "chat_only", k != "base_only"] for k in kinds], dtype=cos.dtype)  # (F, 2)
    return (cos * use).sum(-1) / use.sum(-1)


def recovery(cos: Float[Tensor, "n_latents n_features n_models"], kinds: Sequence[str]) -> dict[str, Tensor]:
    """Per feature: max cosine of any decoder half with its true direction, per model (``base``, ``chat``: NaN for a
    model the feature is absent from), their mean (``recovery``), and for two-model kinds the best *single* index in
    both models, ``max_i min(cos_base, cos_chat)`` (``pair``; NaN for one-model kinds)."""
    best = cos.max(dim=0).values  # (F, 2)
    base_ok = torch.tensor([k != "chat_only" for k in kinds])
    chat_ok = torch.tensor([k != "base_only" for k in kinds])
    nan = torch.tensor(float("nan"))
    rec_b = torch.where(base_ok, best[:, BASE], nan)
    rec_c = torch.where(chat_ok, best[:, CHAT], nan)
    pair = torch.where(base_ok & chat_ok, cos.min(dim=-1).values.max(dim=0).values, nan)
    return {"base": rec_b, "chat": rec_c, "recovery": torch.nanmean(torch.stack([rec_b, rec_c]), dim=0), "pair": pair}


def model_coefficients(model: Crosscoder, latents: Tensor) -> Float[Tensor, "batch n_models n_latents"]:
    """How much each index writes along its decoder half in each model: ``f`` twice for a standard crosscoder,
    ``(f_shared + f_base, f_shared + f_chat)`` for a tied one."""
    if latents.ndim == 2:
        return latents.unsqueeze(1).expand(-1, 2, -1)
    return torch.stack([latents[:, 0] + latents[:, 1], latents[:, 0] + latents[:, 2]], dim=1)


def row_kind_masks(acts: Float[Tensor, "n_rows n_models n_features"], min_act: float = 0.0) -> Tensor:
    """``(3, n_rows, n_features)`` bool: rows where each feature fires in both models, base alone, chat alone.

    Only clear firings count: a model's activation must exceed ``min_act`` (an L1 crosscoder cannot be expected to
    catch the smallest exponential magnitudes); "alone" still means exactly 0 in the other model.
    """
    b, c = acts[:, BASE] > min_act, acts[:, CHAT] > min_act
    b0, c0 = acts[:, BASE] > 0, acts[:, CHAT] > 0
    return torch.stack([b & c, b & ~c0, ~b0 & c])


def coverage(
    writes: Tensor, masks: Tensor, alone_writes: Tensor | None = None
) -> Float[Tensor, "3 n_features n_latents"]:
    """Fraction of each row kind of each feature on which each index writes into the right model(s).

    Args:
        writes: ``(n_rows, 2, n_latents)`` bool: the index writes a present decoder half in that model on that row.
        masks: ``(3, n_rows, n_features)`` from :func:`row_kind_masks`.
        alone_writes: optional ``(n_rows, 2, n_latents)`` bool used for the one-model rows instead of ``writes``:
            the strict count of issue 15 passes :func:`writes_mostly`, so that an index that writes a base-alone
            firing into the chat model as much as into the base model (a standard latent with both halves, a tied
            shared group) does not count.
    Returns: ``cov[r, j, i]``; NaN where feature ``j`` has no rows of kind ``r``. "Right models": both models for
    ``both`` rows, base for ``base_alone``, chat for ``chat_alone``.
    """
    wb, wc = writes[:, BASE].float(), writes[:, CHAT].float()
    alone = writes if alone_writes is None else alone_writes
    hits = [m.float().T @ w for m, w in zip(masks, (wb * wc, alone[:, BASE].float(), alone[:, CHAT].float()),
                                            strict=True)]  # each (F, L)
    counts = masks.sum(dim=1).float()  # (3, F)
    return torch.stack(hits) / counts.unsqueeze(-1).where(counts.unsqueeze(-1) > 0, torch.tensor(float("nan")))


def writes_mostly(amounts: Float[Tensor, "n_rows n_models n_latents"], leak: float = 0.25) -> Tensor:
    """``(n_rows, 2, n_latents)`` bool: the index writes into that model and at most ``leak`` times as much into the
    other (``amounts``: coefficient times decoder-half norm, what the index adds to each model's reconstruction)."""
    other = amounts.flip(1)
    return (amounts > 0) & (other <= leak * amounts)


def index_consistency(
    cov: Float[Tensor, "3 n_features n_latents"], best_index: Tensor, match: Tensor, match_cos: float = 0.5
) -> dict[str, Tensor]:
    """Does ONE index carry a concept on all three row kinds?

    Args:
        cov: :func:`coverage` restricted to the features of interest.
        best_index: ``(n_features,)`` index whose decoder best matches each feature (argmax of :func:`feature_match`).
        match: ``(n_latents, n_features)`` from :func:`feature_match`, restricted the same way.
    Returns, per feature: ``best_coverage (F, 3)`` (coverage of the best index on each row kind),
    ``consistency (F,)`` (its mean), ``one_index (F,)`` (the best index covers >= 50% of every row kind) and
    ``n_indices (F,)`` (how many distinct indices are the top-covering index of some row kind, among indices whose
    decoder matches the feature with score >= match_cos / 2 in at least one model: 1 = on one index, 3 = split).
    """
    feats = torch.arange(cov.shape[1])
    best_cov = cov[:, feats, best_index].T  # (F, 3)
    candidate = (match >= match_cos / 2).T  # (F, L)
    masked = torch.where(candidate.unsqueeze(0), cov.nan_to_num(0.0), torch.tensor(-1.0))
    top = masked.argmax(dim=-1)  # (3, F)
    valid = masked.max(dim=-1).values > 0
    n_idx = torch.tensor([len(set(top[valid[:, j], j].tolist())) for j in range(cov.shape[1])])
    return {
        "best_coverage": best_cov,
        "consistency": best_cov.nanmean(dim=-1),
        "one_index": (best_cov.nan_to_num(1.0) >= 0.5).all(dim=-1),
        "n_indices": n_idx,
    }


def group_usage(model: Crosscoder, latents: Tensor) -> dict[str, float]:
    """L0 and dead fraction per group: the tied groups shared/base/chat, or for a standard crosscoder the classes of
    latents by relative decoder norm (base-exclusive r < 0.3, shared, chat-exclusive r > 0.7; designated shared
    latents separately)."""
    fired = latents > 0
    out: dict[str, float] = {}
    if latents.ndim == 3:
        groups = {name: fired[:, g] for g, name in enumerate(("shared", "base", "chat"))}
    else:
        r = model.relative_decoder_norm()
        nd = model.cfg.n_designated_shared
        designated = torch.arange(r.shape[0]) < nd
        groups = {
            "shared": fired[:, (r >= 0.3) & (r <= 0.7) & ~designated],
            "base": fired[:, (r < 0.3) & ~designated],
            "chat": fired[:, (r > 0.7) & ~designated],
        }
        if nd:
            groups["designated"] = fired[:, designated]
    for name, f in groups.items():
        out[f"l0_{name}"] = float(f.sum(dim=1).float().mean())
        out[f"n_latents_{name}"] = int(f.shape[1])
        out[f"dead_{name}"] = float((~f.any(dim=0)).float().mean()) if f.shape[1] else float("nan")
    flat = fired.reshape(fired.shape[0], -1)
    out["l0"] = float(flat.sum(dim=1).float().mean())
    out["dead_frac"] = float((~flat.any(dim=0)).float().mean())
    return out


@torch.no_grad()
def evaluate_crosscoder(
    model: Crosscoder,
    data: SyntheticData,
    *,
    present_frac: float = 0.1,
    match_cos: float = 0.5,
    min_act: float = 0.5,
) -> dict[str, Any]:
    """All benchmark metrics of a trained crosscoder on (held-out) synthetic rows.

    Returns a dict with these scalars:

    * ``explained_variance[_base|_chat]``, ``reconstruction``, ``sparsity`` (+ ``sparsity_shared``,
      ``sparsity_exclusive`` for tied): :meth:`Crosscoder.loss` on the rows (eval mode: BatchTopK uses its threshold).
    * ``l0``, ``dead_frac`` and per group ``l0_<g>``, ``dead_<g>``, ``n_latents_<g>`` (:func:`group_usage`);
      ``true_l0``, ``true_l0_shared|base|chat`` (what an ideal tied crosscoder's groups would fire);
      ``exclusive_usage`` = (``l0_base`` + ``l0_chat``) / (``true_l0_base`` + ``true_l0_chat``).
    * ``one_sided_frac`` (live indices with one decoder half shrunk away) and, tied only, ``l0_shared_one_sided``
      (shared-group firings per row on such indices: the shared group acting as an exclusive latent).
    * ``recovery_<kind>`` (mean per-model max cosine, :func:`recovery`).
    * ``timing_consistency``, ``timing_one_index``, ``timing_n_indices`` (:func:`index_consistency`, averaged over
      the timing-shifted features); ``timing_one_index_strict``: the same where, on one-model
      rows, the index must write at most a quarter as much into the other model (:func:`writes_mostly`).

    and ``per_kind`` (kind -> mean ``base``/``chat``/``recovery``/``pair`` recovery) and ``per_feature`` (lists over
    features: ``kind``, ``recovery``, ``pair_recovery``, ``best_index``, ``best_match``; and under ``timing``, per
    timing-shifted feature, its ``coverage`` (3 row kinds), ``n_indices`` and ``group_rates`` (3 row kinds x groups:
    how often each group of the best index fires)) for plotting.

    ``present_frac``: see :func:`half_present`; ``match_cos``: see :func:`index_consistency`; ``min_act``: see
    :func:`row_kind_masks`.
    """
    was_training = model.training
    model.eval()  # BatchTopK uses its inference threshold
    try:
        x = data.x.to(model.W_dec.device)
        latents = model.encode(x)
        out = model.loss(x, l1_coeff=0.0)
    finally:
        model.train(was_training)
    latents = latents.cpu()
    W_dec = model.W_dec.detach().cpu()
    cos = decoder_cosines(W_dec, data.directions, present_frac)
    rec = recovery(cos, data.kinds)
    match = feature_match(cos, data.kinds)
    best = match.argmax(dim=0)
    res: dict[str, Any] = {k: float(v) for k, v in out.scalars().items() if k != "total"}
    res.update(group_usage(model, latents))
    res["true_l0"] = data.true_l0
    res.update(data.true_group_l0())
    # Do the exclusive groups (tied) / exclusive latents (standard) carry the one-model firings of the data?
    true_excl = res["true_l0_base"] + res["true_l0_chat"]
    res["exclusive_usage"] = (res["l0_base"] + res["l0_chat"]) / true_excl if true_excl > 0 else float("nan")
    # The mechanism of issue 8: indices with one decoder half shrunk away, whose shared group then acts as an
    # exclusive latent. ``one_sided_frac``: share of live indices with exactly one present half;
    # ``l0_shared_one_sided``: shared-group firings per row on such indices (tied only).
    present = half_present(W_dec, present_frac)
    alive = (latents > 0).reshape(latents.shape[0], -1, latents.shape[-1]).any(dim=0).any(dim=0)
    one_sided = present.sum(-1) == 1
    res["one_sided_frac"] = float(one_sided[alive].float().mean()) if alive.any() else float("nan")
    if latents.ndim == 3:
        res["l0_shared_one_sided"] = float((latents[:, 0, one_sided] > 0).sum(dim=1).float().mean())
    per_kind: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        ids = data.kind_ids(kind)
        if len(ids):
            per_kind[kind] = {k: float(torch.nanmean(v[ids])) for k, v in rec.items()}
            res[f"recovery_{kind}"] = per_kind[kind]["recovery"]
    per_feature: dict[str, Any] = {
        "kind": list(data.kinds),
        "recovery": rec["recovery"].tolist(),
        "pair_recovery": rec["pair"].tolist(),
        "best_index": best.tolist(),
        "best_match": match.max(dim=0).values.tolist(),
    }
    tids = data.kind_ids("timing")
    if len(tids):
        writes = (model_coefficients(model, latents) > 0) & half_present(W_dec, present_frac).T.unsqueeze(0)
        masks = row_kind_masks(data.acts[:, :, tids], min_act)
        cov = coverage(writes, masks)
        ic = index_consistency(cov, best[tids], match[:, tids], match_cos)
        res["timing_consistency"] = float(ic["consistency"].nanmean())
        res["timing_one_index"] = float(ic["one_index"].float().mean())
        res["timing_n_indices"] = float(ic["n_indices"].float().mean())
        amounts = model_coefficients(model, latents) * W_dec.norm(dim=-1).T.unsqueeze(0)
        strict_cov = coverage(writes, masks, writes & writes_mostly(amounts))
        strict = index_consistency(strict_cov, best[tids], match[:, tids], match_cos)
        res["timing_one_index_strict"] = float(strict["one_index"].float().mean())
        groups = latents if latents.ndim == 3 else rearrange(latents, "row latent -> row 1 latent")
        fired = (groups[:, :, best[tids]] > 0).float()  # (row, group, timing feature)
        counts = masks.sum(dim=1).float().clamp_min(1)  # (row kind, timing feature)
        rates = (einsum(masks.float(), fired, "kind row feature, row group feature -> feature kind group")
                 / rearrange(counts, "kind feature -> feature kind 1"))
        per_feature["timing"] = {
            "feature": tids.tolist(),
            "coverage": ic["best_coverage"].tolist(),  # (T, 3 row kinds)
            "n_indices": ic["n_indices"].tolist(),
            "group_rates": rates.tolist(),  # (T, 3 row kinds, n_groups)
        }
    res["per_kind"] = per_kind
    res["per_feature"] = per_feature
    return res
