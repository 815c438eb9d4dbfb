"""The eta sweep of issue 8 ("does the tied crosscoder tie?") on the synthetic benchmark of :mod:`tiedlib.synthetic`.

:func:`run_tying_benchmark` trains the standard crosscoder, the write-up's tied crosscoder and the variants of
:mod:`tiedlib.crosscoders.variants` on one synthetic data set and returns one plain dict row per (variant, eta, seed).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tiedlib.activations.batches import InMemoryBatches
from tiedlib.config import CrosscoderConfig, TrainConfig
from tiedlib.crosscoders.crosscoder import Crosscoder, make_crosscoder
from tiedlib.synthetic.benchmark import ETAS, SyntheticConfig, SyntheticData, evaluate_crosscoder, make_synthetic
from tiedlib.training import train


# ---- the eta sweep ---------------------------------------------------------------------------------------------------
@dataclass
class BenchmarkSize:
    """Data, dictionary and optimisation sizes of one :func:`run_tying_benchmark` scale."""

    synthetic: SyntheticConfig
    n_latents: int
    """Latents of the standard crosscoder = latent triples of the tied one (the write-up's comparison)."""
    n_steps: int
    batch_size: int = 512
    lr: float = 3e-3
    l1_coeff: float = 0.5
    n_eval: int = 8192


BENCHMARK_SIZES: dict[str, BenchmarkSize] = {
    "small": BenchmarkSize(SyntheticConfig(), n_latents=160, n_steps=600),
    "book": BenchmarkSize(
        SyntheticConfig(
            d_model=64, n_shared=80, n_timing=48, n_direction=32, n_base_only=32, n_chat_only=32, n_rows=65536
        ),
        n_latents=320,
        n_steps=2000,
        n_eval=16384,
    ),
}
"""``small``: notebooks and the benchmark script (the 25-model sweep takes about 2 minutes of one core).
``book``: the book's figures (about 15x the compute of ``small`` per model)."""

VARIANTS: dict[str, dict[str, Any]] = {
    "standard": {"crosscoder": {"architecture": "standard"}, "eta": False},
    "standard_designated": {"crosscoder": {"architecture": "standard", "n_designated_shared": 0.125}, "eta": False},
    "standard_batchtopk": {"crosscoder": {"architecture": "standard", "activation": "batchtopk"}, "eta": False},
    "tied": {"crosscoder": {"architecture": "tied"}, "eta": True},
    "tied_equal": {"crosscoder": {"architecture": "tied", "decoder_norm": "equal"}, "eta": True},
    "tied_unit": {"crosscoder": {"architecture": "tied", "decoder_norm": "unit"}, "eta": True},
    "tied_max": {"crosscoder": {"architecture": "tied", "shared_penalty": "max"}, "eta": True},
    "tied_batchtopk": {"crosscoder": {"architecture": "tied", "activation": "batchtopk"}, "eta": False},
    "tied_unit_batchtopk": {
        "crosscoder": {"architecture": "tied", "activation": "batchtopk", "decoder_norm": "unit"},
        "eta": False,
    },
}
"""Variant name -> crosscoder overrides and whether eta is swept. ``n_designated_shared`` is a fraction of the latents
here; BatchTopK variants train with l1_coeff = 0 and k = the data's true L0 (eta then plays no part)."""

TABLE_COLUMNS = (
    "variant", "eta", "explained_variance_base", "explained_variance_chat", "l0", "l0_shared", "l0_base", "l0_chat",
    "dead_frac", "recovery_shared", "recovery_timing", "recovery_direction", "recovery_base_only", "recovery_chat_only",
    "exclusive_usage", "one_sided_frac", "timing_consistency", "timing_one_index", "timing_n_indices", "seconds",
)  # fmt: skip


def train_variant(
    name: str,
    data: SyntheticData,
    size: BenchmarkSize,
    *,
    eta: float = 2.0,
    seed: int = 0,
) -> Crosscoder:
    """Train one variant of :data:`VARIANTS` on ``data.x`` with :func:`tiedlib.train` and :class:`InMemoryBatches`."""
    spec = VARIANTS[name]
    overrides = dict(spec["crosscoder"])
    if "n_designated_shared" in overrides:
        overrides["n_designated_shared"] = max(1, int(overrides["n_designated_shared"] * size.n_latents))
    l1_coeff = size.l1_coeff
    if overrides.get("activation") == "batchtopk":
        overrides["k"] = data.true_l0
        l1_coeff = 0.0
    cfg = CrosscoderConfig(d_model=data.cfg.d_model, n_latents=size.n_latents, eta=eta, **overrides)
    torch.manual_seed(seed)
    model = make_crosscoder(cfg)
    tcfg = TrainConfig(n_steps=size.n_steps, lr=size.lr, l1_coeff=l1_coeff, seed=seed, progress=False,
                       log_every=size.n_steps)  # fmt: skip
    rows = InMemoryBatches(data.x, size.batch_size, seed=seed, epochs=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="InMemoryBatches: starting epoch")
        return train(tcfg, model, rows)


def run_tying_benchmark(
    size: str | BenchmarkSize = "small",
    *,
    etas: Sequence[float] = ETAS,
    variants: Sequence[str] | None = None,
    seed: int = 0,
    n_threads: int | None = 1,
    log: Callable[[dict[str, Any]], Any] | None = None,
    keep_models: bool = False,
) -> list[dict[str, Any]]:
    """Train every variant (tied ones at every eta) on one synthetic dataset and evaluate it on held-out rows.

    Args:
        size: a key of :data:`BENCHMARK_SIZES` or a :class:`BenchmarkSize`.
        etas: the eta values swept for the variants that use eta.
        variants: names from :data:`VARIANTS` (default: all).
        seed: seeds the dictionary, the rows and the training.
        n_threads: torch threads during the run (restored after); None leaves it alone.
        log: called with each finished row.
        keep_models: put the trained model under the key ``"model"`` of each row.

    Returns:
        One dict per trained model: ``variant``, ``eta`` (None where eta plays no part), ``seconds`` and every key of
        :func:`evaluate_crosscoder` (scalars, ``per_kind``, ``per_feature``). :func:`format_table` prints them.
    """
    bs = BENCHMARK_SIZES[size] if isinstance(size, str) else size
    names = list(VARIANTS) if variants is None else list(variants)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    syn = SyntheticConfig.from_dict({**bs.synthetic.to_dict(), "seed": seed})
    data = make_synthetic(syn)
    held_out = make_synthetic(syn, n_rows=bs.n_eval, row_seed=seed + 1_000_003)
    old_threads = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    rows: list[dict[str, Any]] = []
    try:
        for name in names:
            for eta in etas if VARIANTS[name]["eta"] else (None,):
                start = time.perf_counter()
                model = train_variant(name, data, bs, eta=2.0 if eta is None else eta, seed=seed)
                row: dict[str, Any] = {"variant": name, "eta": eta, "seconds": time.perf_counter() - start}
                row.update(evaluate_crosscoder(model, held_out))
                if keep_models:
                    row["model"] = model
                rows.append(row)
                if log is not None:
                    log(row)
    finally:
        torch.set_num_threads(old_threads)
    return rows


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A fixed-width text table of the scalar columns of :func:`run_tying_benchmark` rows (missing: blank)."""
    short = {"explained_variance_base": "ev_base", "explained_variance_chat": "ev_chat", "recovery_base_only": "rec_bo",
             "recovery_chat_only": "rec_co", "recovery_shared": "rec_sh", "recovery_timing": "rec_ti",
             "recovery_direction": "rec_di", "timing_consistency": "t_cons", "timing_one_index": "t_one",
             "timing_n_indices": "t_nidx", "one_sided_frac": "1sided", "exclusive_usage": "excl_use"}  # fmt: skip
    header = [short.get(c, c) for c in columns]

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def aggregate_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str] = ("variant", "eta")) -> list[dict[str, Any]]:
    """Mean and standard deviation over rows that share ``keys`` (e.g. several seeds of one sweep).

    Every float column ``c`` that all rows of a group have becomes ``c`` (the mean) and ``c_std`` (0 for a single
    row); ``n`` counts the rows.
    Groups keep the order in which they first appear.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for key, members in groups.items():
        agg: dict[str, Any] = dict(zip(keys, key, strict=True))
        agg["n"] = len(members)
        cols = [
            c for c, v in members[0].items() if isinstance(v, float) and c not in keys and all(c in m for m in members)
        ]
        for c in cols:
            vals = torch.tensor([float(m[c]) for m in members], dtype=torch.float64)
            agg[c] = float(vals.mean())
            agg[f"{c}_std"] = float(vals.std()) if len(members) > 1 else 0.0
        out.append(agg)
    return out


