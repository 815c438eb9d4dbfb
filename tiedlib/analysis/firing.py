"""The numbers Experiment 1 plots: firing counts and ratios, held-out metrics, corner selection, decoder cosines, AUROC.

Every function that runs a crosscoder takes an *iterator of activation batches*, so memory stays flat however large
the sample. A batch is one of

* a ``(n_tokens, 2, d_model)`` tensor (every row counted),
* a ``(acts, keep)`` pair with a boolean ``(n_tokens,)`` mask of the rows to count,
* a :class:`tiedlib.activations.HarvestBatch` (rows whose token id is in ``exclude_token_ids`` are dropped).

Activations are *raw* (as harvested) and the crosscoder's own ``cfg.norm_factors`` are applied before encoding
(:meth:`Crosscoder.normalize`); pass ``normalized=True`` for rows that are already scaled. The public code counted
firings with a per-token Python loop, on unnormalised activations, counting padding, and divided by shared counts
that can be zero (REFERENCE.md); everything here is vectorised, normalised, masked and division-safe.

Latent layout: ``n_groups`` is 3 for a tied crosscoder (shared, base, chat, see ``tiedlib.config.GROUP_NAMES``) and 1
for a standard one. Flattened latent columns are ``group * n_latents + index``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tiedlib.config import BASE, BASE_ONLY, CHAT, CHAT_ONLY, SHARED
from tiedlib.crosscoders.crosscoder import Crosscoder

Batch = Any
"""A tensor, an ``(acts, keep)`` pair or a :class:`~tiedlib.activations.HarvestBatch` (see the module docstring)."""


# ---- streaming over batches ---------------------------------------------------------------------------------------
def _unpack(item: Batch, exclude: Tensor) -> tuple[Tensor, Tensor | None]:
    if isinstance(item, Tensor):
        return item, None
    if hasattr(item, "acts") and hasattr(item, "token_ids"):
        keep = ~torch.isin(item.token_ids, exclude) if exclude.numel() else None
        return item.acts, keep
    if isinstance(item, (tuple, list)) and len(item) == 2:
        acts, keep = item
        keep = torch.as_tensor(keep, dtype=torch.bool)
        if keep.shape != acts.shape[:1]:
            raise ValueError(f"mask of shape {tuple(keep.shape)} does not match {acts.shape[0]} activation rows")
        return acts, keep
    raise TypeError(f"expected a tensor, an (acts, keep) pair or a HarvestBatch, got {type(item).__name__}")


def iter_normalized(
    model: Crosscoder,
    batches: Iterable[Batch],
    *,
    exclude_token_ids: Iterable[int] = (),
    normalized: bool = False,
    chunk_size: int = 2048,
) -> Iterator[Float[Tensor, "chunk n_models d_model"]]:
    """Yield the kept rows of ``batches`` in chunks of at most ``chunk_size``, scaled as ``model`` expects, on its
    device, float32."""
    device = model.W_dec.device
    exclude = torch.tensor(sorted({int(t) for t in exclude_token_ids}), dtype=torch.long)
    for item in batches:
        acts, keep = _unpack(item, exclude)
        if acts.ndim != 3 or acts.shape[1] != 2 or acts.shape[2] != model.cfg.d_model:
            raise ValueError(
                f"expected activations of shape (n_tokens, 2, {model.cfg.d_model}) = (n_tokens, n_models, d_model), "
                f"got {tuple(acts.shape)}"
            )
        if keep is not None:
            acts = acts[keep.to(acts.device)]
        for start in range(0, acts.shape[0], chunk_size):
            x = acts[start : start + chunk_size].to(device=device, dtype=torch.float32)
            yield x if normalized else model.normalize(x)


def _flat_latents(model: Crosscoder, x: Tensor) -> Float[Tensor, "chunk n_groups_x_n_latents"]:
    return model.encode(x).reshape(x.shape[0], -1)


def _fired_per_column(
    x: Float[Tensor, "chunk n_models d_model"],
    W_enc: Float[Tensor, "n_models_x_d_model n_groups_x_n_latents"],
    b_enc: Float[Tensor, " n_groups_x_n_latents"],
    threshold: float,
) -> Int[Tensor, " n_groups_x_n_latents"]:
    """Rows of ``x`` on which ``ReLU(x W_enc + b_enc) > threshold``, per flattened latent, for ``threshold >= 0``.

    For ``t >= 0``, ``ReLU(p) > t`` exactly when ``p > t``, so no ReLU output is materialised: the encoder product is
    compared in place. At ``t = 0`` it is compared with ``-b_enc`` (no bias pass): in IEEE round-to-nearest the sign
    of ``fl(a + b)`` is the sign of the exact ``a + b``, so ``a > -b`` decides exactly what ``fl(a + b) > 0`` does.
    The 0/1 floats are summed per column in float32 (exact below 2**24 rows) or float64 beyond.
    """
    p = x.reshape(x.shape[0], -1).to(W_enc.dtype) @ W_enc
    fired = p.gt_(-b_enc) if threshold == 0 else p.add_(b_enc).gt_(threshold)
    return fired.sum(dim=0, dtype=torch.float32 if x.shape[0] < 2**24 else torch.float64).long()


class FiringCounts(NamedTuple):
    """How often each latent fired over a sample."""

    counts: Int[Tensor, "n_groups n_latents"]
    """Tokens on which each latent was > ``threshold`` (int64, CPU)."""
    n_tokens: int
    """Tokens counted (after masking)."""

    @property
    def frequency(self) -> Float[Tensor, "n_groups n_latents"]:
        """Fraction of counted tokens on which each latent fired (0 everywhere for an empty sample)."""
        return self.counts.double() / max(self.n_tokens, 1)

    @property
    def dead(self) -> Int[Tensor, " n_groups"]:
        """Latents per group that never fired."""
        return (self.counts == 0).sum(dim=1)


@torch.no_grad()
def firing_counts(
    model: Crosscoder,
    batches: Iterable[Batch],
    *,
    exclude_token_ids: Iterable[int] = (),
    normalized: bool = False,
    threshold: float = 0.0,
    chunk_size: int = 2048,
) -> FiringCounts:
    """Count, per latent and group, the tokens on which it fires (activation > ``threshold``).

    Vectorised: one encoder product per chunk of ``chunk_size`` rows, so memory is ``chunk_size x n_groups x
    n_latents`` floats whatever the sample size. For a ReLU crosscoder and ``threshold >= 0`` the firings are counted
    on the pre-activations in place (no ReLU output); BatchTopK crosscoders and negative thresholds go through
    ``encode``.

    Args:
        model: a standard or tied crosscoder (put it in eval mode first if it is a BatchTopK one).
        batches: iterator of activation batches (see the module docstring); raw unless ``normalized``.
        exclude_token_ids: token ids never counted (BOS, padding, chat-template tokens) for HarvestBatch input.
        normalized: the rows are already scaled by the crosscoder's normalisation factors.
        threshold: a latent fires where its activation exceeds this.
        chunk_size: rows per encoder call.

    Returns:
        :class:`FiringCounts` with ``counts`` of shape ``(n_groups, n_latents)``.
    """
    n_groups, n = model.cfg.n_groups, model.cfg.n_latents
    counts = torch.zeros(n_groups * n, dtype=torch.long, device=model.W_dec.device)
    # ReLU crosscoders: count on the encoder product itself (see _fired_per_column); BatchTopK (whose kept set
    # depends on the whole batch and the decoder norms) and negative thresholds (where ReLU's zeros count) encode.
    raw_product = model.cfg.activation == "relu" and threshold >= 0
    W_enc, b_enc = model.W_enc.reshape(2 * model.cfg.d_model, -1), model.b_enc.reshape(-1)
    total = 0
    for x in iter_normalized(model, batches, exclude_token_ids=exclude_token_ids, normalized=normalized,
                             chunk_size=chunk_size):  # fmt: skip
        if raw_product:
            counts += _fired_per_column(x, W_enc, b_enc, threshold)
        else:
            counts += (_flat_latents(model, x) > threshold).sum(dim=0)
        total += x.shape[0]
    return FiringCounts(counts.reshape(n_groups, n).cpu(), total)


@dataclass
class HeldOutMetrics:
    """Metrics of a crosscoder on a held-out sample."""

    explained_variance: Float[Tensor, " n_models"]
    """``1 - SSE / SST`` per model (base, chat), sums over the whole sample."""
    l0: Float[Tensor, " n_groups"]
    """Mean number of firing latents per token, per group."""
    firing: FiringCounts

    @property
    def dead(self) -> Int[Tensor, " n_groups"]:
        return self.firing.dead

    def as_dict(self, group_names: Sequence[str] = ("shared", "base", "chat")) -> dict[str, float]:
        """Flat ``{name: value}`` (``explained_variance_base``, ``l0_shared``, ``dead_chat``, ...)."""
        names = list(group_names) if self.l0.numel() > 1 else ["all"]
        out = {"explained_variance_base": float(self.explained_variance[BASE]),
               "explained_variance_chat": float(self.explained_variance[CHAT])}  # fmt: skip
        out.update({f"l0_{g}": float(v) for g, v in zip(names, self.l0, strict=False)})
        out.update({f"dead_{g}": int(v) for g, v in zip(names, self.dead, strict=False)})
        out["n_tokens"] = self.firing.n_tokens
        return out


@torch.no_grad()
def evaluate(
    model: Crosscoder,
    batches: Iterable[Batch],
    *,
    exclude_token_ids: Iterable[int] = (),
    normalized: bool = False,
    chunk_size: int = 2048,
) -> HeldOutMetrics:
    """Explained variance per model, L0 and dead latents per group, and firing counts, in one streaming pass.

    The total variance is accumulated as ``sum x^2 - n mean^2`` in float64, so the result equals the whole-sample
    ratio of sums however the sample is chunked (measured in normalised units).
    """
    n_groups, n = model.cfg.n_groups, model.cfg.n_latents
    dev = model.W_dec.device
    counts = torch.zeros(n_groups * n, dtype=torch.long, device=dev)
    sse = torch.zeros(2, dtype=torch.float64, device=dev)
    s1 = torch.zeros(2, model.cfg.d_model, dtype=torch.float64, device=dev)
    s2 = torch.zeros(2, dtype=torch.float64, device=dev)
    total = 0
    for x in iter_normalized(model, batches, exclude_token_ids=exclude_token_ids, normalized=normalized,
                             chunk_size=chunk_size):  # fmt: skip
        f = model.encode(x)
        sse += (model.decode(f) - x).double().pow(2).sum(dim=(0, 2))
        xd = x.double()
        s1 += xd.sum(dim=0)
        s2 += xd.pow(2).sum(dim=(0, 2))
        counts += (f.reshape(x.shape[0], -1) > 0).sum(dim=0)
        total += x.shape[0]
    if total == 0:
        raise ValueError("no tokens to evaluate on (empty sample or everything masked)")
    sst = s2 - s1.pow(2).sum(dim=1) / total
    firing = FiringCounts(counts.reshape(n_groups, n).cpu(), total)
    ev = (1 - sse / sst.clamp_min(1e-30)).float().cpu()
    return HeldOutMetrics(explained_variance=ev, l0=firing.counts.sum(dim=1).double() / total, firing=firing)


# ---- firing-count ratios (Figure 2) ---------------------------------------------------------------------------------
class FiringRatios(NamedTuple):
    """Per-index ratios of a tied crosscoder's firing counts. Never divides by zero.

    Where the shared count is 0 a ratio is ``inf`` (exclusive firings, no shared ones) or ``nan`` (none at all);
    ``zero_shared`` flags those indices so callers can report them instead of plotting them.
    """

    base_over_shared: Float[Tensor, " n_latents"]
    chat_over_shared: Float[Tensor, " n_latents"]
    frequency: Float[Tensor, " n_latents"]
    """Firings of the triple (shared + base + chat counts) per counted token."""
    kept: Bool[Tensor, " n_latents"]
    """``frequency >= min_frequency`` (the write-up drops triples firing on under 0.05% of tokens)."""
    zero_shared: Bool[Tensor, " n_latents"]

    @property
    def finite(self) -> Bool[Tensor, " n_latents"]:
        """Kept indices whose two ratios are finite (what the scatter plots)."""
        return self.kept & ~self.zero_shared


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    num, den = num.double(), den.double()
    undefined = torch.where(num > 0, torch.full_like(num, float("inf")), torch.full_like(num, float("nan")))
    return torch.where(den > 0, num / den.clamp_min(1), undefined)


def firing_ratios(firing: FiringCounts, *, min_frequency: float = 5e-4) -> FiringRatios:
    """base/shared and chat/shared firing-count ratios of each tied index (the write-up's Figure 2).

    Args:
        firing: counts of a tied crosscoder, ``counts`` of shape ``(3, n_latents)``.
        min_frequency: drop indices whose three groups together fire on fewer than this fraction of tokens
            (the sum of the three counts over ``n_tokens``; write-up: 0.05%).
    """
    if firing.counts.shape[0] != 3:
        shape = tuple(firing.counts.shape)
        raise ValueError(f"firing ratios need a tied crosscoder's (3, n_latents) counts, got {shape}")
    c = firing.counts
    frequency = c.sum(dim=0).double() / max(firing.n_tokens, 1)
    return FiringRatios(
        base_over_shared=_safe_ratio(c[BASE_ONLY], c[SHARED]),
        chat_over_shared=_safe_ratio(c[CHAT_ONLY], c[SHARED]),
        frequency=frequency,
        kept=frequency >= min_frequency,
        zero_shared=c[SHARED] == 0,
    )


class Corners(NamedTuple):
    top_left: Int[Tensor, " k"]
    """Indices with the largest ``chat/shared - base/shared`` (chat-side novelty), best first."""
    bottom_right: Int[Tensor, " k"]
    """Indices with the largest ``base/shared - chat/shared``, best first."""


def select_corners(ratios: FiringRatios, k: int = 10) -> Corners:
    """The ``k`` most top-left and bottom-right indices of the ratio scatter, among kept indices with finite ratios.

    Indices with zero shared firings are left out (see ``ratios.zero_shared``): their ratios are not numbers.
    """
    idx = ratios.finite.nonzero().squeeze(1)
    score = (ratios.chat_over_shared - ratios.base_over_shared)[idx]
    k = min(k, idx.numel())
    return Corners(idx[score.argsort(descending=True, stable=True)[:k]], idx[score.argsort(stable=True)[:k]])


# ---- decoder geometry (the write-up's standard-crosscoder baseline) -------------------------------------------------
def exclusive_latents(model: Crosscoder, side: str = "chat", threshold: float = 0.7) -> Int[Tensor, " k"]:
    """Indices with relative decoder norm ``> threshold`` (``side="chat"``) or ``< 1 - threshold`` (``"base"``)."""
    from tiedlib.analysis.cosines import exclusivity_categories

    if side not in ("chat", "base"):
        raise ValueError(f"side must be 'chat' or 'base', got {side!r}")
    cats = exclusivity_categories(model.relative_decoder_norm().cpu(), low=1 - threshold, high=threshold)
    return cats.chat_exclusive if side == "chat" else cats.base_exclusive


@torch.no_grad()
def decoder_cosine_neighbours(
    W_dec: Float[Tensor, "n_latents n_models d_model"],
    latent: int,
    k: int = 5,
    *,
    query_model: int = CHAT,
    key_model: int = BASE,
    exclude_self: bool = True,
) -> tuple[Int[Tensor, " k"], Float[Tensor, " k"]]:
    """The ``k`` latents whose ``key_model`` decoder vectors have the largest cosine with ``latent``'s
    ``query_model`` decoder vector (default: base vectors closest to a chat vector), best first.

    Returns:
        ``(indices, cosines)``, each of shape ``(k,)``.
    """
    q = torch.nn.functional.normalize(W_dec[latent, query_model].float(), dim=-1)
    keys = torch.nn.functional.normalize(W_dec[:, key_model].float(), dim=-1)
    cos = keys @ q
    if exclude_self:
        cos[latent] = -float("inf")
    values, indices = cos.topk(min(k, cos.numel() - int(exclude_self)))
    return indices.cpu(), values.cpu()


# ---- ground truth: AUROC of latents against token labels -------------------------------------------------------------
def _average_ranks(s: Float[Tensor, "n cols"]) -> Float[Tensor, "n cols"]:
    """Ranks 1..n of each column (float64), ties sharing their average rank."""
    n, cols = s.shape
    sorted_vals, order = s.sort(dim=0, stable=True)
    new = torch.ones_like(sorted_vals, dtype=torch.bool)
    new[1:] = sorted_vals[1:] != sorted_vals[:-1]
    group = new.long().cumsum(dim=0) - 1
    pos = torch.arange(1, n + 1, dtype=torch.float64).unsqueeze(1).expand(n, cols)
    first = torch.full((n, cols), float(n + 1), dtype=torch.float64).scatter_reduce(0, group, pos, "amin")
    last = torch.zeros((n, cols), dtype=torch.float64).scatter_reduce(0, group, pos, "amax")
    avg = (first.gather(0, group) + last.gather(0, group)) / 2
    return torch.empty_like(avg).scatter_(0, order, avg)


@torch.no_grad()
def auroc(
    scores: Float[Tensor, "n_tokens n_latents"],
    labels: Bool[Tensor, "n_tokens n_concepts"],
    *,
    max_elements: int = 2**23,
) -> Float[Tensor, "n_concepts n_latents"]:
    """Area under the ROC curve of every latent (column of ``scores``) as a detector of every concept.

    Mann-Whitney form with tied scores sharing their average rank (so it equals ``sklearn.metrics.roc_auc_score``):
    ``(sum of positive ranks - P(P+1)/2) / (P N)``. Columns are processed ``max_elements // n_tokens`` at a time.
    A concept with no positive or no negative token gets ``nan``.
    """
    if scores.ndim != 2 or labels.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must be (n_tokens, *) each")
    n = scores.shape[0]
    y = labels.to(torch.float64).cpu()
    n_pos = y.sum(dim=0)
    n_neg = n - n_pos
    out = torch.empty(labels.shape[1], scores.shape[1], dtype=torch.float64)
    step = max(1, max_elements // max(n, 1))
    for start in range(0, scores.shape[1], step):
        ranks = _average_ranks(scores[:, start : start + step].detach().double().cpu())
        u = y.T @ ranks - (n_pos * (n_pos + 1) / 2).unsqueeze(1)
        out[:, start : start + step] = u / (n_pos * n_neg).unsqueeze(1)
    out[(n_pos == 0) | (n_neg == 0)] = float("nan")
    return out.float()


def best_per_group(
    auc: Float[Tensor, "n_concepts n_latents_total"], n_groups: int
) -> tuple[Float[Tensor, "n_concepts n_groups"], Int[Tensor, "n_concepts n_groups"]]:
    """For each concept and group, the best AUROC and the index (within the group) of the latent that reaches it."""
    grouped = torch.nan_to_num(auc, nan=-1.0).reshape(auc.shape[0], n_groups, -1)
    values, indices = grouped.max(dim=2)
    values = torch.where(values < 0, torch.full_like(values, float("nan")), values)
    return values, indices


def best_joint(*aurocs: Float[Tensor, " n_latents"]) -> tuple[int, float]:
    """The index whose *worst* AUROC across the given per-index vectors is highest, and that AUROC.

    E.g. ``best_joint(chat_group_on_chat_refusals, base_group_on_web_refusals)`` finds the triple whose chat part
    detects chat refusals and whose base part detects web refusals (the write-up's Figure 3).
    """
    worst = torch.stack([torch.nan_to_num(a.double(), nan=0.0) for a in aurocs]).min(dim=0).values
    i = int(worst.argmax())
    return i, float(worst[i])


@torch.no_grad()
def firing_fractions(crosscoder: Any, acts: Float[Tensor, "n 2 d_model"], *, batch_size: int = 4096) -> Tensor:
    """Fraction of rows on which each latent fires: ``(n_latents,)`` for a standard crosscoder, ``(3, n_latents)``
    (shared, base, chat) for a tied one. ``acts`` must be in the crosscoder's (normalised) units."""
    from tiedlib.analysis.firing import firing_counts

    if acts.shape[0] == 0:
        raise ValueError("no activations given")
    frequency = firing_counts(crosscoder, [acts], normalized=True, chunk_size=batch_size).frequency.float()
    return frequency[0] if crosscoder.cfg.n_groups == 1 else frequency
