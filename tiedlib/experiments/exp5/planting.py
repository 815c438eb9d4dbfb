"""Issue 16's positive control, part 1: where, how strongly and along what the concept is planted.

:func:`planted_sets` (position sets A and B and a magnitude per position), :func:`planted_direction` (a seeded unit
``d``), :func:`inject` (``d`` added to the base half at A and the chat half at B), :func:`control_data` (all three on
normalised rows: :class:`ControlData`) and :func:`pair_control_rows` (a pair's harvested, normalised rows).
:mod:`.positive_control` trains and measures the crosscoders on them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib.activations.batches import InMemoryBatches
from tiedlib.activations.collect import collect_activations
from tiedlib.config import BASE, CHAT
from tiedlib.experiments.exp5.presets import ControlSettings
from tiedlib.pairs import ModelPair, training_sequences

SETS = ("A only", "B only", "A & B", "neither")
"""The four disjoint position sets: A \\ B (``d`` in base only), B \\ A (chat only), both, and none."""


# ---- the planted concept -------------------------------------------------------------------------------------------
@dataclass
class PlantedSets:
    """Where ``d`` is added: to the base model at A, to the chat model at B, with one magnitude per position."""

    a: Bool[Tensor, " n_tokens"]
    b: Bool[Tensor, " n_tokens"]
    magnitude: Float[Tensor, " n_tokens"]
    """The coefficient of ``d`` at each position of A | B (the same in both models where both get it); 0 elsewhere."""

    def masks(self) -> dict[str, Bool[Tensor, " n_tokens"]]:
        """:data:`SETS` -> mask: A \\ B, B \\ A, A & B, neither."""
        a, b = self.a, self.b
        return {"A only": a & ~b, "B only": b & ~a, "A & B": a & b, "neither": ~(a | b)}

    def sizes(self) -> dict[str, int | float]:
        """Sizes of A, B, the four disjoint sets and ``overlap`` = \\|A & B\\| / \\|A\\|."""
        out: dict[str, int | float] = {"tokens": int(self.a.numel()), "A": int(self.a.sum()), "B": int(self.b.sum())}
        out.update({name: int(m.sum()) for name, m in self.masks().items()})
        out["overlap"] = out["A & B"] / max(1, out["A"])
        return out


def planted_sets(n_tokens: int, *, rate: float, overlap: float, scale: float, spread: float,
                 seed: int = 0) -> PlantedSets:  # fmt: skip
    """Two random position sets of ``round(rate * n_tokens)`` positions each sharing ``round(overlap * |A|)``.

    Magnitudes are ``scale * U(1 - spread, 1 + spread)`` per position of A | B (``scale`` in the rows' units: pass a
    multiple of their mean norm). Seeded by ``seed`` alone (its own generator).

    Raises:
        ValueError: ``rate`` outside (0, 0.5], ``overlap`` outside [0, 1], ``spread`` outside [0, 1), ``scale`` <= 0,
            or sets too small to hold at least one position in each of A \\ B, B \\ A and A & B.
    """
    if not 0 < rate <= 0.5 or not 0 <= overlap <= 1 or not 0 <= spread < 1 or scale <= 0:
        raise ValueError(f"need 0 < rate <= 0.5, 0 <= overlap <= 1, 0 <= spread < 1 and scale > 0; got rate {rate}, "
                         f"overlap {overlap}, spread {spread}, scale {scale}")  # fmt: skip
    n = round(rate * n_tokens)
    n_both = round(overlap * n)
    if min(n_both, n - n_both) < 1:
        raise ValueError(f"{n_tokens} tokens at rate {rate} and overlap {overlap} give |A| = {n} with {n_both} in "
                         f"A & B: need at least one position in each of A \\ B, B \\ A and A & B")  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_tokens, generator=gen)
    a = torch.zeros(n_tokens, dtype=torch.bool)
    b = torch.zeros(n_tokens, dtype=torch.bool)
    a[perm[:n]] = True
    b[perm[n - n_both : 2 * n - n_both]] = True  # the last n_both of A, then n - n_both fresh positions
    u = torch.rand(n_tokens, generator=gen) * 2 - 1
    magnitude = torch.where(a | b, scale * (1 + spread * u), torch.zeros(()))
    return PlantedSets(a=a, b=b, magnitude=magnitude)


def planted_direction(rows: Float[Tensor, "n_tokens 2 d_model"], *, avoid_top: int = 8,
                      seed: int = 0) -> Float[Tensor, " d_model"]:  # fmt: skip
    """A seeded random unit direction orthogonal to the top ``avoid_top`` principal directions of ``rows`` (both
    models' rows pooled, at most 8192 of them), so that ``d`` is not one of the data's dominant directions."""
    d_model = rows.shape[-1]
    if not 0 <= avoid_top < d_model:
        raise ValueError(f"avoid_top must be in [0, d_model={d_model}), got {avoid_top}")
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(d_model, generator=gen, dtype=torch.float64)
    if avoid_top:
        pooled = rows.detach().reshape(-1, d_model).double().cpu()
        pooled = pooled[torch.randperm(pooled.shape[0], generator=gen)[:8192]]
        top = torch.linalg.svd(pooled - pooled.mean(0), full_matrices=False).Vh[:avoid_top]  # (avoid_top, d_model)
        d = d - top.T @ (top @ d)
    return (d / d.norm()).to(rows.dtype)


def inject(rows: Float[Tensor, "n_tokens 2 d_model"], planted: PlantedSets,
           direction: Float[Tensor, " d_model"]) -> Float[Tensor, "n_tokens 2 d_model"]:  # fmt: skip
    """A copy of ``rows`` with ``magnitude * direction`` added to the base half at A and the chat half at B."""
    if planted.a.numel() != rows.shape[0]:
        raise ValueError(f"planted sets cover {planted.a.numel()} tokens, rows have {rows.shape[0]}")
    out = rows.clone()
    add = planted.magnitude.to(rows)[:, None] * direction.to(rows)[None, :]  # (n_tokens, d_model)
    out[:, BASE] += add * planted.a.to(rows)[:, None]
    out[:, CHAT] += add * planted.b.to(rows)[:, None]
    return out


@dataclass
class ControlData:
    """Normalised rows with the concept planted, and where and how it was planted."""

    rows: Float[Tensor, "n_tokens 2 d_model"]
    planted: PlantedSets
    direction: Float[Tensor, " d_model"]
    norm_factors: Tensor | None
    """The harvest's ``(2,)`` normalisation factors (recorded in the crosscoders' configs)."""
    mean_norm: float
    """Mean row norm before planting (the unit of ``scale``)."""
    source: str | None = None
    """The :attr:`~tiedlib.pairs.ModelPair.fingerprint` of the pair the rows were harvested from, recorded and
    checked in the crosscoders' run folders (None: synthetic rows, or not checked)."""

    def make_data(self, batch_size: int, *, seed: int = 0) -> Callable[[], Iterator[Tensor]]:
        """A ``make_data()`` for :func:`train_or_load`: shuffled rows, epochs repeated as training asks."""

        def make() -> Iterator[Tensor]:
            warnings.filterwarnings("ignore", message="InMemoryBatches: starting epoch")
            return InMemoryBatches(self.rows, min(batch_size, self.rows.shape[0]), seed=seed, epochs=None,
                                   norm_factors=self.norm_factors)  # fmt: skip

        return make

    def summary(self) -> str:
        s = self.planted.sizes()
        mag = self.planted.magnitude[self.planted.a | self.planted.b]
        return (f"{s['tokens']} tokens, d_model {self.rows.shape[-1]}: |A| = {s['A']} (d in base), |B| = {s['B']} "
                f"(d in chat), |A & B| = {s['A & B']} (overlap {s['overlap']:.2f} of A), |A only| = {s['A only']}, "
                f"|B only| = {s['B only']}; magnitude {float(mag.min()):.2f} to {float(mag.max()):.2f} "
                f"(mean row norm {self.mean_norm:.2f})")  # fmt: skip


def control_data(rows: Float[Tensor, "n_tokens 2 d_model"], cs: ControlSettings,
                 norm_factors: Tensor | None = None, *, source: str | None = None) -> ControlData:  # fmt: skip
    """Plant ``d`` in normalised ``rows`` (e.g. ``PairActivations.normalized``) as ``cs`` says: sets of ``cs.rate``
    with ``cs.overlap``, magnitude ``cs.scale`` times the mean row norm (spread ``cs.spread``), ``d`` orthogonal to
    the top ``cs.avoid_top`` principal directions. ``source``: the fingerprint of the pair ``rows`` came from
    (:attr:`ControlData.source`)."""
    mean_norm = float(rows.norm(dim=-1).mean())
    planted = planted_sets(rows.shape[0], rate=cs.rate, overlap=cs.overlap, scale=cs.scale * mean_norm,
                           spread=cs.spread, seed=cs.seed)  # fmt: skip
    direction = planted_direction(rows, avoid_top=cs.avoid_top, seed=cs.seed)
    return ControlData(rows=inject(rows, planted, direction), planted=planted, direction=direction,
                       norm_factors=norm_factors, mean_norm=mean_norm, source=source)  # fmt: skip


def pair_control_rows(pair: ModelPair, cs: ControlSettings, *, seq_len: int = 1024,
                      model_batch_size: int = 32) -> tuple[Float[Tensor, "n_tokens 2 d_model"], Tensor]:  # fmt: skip
    """Harvest ``cs.docs`` training documents of ``pair`` (Experiment 1's mix) in memory; returns the normalised rows
    and the ``(2,)`` normalisation factors (the planting is done per seed by :func:`control_data`)."""
    seqs = training_sequences(pair, cs.docs, seq_len=seq_len)
    acts = collect_activations(pair, seqs, batch_size=model_batch_size, in_memory=True)
    return acts.normalized, acts.norm_factors


__all__ = ["SETS", "ControlData", "PlantedSets", "control_data", "inject", "pair_control_rows", "planted_direction",
           "planted_sets"]  # fmt: skip
