"""Timing versus representation: which of the two differences a tied crosscoder sees between base and chat costs
more reconstruction (the write-up's "Next steps": "(a) base/chat have a different vector representation for the same
concept, (b) base/chat fire the same concept at different times. We can ablate to see which of the two has the
largest impact on loss reconstruction").

A tied triple ``i`` writes ``c_base = f_shared + f_base`` along ``d_base = W_dec[i, base]`` in the base model and
``c_chat = f_shared + f_chat`` along ``d_chat = W_dec[i, chat]`` in the chat model. Three ablations, each of one triple
at a time (and of all selected triples at once):

* ``representation_chat``: the chat decoder row becomes the base row rescaled to the chat row's norm,
  ``d_chat <- ||d_chat|| d_base / ||d_base||``; activations unchanged (only the chat reconstruction moves);
* ``representation_base``: symmetrically ``d_base <- ||d_base|| d_chat / ||d_chat||`` (only the base one moves);
* ``timing``: both models fire the triple alike, ``c_base, c_chat <- (c_base + c_chat) / 2``; decoders unchanged.

The cost is the increase of each model's squared reconstruction error over the rows, divided by that model's total
variance (so a cost is an increase of the fraction of variance unexplained, FVU).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tiedlib.config import BASE, CHAT
from tiedlib.crosscoders.crosscoder import Crosscoder

ABLATIONS = ("representation_chat", "representation_base", "timing")


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def ablation_shifts(W_dec: Float[Tensor, "n_latents n_models d_model"]) -> dict[str, Tensor]:
    """For each representation ablation, the change of each triple's decoder rows, ``(n_latents, n_models, d_model)``
    (zero in the model whose row is kept)."""
    db, dc = W_dec[:, BASE], W_dec[:, CHAT]
    zero = torch.zeros_like(db)
    to_chat = _unit(db) * dc.norm(dim=-1, keepdim=True) - dc
    to_base = _unit(dc) * db.norm(dim=-1, keepdim=True) - db
    return {"representation_chat": torch.stack([zero, to_chat], dim=1),
            "representation_base": torch.stack([to_base, zero], dim=1)}  # fmt: skip


def coefficients(latents: Float[Tensor, "batch 3 n_latents"]) -> Float[Tensor, "batch n_models n_latents"]:
    """What each triple writes along its decoder row in each model: ``(f_shared + f_base, f_shared + f_chat)``."""
    if latents.ndim != 3 or latents.shape[1] != 3:
        raise ValueError(f"expected tied latents of shape (batch, 3, n_latents), got {tuple(latents.shape)}")
    return torch.stack([latents[:, 0] + latents[:, 1], latents[:, 0] + latents[:, 2]], dim=1)


@dataclass
class AblationCosts:
    """Costs of the three ablations, in FVU increase per model."""

    triples: Tensor
    """``(k,)`` indices of the triples ablated."""
    per_triple: dict[str, Tensor]
    """Ablation -> ``(k, n_models)``: FVU increase when that triple alone is ablated."""
    joint: dict[str, Tensor]
    """Ablation -> ``(n_models,)``: FVU increase when all ``triples`` are ablated at once."""
    fvu: Tensor
    """``(n_models,)`` FVU of the unablated reconstruction."""
    n_active: Tensor
    """``(k,)`` rows on which each triple writes into either model."""
    relative_norm: Tensor
    """``(k,)`` ``||d_chat|| / (||d_base|| + ||d_chat||)`` of each triple."""

    def firing(self, min_active: int = 1, *, low: float = 0.0, high: float = 1.0) -> Tensor:
        """``(k,)`` bool: triples active on at least ``min_active`` rows, with relative decoder norm in
        ``[low, high]`` (e.g. the write-up's shared band ``[0.3, 0.7]``: both models hold the concept)."""
        r = self.relative_norm
        return (self.n_active >= min_active) & (r >= low) & (r <= high)

    def summary(self, mask: Tensor | None = None) -> dict[str, float]:
        """Aggregate costs over the triples in ``mask`` (default: all that fire): per ablation the sum of the single
        triple costs over both models (``<ablation>``) and per model (``<ablation>_base``, ``_chat``), the joint
        costs (``joint_<ablation>``: all of :attr:`triples` ablated at once, whatever ``mask``), and
        ``timing_share`` = timing / (timing + representation_chat), also with the base variant
        (``timing_share_base_variant``) and jointly (``joint_timing_share``). ``n_triples`` counts them.
        """
        keep = self.n_active > 0 if mask is None else mask
        out: dict[str, float] = {"n_triples": int(keep.sum()), "fvu_base": float(self.fvu[BASE]),
                                 "fvu_chat": float(self.fvu[CHAT])}  # fmt: skip
        for name, cost in self.per_triple.items():
            c = cost[keep].sum(dim=0)
            out[name], out[f"{name}_base"], out[f"{name}_chat"] = float(c.sum()), float(c[BASE]), float(c[CHAT])
            out[f"joint_{name}"] = float(self.joint[name].sum())
        out["timing_share"] = _share(out["timing"], out["representation_chat"])
        out["timing_share_base_variant"] = _share(out["timing"], out["representation_base"])
        out["joint_timing_share"] = _share(out["joint_timing"], out["joint_representation_chat"])
        return out


def _share(a: float, b: float) -> float:
    return a / (a + b) if a + b > 0 else math.nan


@torch.no_grad()
def ablation_costs_from_coefficients(
    x: Float[Tensor, "batch n_models d_model"],
    x_hat: Float[Tensor, "batch n_models d_model"],
    coeffs: Float[Tensor, "batch n_models n_latents"],
    W_dec: Float[Tensor, "n_latents n_models d_model"],
    triples: Tensor | None = None,
) -> AblationCosts:
    """The three ablations' costs given a reconstruction ``x_hat`` made of ``coeffs @ W_dec`` (plus anything else).

    A single triple's ablation adds ``delta`` to one model's reconstruction; with the error ``e = x_hat - x``, its
    cost is ``sum_rows (2 e . delta + ||delta||^2)`` (expanding ``||e + delta||^2``), computed for all triples at once.

    Args:
        x: target activations; x_hat: the crosscoder's reconstruction of them.
        coeffs: what each triple writes along its decoder row per model (:func:`coefficients`).
        W_dec: the decoder rows.
        triples: indices to ablate (default: all).
    """
    if x.shape != x_hat.shape or x.ndim != 3 or x.shape[1] != 2:
        raise ValueError(f"x and x_hat must share a (batch, 2, d_model) shape, got {tuple(x.shape)}, "
                         f"{tuple(x_hat.shape)}")  # fmt: skip
    if coeffs.shape[:2] != x.shape[:2] or coeffs.shape[2] != W_dec.shape[0] or W_dec.shape[1:] != x.shape[1:]:
        raise ValueError(f"coeffs {tuple(coeffs.shape)} and W_dec {tuple(W_dec.shape)} do not match x "
                         f"{tuple(x.shape)}")  # fmt: skip
    idx = torch.arange(W_dec.shape[0]) if triples is None else torch.as_tensor(triples, dtype=torch.long)
    W = W_dec.detach().float()[idx.to(W_dec.device)]
    return _finish(_sums(x, x_hat, coeffs[:, :, idx.to(coeffs.device)], W), idx, W)


def _sums(x: Tensor, x_hat: Tensor, c: Tensor, W: Tensor) -> dict[str, Tensor]:
    """Sums over the rows of one chunk (so chunks add up): per-triple and joint squared-error increases, squared
    error, first and second moments of ``x``, active counts. ``c``: ``(batch, 2, k)`` coefficients of the ``k``
    triples whose rows are ``W (k, 2, d)``."""
    x, x_hat, c = x.float(), x_hat.float(), c.float()
    e = x_hat - x
    out: dict[str, Tensor] = {}
    # Representation: model m's coefficient c_m times the row shift v_m.
    for name, shift in ablation_shifts(W).items():
        ev = torch.einsum("bmd,kmd->bmk", e, shift)
        out[name] = (2 * (c * ev).sum(0) + c.pow(2).sum(0) * shift.pow(2).sum(-1).T).T
        delta = torch.einsum("bmk,kmd->bmd", c, shift)
        out[f"joint_{name}"] = ((e + delta).pow(2) - e.pow(2)).sum(dim=(0, 2))
    # Timing: both coefficients become their mean, so model m's moves by g_m = mean - c_m along its own row.
    g = c.mean(dim=1, keepdim=True) - c
    ed = torch.einsum("bmd,kmd->bmk", e, W)
    out["timing"] = (2 * (g * ed).sum(0) + g.pow(2).sum(0) * W.pow(2).sum(-1).T).T
    delta = torch.einsum("bmk,kmd->bmd", g, W)
    out["joint_timing"] = ((e + delta).pow(2) - e.pow(2)).sum(dim=(0, 2))
    out["sse"] = e.pow(2).sum(dim=(0, 2))
    out["sum_x"] = x.double().sum(0)
    out["sum_x2"] = x.double().pow(2).sum(dim=(0, 2))
    out["n"] = torch.tensor(float(x.shape[0]), dtype=torch.float64)
    out["n_active"] = (c > 0).any(dim=1).sum(0)
    return {k: v.cpu() for k, v in out.items()}


def _finish(sums: dict[str, Tensor], idx: Tensor, W: Tensor) -> AblationCosts:
    """:class:`AblationCosts` from summed :func:`_sums`, normalised by each model's total variance."""
    var = (sums["sum_x2"] - sums["sum_x"].pow(2).sum(-1) / sums["n"]).float().clamp_min(1e-12)  # (2,)
    norms = W.cpu().norm(dim=-1)
    return AblationCosts(
        triples=idx,
        per_triple={k: sums[k] / var for k in ABLATIONS},
        joint={k: sums[f"joint_{k}"] / var for k in ABLATIONS},
        fvu=sums["sse"] / var,
        n_active=sums["n_active"],
        relative_norm=norms[:, CHAT] / norms.sum(-1).clamp_min(1e-12),
    )


@torch.no_grad()
def ablation_costs(model: Crosscoder, x: Float[Tensor, "batch n_models d_model"] | Iterable[Tensor],
                   triples: Tensor | None = None, *, batch_size: int = 4096) -> AblationCosts:  # fmt: skip
    """:func:`ablation_costs_from_coefficients` for a tied crosscoder on activations in its units (one tensor, or an
    iterable of chunks), encoded and summed ``batch_size`` rows at a time on the model's device (memory does not
    grow with the number of rows).

    Raises:
        ValueError: not a tied crosscoder, or no rows.
    """
    if model.cfg.architecture != "tied":
        raise ValueError(f"the timing/representation ablation needs a tied crosscoder, got {model.cfg.architecture!r}")
    chunks = x.split(batch_size) if isinstance(x, Tensor) else (c for chunk in x for c in chunk.split(batch_size))
    device = model.W_dec.device
    idx = torch.arange(model.cfg.n_latents) if triples is None else torch.as_tensor(triples, dtype=torch.long)
    W = model.W_dec.detach().float()[idx.to(device)]
    total: dict[str, Tensor] = {}
    for chunk in chunks:
        chunk = chunk.to(device)
        f = model.encode(chunk)
        part = _sums(chunk, model.decode(f), coefficients(f)[:, :, idx.to(device)], W)
        total = {k: total[k] + v for k, v in part.items()} if total else part
    if not total:
        raise ValueError("no activations to ablate on")
    return _finish(total, idx, W)
