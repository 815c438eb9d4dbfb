"""Notebook 06, "timing or representation?": the write-up's next-step ablation (:mod:`tiedlib.analysis.ablation`) on
the tied crosscoder of the lab pair, beside its ground truth on synthetic data (issue 16).

Ground truth: two synthetic data sets of :mod:`tiedlib.synthetic.benchmark`, each with shared features plus either
*timing-shifted* features (one direction, firing in both models at some times and in one alone at others) or
*direction-shifted* ones (same times, chat direction at cosine 0.5 from the base one). On each, the ideal tied
crosscoder (built by hand: decoder = the true directions, coefficients = the true activations) and a small trained
one are ablated.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pandas as pd
import torch

from tiedlib.activations.batches import InMemoryBatches
from tiedlib.analysis.ablation import AblationCosts, ablation_costs, ablation_costs_from_coefficients
from tiedlib.config import CrosscoderConfig, TrainConfig
from tiedlib.crosscoders.crosscoder import Crosscoder, make_crosscoder
from tiedlib.synthetic.benchmark import SyntheticConfig, SyntheticData, make_synthetic
from tiedlib.training import train

from .pipeline import Crosscoders, HeldOut
from .presets import Exp6Settings

SHIFTS = ("timing-shifted", "direction-shifted")
# Per-triple costs summed over the selected triples (the joint costs of AblationCosts cover every triple ablated, not
# a selection, so they are left out of the table).
COLUMNS = ("n_triples", "timing", "representation_chat", "representation_base", "timing_share", "fvu_base", "fvu_chat")


@dataclass(frozen=True)
class SyntheticAblationSize:
    """Sizes of the synthetic ground truth (the same at every scale: about 10 s of one CPU core)."""

    d_model: int = 16
    n_shared: int = 8
    n_shifted: int = 16
    """Timing- or direction-shifted features."""
    n_rows: int = 8192
    n_eval: int = 4096
    n_latents: int = 48
    n_steps: int = 1000
    batch_size: int = 512
    lr: float = 3e-3
    l1_coeff: float = 0.5
    eta: float = 2.0
    seed: int = 0

    def synthetic(self, shift: str) -> SyntheticConfig:
        if shift not in SHIFTS:
            raise ValueError(f"shift must be one of {SHIFTS}, got {shift!r}")
        timing = shift == "timing-shifted"
        return SyntheticConfig(d_model=self.d_model, n_shared=self.n_shared, n_timing=self.n_shifted * timing,
                               n_direction=self.n_shifted * (not timing), n_base_only=0, n_chat_only=0,
                               n_rows=self.n_rows, fire_prob_min=0.02, fire_prob_max=0.05, seed=self.seed)  # fmt: skip


def ideal_costs(data: SyntheticData) -> AblationCosts:
    """Ablation costs of the ideal tied crosscoder of ``data``: one triple per feature, decoder rows its true
    directions, coefficients its true activations in each model."""
    x_hat = torch.einsum("bmf,fmd->bmd", data.acts, data.directions)
    return ablation_costs_from_coefficients(data.x, x_hat, data.acts, data.directions)


def train_synthetic(data: SyntheticData, size: SyntheticAblationSize) -> Crosscoder:
    """A tied crosscoder (the write-up's, eta = ``size.eta``) trained on ``data.x``."""
    cfg = CrosscoderConfig(d_model=data.cfg.d_model, n_latents=size.n_latents, architecture="tied", eta=size.eta)
    torch.manual_seed(size.seed)
    model = make_crosscoder(cfg)
    tcfg = TrainConfig(n_steps=size.n_steps, lr=size.lr, l1_coeff=size.l1_coeff, seed=size.seed, progress=False,
                       log_every=size.n_steps)  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="InMemoryBatches: starting epoch")
        return train(tcfg, model, InMemoryBatches(data.x, size.batch_size, seed=size.seed, epochs=None)).eval()


def _row(costs: AblationCosts, mask: torch.Tensor | None) -> dict[str, float]:
    s = costs.summary(mask)
    return {c: s[c] for c in COLUMNS}


def synthetic_ground_truth(settings: Exp6Settings, size: SyntheticAblationSize | None = None) -> pd.DataFrame:
    """Rows (data, crosscoder) for both shifts and both crosscoders (``ideal``, ``trained``): the aggregate costs
    (:meth:`AblationCosts.summary`) on held-out rows, over the triples that fire on at least ``min_active`` rows
    with a relative decoder norm in ``[1 - high, high]`` (both models hold the concept)."""
    size = size or SyntheticAblationSize()
    rows = {}
    threads = torch.get_num_threads()
    # One thread: these matrices are tiny, and on a busy CPU two threads made the two trainings 20x slower.
    torch.set_num_threads(1)
    try:
        for shift in SHIFTS:
            cfg = size.synthetic(shift)
            held = make_synthetic(cfg, n_rows=size.n_eval, row_seed=size.seed + 1_000_003)
            rows[(shift, "ideal")] = _row(ideal_costs(held), None)
            costs = ablation_costs(train_synthetic(make_synthetic(cfg), size), held.x)
            rows[(shift, "trained")] = _row(costs, costs.firing(settings.min_active, low=1 - settings.high,
                                                                high=settings.high))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows).T.rename_axis(["data", "crosscoder"])


def lab_costs(crosscoders: Crosscoders, held: HeldOut) -> AblationCosts:
    """Ablation costs of every triple of the pair's tied crosscoder on the held-out tokens (in its units)."""
    model = crosscoders.models["tied"]
    x = model.normalize(held.acts.harvest.acts.float().to(model.W_dec.device))
    return ablation_costs(model, x)


def ablation_table(truth: pd.DataFrame, lab: AblationCosts, settings: Exp6Settings, pair: str) -> pd.DataFrame:
    """The synthetic rows and the lab pair's (all firing triples, and those in the shared band)."""
    band = lab.firing(settings.min_active, low=1 - settings.high, high=settings.high)
    lab_rows = {(f"{pair} pair", "tied, shared band"): _row(lab, band),
                (f"{pair} pair", "tied, all firing"): _row(lab, lab.firing(settings.min_active))}  # fmt: skip
    out = pd.concat([truth, pd.DataFrame(lab_rows).T.rename_axis(["data", "crosscoder"])])
    out["n_triples"] = out["n_triples"].astype(int)
    return out


def _cost(v: float) -> str:
    return f"{round(v, 4) + 0.0:+.4f}"  # + 0.0 turns a rounded -0.0 into 0.0


def _share_pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{round(v, 2) + 0.0:.0%}"


def _fmt(row: pd.Series) -> str:
    return (f"timing ablation {_cost(row.timing)} FVU, representation ablation {_cost(row.representation_chat)} "
            f"(chat row <- base) / {_cost(row.representation_base)} (base row <- chat); timing's share "
            f"{_share_pct(row.timing_share)} over {int(row.n_triples)} triples")  # fmt: skip


def ablation_findings(table: pd.DataFrame, pair: str) -> dict[str, str]:
    """The headline numbers under ``exp6_ablation_*`` keys."""
    out = {"exp6_ablation_lab": f"{pair} pair, tied crosscoder, shared-band triples: "
                                + _fmt(table.loc[(f"{pair} pair", "tied, shared band")])}  # fmt: skip
    for shift in SHIFTS:
        key = shift.split("-")[0]
        ideal, trained = table.loc[(shift, "ideal")], table.loc[(shift, "trained")]
        out[f"exp6_ablation_{key}"] = (f"{shift} synthetic data: ideal crosscoder timing's share "
                                       f"{_share_pct(ideal.timing_share)}, trained tied crosscoder "
                                       f"{_share_pct(trained.timing_share)}"
                                       f" ({_fmt(trained)})")  # fmt: skip
    return out
