"""Robustness grid of the tying benchmark (issue 15): does a tied configuration keep timing-shifted concepts on one
index at no cost in explained variance, beyond one synthetic setting?

* :data:`ARCHS`: every architecture of the grid (:class:`ArchSpec`): the standard crosscoder, the write-up's tied
  crosscoder (eta sweep), the tied variants (equal / unit decoder norms, max shared weight, the written-disagreement
  penalty, distinct starts of the exclusive encoder groups, dead-latent resampling, auxiliary-k, BatchTopK), and at
  the tied crosscoder's parameter count the standard crosscoder with designated shared latents (Anthropic, Feb 2025)
  and a Dedicated-Feature-style partition (arXiv 2602.11729).
* :func:`grid_settings`: the settings of a grid scale (``smoke``, ``book``, ``full``): one base setting and one-axis
  changes of superposition, firing probability, direction shift, feature mix, magnitudes and steps.
* :func:`run_grid` trains every (setting, architecture, eta, seed) and returns one row each; :func:`summarize` gives
  per (setting, config) the mean and a 95% interval over seeds of the tied fraction and of the EV gap to the standard
  crosscoder of the same decoder size and seed; :func:`recommend` picks the config that passes in most settings.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from tiedlib.activations.batches import InMemoryBatches
from tiedlib.config import CrosscoderConfig, TrainConfig
from tiedlib.crosscoders.crosscoder import RECOMMENDED_TIED_ETA, Crosscoder, make_crosscoder
from tiedlib.synthetic.benchmark import SyntheticConfig, SyntheticData, evaluate_crosscoder, make_synthetic
from tiedlib.synthetic.dedicated import DedicatedCrosscoder
from tiedlib.synthetic.resample import resample_steps, train_resampling
from tiedlib.training import train

TIED_TARGET = 0.85
"""Issue 15's goal: at least this fraction of timing-shifted concepts on one index ..."""
EV_TOLERANCE = 0.03
"""... with explained variance at most this far below the standard crosscoder of the same decoder size."""
TIED_METRIC = "timing_one_index"
"""The goal's "kept on one index" (issue 15 quotes its figures in it): one index covers at least half of a
concept's joint, base-alone and chat-alone firings, writing into the model(s) that fire."""
STRICT_METRIC = "timing_one_index_strict"
"""Stricter: on one-model firings the index must write at most a quarter as much into the other model
(:func:`~tiedlib.synthetic.benchmark.writes_mostly`); :data:`TIED_METRIC` also credits an index that writes a
one-model firing into both models alike (a standard latent, a tied shared group). Reported next to it."""
METRICS = ("timing_one_index_strict", "timing_one_index", "explained_variance", "ev_gap", "dead_exclusive",
           "exclusive_usage", "l0", "one_sided_frac")  # fmt: skip
"""Per-run metrics kept in :func:`run_grid` rows (``ev_gap`` and ``dead_exclusive`` are added there)."""


@dataclass(frozen=True)
class ArchSpec:
    """One architecture of the grid."""

    crosscoder: dict[str, Any]
    """:class:`CrosscoderConfig` overrides (``n_designated_shared`` as a fraction of the latents)."""
    etas: tuple[float | None, ...] = (None,)
    """eta values to train (None: eta plays no part)."""
    resample: tuple[float, ...] = ()
    """Fractions of the steps after which dead exclusive latents are resampled
    (:func:`~tiedlib.synthetic.resample.resample_dead_exclusive_`, Bricken et al. 2023); empty: never."""
    latent_scale: float = 1.0
    """Latents relative to the setting's ``n_latents`` (2: a standard crosscoder with the tied one's parameter count:
    a tied triple has 3 encoder columns and one decoder pair, 8 d_model parameters; a standard latent 4)."""
    dedicated: tuple[float, float] | None = None
    """Fractions of base-only and chat-only latents of a :class:`DedicatedCrosscoder` (None: not partitioned)."""


AUX_K = 8
"""``aux_k`` of ``tied_written_auxk``: half of the base setting's d_model (Gao et al. 2024 use k_aux = 512 for
residual streams of 768 and wider: a few hundred directions; here the residual has 16 dimensions per model)."""
AUX_DEAD_AFTER = 4096
"""``dead_after_tokens`` of ``tied_written_auxk``: 16 batches of 256 rows (3% of the base setting's 500 steps; Gao
et al.'s 10M tokens is 0.1-1% of their runs)."""

RESAMPLE_AT = (0.2, 0.4, 0.6)
"""Fractions of the steps after which ``*_resample`` resample dead exclusive latents: Bricken et al. 2023 resample at a
few fixed steps early in training; here three, all before the last 20% of steps (the learning-rate decay) so that
revived latents have time to train."""

ARCHS: dict[str, ArchSpec] = {
    "standard": ArchSpec({"architecture": "standard"}),
    "tied": ArchSpec({"architecture": "tied"}, etas=(1.0, 1.25, 2.0)),
    "tied_equal": ArchSpec({"architecture": "tied", "decoder_norm": "equal"}, etas=(1.0, 1.5)),
    "tied_unit": ArchSpec({"architecture": "tied", "decoder_norm": "unit"}, etas=(1.0,)),
    "tied_max": ArchSpec({"architecture": "tied", "shared_penalty": "max"}, etas=(1.5,)),
    "tied_written": ArchSpec({"architecture": "tied", "shared_penalty": "written"}, etas=(1.5,)),
    "tied_contrast": ArchSpec({"architecture": "tied", "group_init": "contrast"}, etas=(1.0,)),
    "tied_written_contrast": ArchSpec({"architecture": "tied", "shared_penalty": "written", "group_init": "contrast"},
                                      etas=(1.5,)),  # fmt: skip
    "tied_one_sided": ArchSpec({"architecture": "tied", "group_init": "one_sided"}, etas=(2.0,)),
    "tied_written_one_sided": ArchSpec({"architecture": "tied", "shared_penalty": "written",
                                        "group_init": "one_sided"}, etas=(1.5,)),  # fmt: skip
    "tied_resample": ArchSpec({"architecture": "tied"}, etas=(2.0,), resample=RESAMPLE_AT),
    "tied_written_resample": ArchSpec({"architecture": "tied", "shared_penalty": "written"}, etas=(1.5,),
                                      resample=RESAMPLE_AT),  # fmt: skip
    "tied_written_auxk": ArchSpec({"architecture": "tied", "shared_penalty": "written", "aux_k": AUX_K,
                                   "dead_after_tokens": AUX_DEAD_AFTER}, etas=(1.5,)),  # fmt: skip
    "tied_auxk": ArchSpec({"architecture": "tied", "aux_k": AUX_K, "dead_after_tokens": AUX_DEAD_AFTER}, etas=(2.0,)),
    "tied_batchtopk": ArchSpec({"architecture": "tied", "activation": "batchtopk"}),
    "tied_batchtopk_groups": ArchSpec({"architecture": "tied", "activation": "batchtopk", "k_groups": "data"}),
    "standard_2x": ArchSpec({"architecture": "standard"}, latent_scale=2.0),
    "designated_2x": ArchSpec({"architecture": "standard", "n_designated_shared": 0.125}, latent_scale=2.0),
    "dedicated_2x": ArchSpec({"architecture": "standard"}, latent_scale=2.0, dedicated=(0.25, 0.25)),
}
"""Architecture name -> spec. ``*_2x``: twice the latents, the tied crosscoder's parameter count. BatchTopK ones
train with ``l1_coeff = 0`` and ``k`` = the data's true L0; ``tied_batchtopk_groups`` keeps per group (shared, base,
chat) the data's true group L0s (``"k_groups": "data"``: :meth:`SyntheticData.true_group_l0`, what an ideal tied
crosscoder's groups fire). ``tied_written_auxk`` and ``tied_auxk``: the recommended config and the write-up's tied
crosscoder (eta 2) plus the auxiliary-k loss (issue 15). The issue's two other cures of dead exclusive groups, each
on the write-up's tied crosscoder (eta 2) and on the recommended config: distinct starts of the exclusive encoder
groups (``*_contrast``, ``*_one_sided``: :attr:`CrosscoderConfig.group_init`) and dead-latent resampling
(``*_resample``: :data:`RESAMPLE_AT`)."""
NOT_TIED = tuple(a for a, spec in ARCHS.items() if spec.crosscoder["architecture"] != "tied")
"""The comparisons that are no tied configuration (never recommended)."""
RECOMMENDED = ("tied_written", RECOMMENDED_TIED_ETA)
"""(architecture, eta) of :data:`ARCHS` that is :func:`tiedlib.crosscoders.crosscoder.recommended_tied`."""


@dataclass(frozen=True)
class GridSetting:
    """One point of the grid: data statistics and the dictionary and optimisation sizes."""

    name: str
    axis: str
    """Which axis this setting moves (``base`` for the base setting)."""
    synthetic: SyntheticConfig
    n_latents: int
    """Latents of the standard crosscoder = latent triples of the tied one (before ``ArchSpec.latent_scale``)."""
    n_steps: int
    batch_size: int = 512
    lr: float = 3e-3
    l1_coeff: float = 0.5
    n_eval: int = 8192


_NOT_IN_FULL = ("tied_unit", "tied_written_auxk", "tied_auxk", "tied_batchtopk", "tied_batchtopk_groups",
                "tied_written_contrast", "tied_one_sided", "tied_written_one_sided", "tied_resample",
                "tied_written_resample")  # fmt: skip
"""Architectures the ``full`` grid leaves out (see :data:`GRID_SCALES`)."""


@dataclass(frozen=True)
class GridScale:
    """The base setting of a scale and which one-axis changes it runs."""

    base: GridSetting
    axes: tuple[str, ...]
    archs: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    etas: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Per architecture, the etas to run instead of its :data:`ARCHS` default."""


_FULL_BASE = GridSetting(
    "base", "base",
    SyntheticConfig(d_model=16, n_shared=20, n_timing=12, n_direction=8, n_base_only=8, n_chat_only=8, n_rows=8192),
    n_latents=80, n_steps=500, batch_size=256, n_eval=4096,
)  # fmt: skip
"""The base setting: 56 features in 16 dimensions (3.5x superposition), 80 latents / triples, 500 steps of 256 rows
(about 1.5 s of one core per tied crosscoder)."""
_SMOKE_BASE = GridSetting(
    "base", "base",
    SyntheticConfig(d_model=12, n_shared=6, n_timing=4, n_direction=2, n_base_only=2, n_chat_only=2, n_rows=2048,
                    fire_prob_min=0.05, fire_prob_max=0.1, noise_std=0.0),
    n_latents=20, n_steps=60, batch_size=256, lr=5e-3, n_eval=1024,
)  # fmt: skip

AXES = ("superposition_1x", "superposition_4x", "dense", "sparse", "shift_0.7", "shift_0.3", "timing_heavy",
        "exclusive_heavy", "lognormal", "steps_half", "steps_double")  # fmt: skip
"""The one-axis changes of :func:`vary`."""

GRID_SCALES: dict[str, GridScale] = {
    "smoke": GridScale(_SMOKE_BASE, axes=("shift_0.3",), archs=("standard", "tied_written"), seeds=(0, 1),
                       etas={"tied": (2.0,)}),  # fmt: skip
    "book": GridScale(_FULL_BASE, axes=("dense", "shift_0.3", "exclusive_heavy", "lognormal"),
                      archs=("standard", "tied", "tied_written"), etas={"tied": (2.0,)}),
    "full": GridScale(_FULL_BASE, axes=AXES, archs=tuple(a for a in ARCHS if a not in _NOT_IN_FULL)),
}  # fmt: skip
"""``smoke``: the test suite (a few seconds). ``book``: notebook 05 at the tiny scale (the base setting and four
axes; the standard crosscoder, the write-up's tied crosscoder at eta 2 and the recommended one, written penalty at
eta 1.5: 45 crosscoders, about 60 s of one core). ``full``: ``make bench`` (every axis, every architecture and eta
but ``tied_unit`` and the aux-k / BatchTopK tries, which were measured once on the ``book`` settings and failed
there, and the distinct-start / resampling tries (``*_contrast`` but ``tied_contrast``, ``*_one_sided``,
``*_resample``), which were measured once on the ``book`` settings and did not beat the recommendation there (on it,
resampling finds no dead exclusive latent and changes nothing): 432 crosscoders, about 10 minutes of one core)."""


def vary(base: GridSetting, axis: str) -> GridSetting:
    """``base`` moved along one axis of :data:`AXES` (feature counts scale with the base setting's)."""
    s = base.synthetic
    counts = dict(n_shared=s.n_shared, n_timing=s.n_timing, n_direction=s.n_direction, n_base_only=s.n_base_only,
                  n_chat_only=s.n_chat_only)  # fmt: skip
    n_feat = s.n_features
    changes: dict[str, Any]
    if axis == "superposition_1x":  # as many dimensions as features
        changes = {"d_model": n_feat}
    elif axis == "superposition_4x":
        changes = {"d_model": max(4, round(n_feat / 4))}
    elif axis == "dense":
        changes = {"fire_prob_min": 4 * s.fire_prob_min, "fire_prob_max": 4 * s.fire_prob_max}
    elif axis == "sparse":
        changes = {"fire_prob_min": s.fire_prob_min / 4, "fire_prob_max": s.fire_prob_max / 4}
    elif axis.startswith("shift_"):  # the chat direction of a timing-shifted concept at this cosine to the base one
        changes = {"timing_cos": float(axis.removeprefix("shift_"))}
    elif axis == "timing_heavy":  # twice the timing-shifted concepts, half the others
        changes = {k: (2 * v if k == "n_timing" else max(1, v // 2)) for k, v in counts.items()}
    elif axis == "exclusive_heavy":  # twice the one-model features, half the shared ones
        changes = {k: (2 * v if k in ("n_base_only", "n_chat_only") else max(1, v // 2) if k == "n_shared" else v)
                   for k, v in counts.items()}  # fmt: skip
    elif axis == "lognormal":
        changes = {"magnitude": "lognormal"}
    elif axis in ("steps_half", "steps_double"):
        steps = base.n_steps // 2 if axis == "steps_half" else base.n_steps * 2
        return replace(base, name=axis, axis=axis, n_steps=max(1, steps))
    else:
        raise ValueError(f"unknown grid axis {axis!r}; known: {AXES}")
    return replace(base, name=axis, axis=axis, synthetic=replace(s, **changes))


def grid_settings(scale: str | GridScale) -> list[GridSetting]:
    """The base setting of ``scale`` followed by its one-axis changes."""
    gs = _scale(scale)
    return [gs.base] + [vary(gs.base, a) for a in gs.axes]


def _scale(scale: str | GridScale) -> GridScale:
    if isinstance(scale, GridScale):
        return scale
    if scale not in GRID_SCALES:
        raise ValueError(f"unknown grid scale {scale!r}; known: {sorted(GRID_SCALES)}")
    return GRID_SCALES[scale]


def config_name(arch: str, eta: float | None) -> str:
    """``"tied_equal eta 1.5"``, or the bare architecture name when eta plays no part."""
    return arch if eta is None else f"{arch} eta {eta:g}"


def build_model(arch: str, d_model: int, n_latents: int, *, eta: float | None = None, k: float | None = None,
                k_groups: Sequence[float] | None = None, seed: int = 0) -> Crosscoder:  # fmt: skip
    """The untrained crosscoder of one :data:`ARCHS` entry (seeded with ``seed``). ``k`` (BatchTopK) and ``k_groups``
    (``"k_groups": "data"`` specs: shared, base, chat) come from the data.

    Raises:
        ValueError: an unknown architecture, or a ``"data"`` spec without ``k_groups``.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown grid architecture {arch!r}; known: {sorted(ARCHS)}")
    spec = ARCHS[arch]
    n = max(1, round(spec.latent_scale * n_latents))
    over = dict(spec.crosscoder)
    if "n_designated_shared" in over:
        over["n_designated_shared"] = max(1, int(over["n_designated_shared"] * n))
    if over.get("k_groups") == "data":
        if k_groups is None:
            raise ValueError(f"{arch} takes its per-group k from the data: pass k_groups=(shared, base, chat)")
        over["k_groups"] = tuple(k_groups)
    elif over.get("activation") == "batchtopk":
        over["k"] = k
    cfg = CrosscoderConfig(d_model=d_model, n_latents=n, eta=2.0 if eta is None else eta, **over)
    torch.manual_seed(seed)
    if spec.dedicated is not None:
        model: Crosscoder = DedicatedCrosscoder(cfg, n_base_only=max(1, int(spec.dedicated[0] * n)),
                                                n_chat_only=max(1, int(spec.dedicated[1] * n)))  # fmt: skip
    else:
        model = make_crosscoder(cfg)
    return model


def train_config(arch: str, setting: GridSetting, data: SyntheticData, *, eta: float | None = None,
                 seed: int = 0) -> Crosscoder:  # fmt: skip
    """Train one architecture on ``data.x`` (:func:`tiedlib.train`, :class:`InMemoryBatches`, the setting's sizes)."""
    groups = data.true_group_l0()
    k_groups = tuple(groups[f"true_l0_{g}"] for g in ("shared", "base", "chat"))
    model = build_model(arch, data.cfg.d_model, setting.n_latents, eta=eta, k=data.true_l0, k_groups=k_groups,
                        seed=seed)  # fmt: skip
    l1 = 0.0 if model.cfg.activation == "batchtopk" else setting.l1_coeff
    tcfg = TrainConfig(n_steps=setting.n_steps, lr=setting.lr, l1_coeff=l1, seed=seed, progress=False,
                       log_every=setting.n_steps)  # fmt: skip
    rows = InMemoryBatches(data.x, setting.batch_size, seed=seed, epochs=None)
    resample = ARCHS[arch].resample
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="InMemoryBatches: starting epoch")
        if resample:  # the sample that decides which latents are dead: the training rows
            steps = resample_steps(setting.n_steps, resample)
            return train_resampling(tcfg, model, rows, sample=data.x, steps=steps)
        return train(tcfg, model, rows)


def _metrics(res: dict[str, Any]) -> dict[str, float]:
    out = {m: float(res[m]) for m in METRICS if m in res}
    dead = [res[k] for k in ("dead_base", "dead_chat") if k in res and not math.isnan(res[k])]
    out["dead_exclusive"] = sum(dead) / len(dead) if dead else float("nan")
    return out


def run_grid(
    scale: str | GridScale = "smoke",
    *,
    archs: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    n_threads: int | None = 1,
    log: Callable[[dict[str, Any]], Any] | None = None,
) -> list[dict[str, Any]]:
    """Train every (setting, architecture, eta, seed) of a grid scale and evaluate it on held-out rows.

    Each seed draws its own dictionary, rows and initialisation; every architecture of one (setting, seed) sees the
    same data. ``ev_gap`` is the run's explained variance minus that of the ``standard`` crosscoder (same setting and
    seed, same decoder size), so ``standard`` is always trained.

    Returns:
        One dict per run: ``setting``, ``axis``, ``arch``, ``eta``, ``config`` (:func:`config_name`), ``seed``,
        ``seconds`` and the :data:`METRICS`.
    """
    gs = _scale(scale)
    names = list(gs.archs if archs is None else archs)
    unknown = sorted(set(names) - set(ARCHS))
    if unknown:
        raise ValueError(f"unknown grid architectures {unknown}; known: {sorted(ARCHS)}")
    names = ["standard"] + [a for a in names if a != "standard"]
    old_threads = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    rows: list[dict[str, Any]] = []
    try:
        for setting in grid_settings(gs):
            for seed in gs.seeds if seeds is None else seeds:
                syn = replace(setting.synthetic, seed=seed)
                data = make_synthetic(syn)
                held = make_synthetic(syn, n_rows=setting.n_eval, row_seed=seed + 1_000_003)
                standard_ev = None
                for arch in names:
                    for eta in gs.etas.get(arch, ARCHS[arch].etas):
                        start = time.perf_counter()
                        model = train_config(arch, setting, data, eta=eta, seed=seed)
                        res = _metrics(evaluate_crosscoder(model, held))
                        if standard_ev is None:
                            standard_ev = res["explained_variance"]
                        res["ev_gap"] = res["explained_variance"] - standard_ev
                        row = {"setting": setting.name, "axis": setting.axis, "arch": arch, "eta": eta,
                               "config": config_name(arch, eta), "seed": seed,
                               "seconds": time.perf_counter() - start, **res}  # fmt: skip
                        rows.append(row)
                        if log is not None:
                            log(row)
    finally:
        torch.set_num_threads(old_threads)
    return rows


# Two-sided 97.5% Student t quantiles by degrees of freedom (for 95% intervals of a mean over few seeds).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval ``(mean, low, high)`` of a few values (the interval is the mean itself for one
    value; NaNs are dropped; all NaN gives NaNs)."""
    vals = [float(v) for v in values if not math.isnan(float(v))]
    if not vals:
        return (math.nan, math.nan, math.nan)
    n = len(vals)
    mean = sum(vals) / n
    if n == 1:
        return (mean, mean, mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = _T975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)


def summarize(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = (TIED_METRIC, STRICT_METRIC, "ev_gap",
              "dead_exclusive", "explained_variance")):  # fmt: skip
    """One row per (setting, config): ``n`` seeds and, per metric, its mean, ``<metric>_lo`` and ``<metric>_hi``
    (95% interval over seeds, :func:`mean_interval`), plus ``passes``: the mean tied fraction (:data:`TIED_METRIC`)
    reaches :data:`TIED_TARGET` and the mean EV gap is at least ``-EV_TOLERANCE``. Returns a pandas DataFrame in the
    order of first appearance."""
    import pandas as pd

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["setting"], r["config"]), []).append(r)
    out = []
    for (setting, config), members in groups.items():
        first = members[0]
        agg: dict[str, Any] = {"setting": setting, "axis": first["axis"], "config": config, "arch": first["arch"],
                               "eta": first["eta"], "n": len(members)}  # fmt: skip
        for m in metrics:
            agg[m], agg[f"{m}_lo"], agg[f"{m}_hi"] = mean_interval([r[m] for r in members])
        agg["passes"] = bool(agg[TIED_METRIC] >= TIED_TARGET and agg["ev_gap"] >= -EV_TOLERANCE)
        out.append(agg)
    return pd.DataFrame(out)


@dataclass
class Recommendation:
    """The grid's verdict (:func:`recommend`)."""

    config: str
    """The recommended config (:func:`config_name`)."""
    n_settings: int
    n_passing: int
    """Settings where its mean tied fraction and mean EV gap both meet the goal."""
    worst_tied: tuple[str, float, float, float]
    """(setting, mean, low, high) of its lowest mean tied fraction."""
    worst_gap: tuple[str, float, float, float]
    """(setting, mean, low, high) of its most negative mean EV gap."""
    worst_strict: tuple[str, float, float, float]
    """(setting, mean, low, high) of its lowest mean :data:`STRICT_METRIC`."""
    failing: list[str]
    """Settings where it misses the goal."""
    write_up: dict[str, tuple[float, float, float]]
    """The write-up's tied crosscoder at eta 2 (when in the grid): mean and interval over settings and seeds of
    :data:`TIED_METRIC`, :data:`STRICT_METRIC` and ``ev_gap``."""
    recommended: dict[str, tuple[float, float, float]]
    """The same pooled figures for the recommended config."""

    def lines(self) -> list[str]:
        t, g = self.worst_tied, self.worst_gap
        out = [f"recommended: {self.config}: meets the goal (tied >= {TIED_TARGET}, EV gap >= -{EV_TOLERANCE}) in "
               f"{self.n_passing} of {self.n_settings} settings"]  # fmt: skip
        for name, d in (("recommended", self.recommended), ("write-up tied (eta 2)", self.write_up)):
            if d:
                ti, st, ev = d[TIED_METRIC], d[STRICT_METRIC], d["ev_gap"]
                out.append(f"{name}, pooled over settings and seeds: tied fraction {ti[0]:.2f} [{ti[1]:.2f}, "
                           f"{ti[2]:.2f}] (strict count {st[0]:.2f} [{st[1]:.2f}, {st[2]:.2f}]), EV gap "
                           f"{ev[0]:+.3f} [{ev[1]:+.3f}, {ev[2]:+.3f}]")  # fmt: skip
        out.append(f"its worst setting for the tied fraction: {t[0]}, {t[1]:.2f} [{t[2]:.2f}, {t[3]:.2f}]; for the "
                   f"EV gap: {g[0]}, {g[1]:+.3f} [{g[2]:+.3f}, {g[3]:+.3f}]")  # fmt: skip
        st = self.worst_strict
        out.append(f"its worst setting under the strict count: {st[0]}, {st[1]:.2f} [{st[2]:.2f}, {st[3]:.2f}]")
        if self.failing:
            out.append("it misses the goal in: " + ", ".join(self.failing))
        return out

    def glue_values(self, prefix: str = "exp5_") -> dict[str, str]:
        """Headline figures as short strings for ``myst_nb.glue``: the recommended config, the settings it passes,
        and for it and the write-up's tied crosscoder (eta 2) the pooled tied fraction and EV gap with intervals."""

        def fmt(v: tuple[float, float, float], signed: bool = False) -> str:
            f = "{:+.3f}" if signed else "{:.2f}"
            return f"{f.format(v[0])} [{f.format(v[1])}, {f.format(v[2])}]"

        out = {f"{prefix}recommended_config": self.config,
               f"{prefix}recommended_passing": f"{self.n_passing} of {self.n_settings}"}  # fmt: skip
        for name, d in (("recommended", self.recommended), ("writeup", self.write_up)):
            if d:
                out[f"{prefix}{name}_tied"] = fmt(d[TIED_METRIC])
                out[f"{prefix}{name}_tied_strict"] = fmt(d[STRICT_METRIC])
                out[f"{prefix}{name}_ev_gap"] = fmt(d["ev_gap"], signed=True)
        return out


def recommend(rows: Sequence[dict[str, Any]], *, exclude: Sequence[str] = NOT_TIED) -> Recommendation:
    """The config (not in ``exclude``) that meets the goal in the most settings; ties go to the higher worst-case tied
    fraction, then to the smaller worst EV loss. Picked from the whole grid, not from one setting.

    Raises:
        ValueError: no candidate config in ``rows``.
    """
    table = summarize(rows)
    cand = table[~table["arch"].isin(exclude)]
    if cand.empty:
        raise ValueError(f"no config outside {list(exclude)} in the grid rows")
    scores = []
    for config, sub in cand.groupby("config", sort=False):
        scores.append((int(sub["passes"].sum()), float(sub[TIED_METRIC].min()), float(sub["ev_gap"].min()),
                       config))  # fmt: skip
    best = max(scores, key=lambda s: s[:3])[3]
    sub = table[table["config"] == best]
    t = sub.loc[sub[TIED_METRIC].idxmin()]
    g = sub.loc[sub["ev_gap"].idxmin()]
    st = sub.loc[sub[STRICT_METRIC].idxmin()]

    def pooled(config: str) -> dict[str, tuple[float, float, float]]:
        mine = [r for r in rows if r["config"] == config]
        if not mine:
            return {}
        return {m: mean_interval([r[m] for r in mine]) for m in (TIED_METRIC, STRICT_METRIC, "ev_gap")}

    return Recommendation(
        config=best, n_settings=len(sub), n_passing=int(sub["passes"].sum()),
        worst_tied=(t["setting"], t[TIED_METRIC], t[f"{TIED_METRIC}_lo"], t[f"{TIED_METRIC}_hi"]),
        worst_gap=(g["setting"], g["ev_gap"], g["ev_gap_lo"], g["ev_gap_hi"]),
        worst_strict=(st["setting"], st[STRICT_METRIC], st[f"{STRICT_METRIC}_lo"], st[f"{STRICT_METRIC}_hi"]),
        failing=list(sub.loc[~sub["passes"], "setting"]), write_up=pooled(config_name("tied", 2.0)),
        recommended=pooled(best),
    )  # fmt: skip
