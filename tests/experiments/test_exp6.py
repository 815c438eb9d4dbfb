"""Experiment 6's presets, candidate selection, tables and findings on hand-made inputs (the whole pipeline runs in
the smoke notebook test)."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest
import torch

from tests.helpers import make_model
from tiedlib.analysis.latent_scaling import LatentScaling
from tiedlib.analysis.localisation import Localisation
from tiedlib.config import pick
from tiedlib.experiments import exp6
from tiedlib.experiments.exp6 import TABLE, Crosscoders
from tiedlib.synthetic.benchmark import make_synthetic


def test_presets_cover_every_scale_and_validate():
    assert set(TABLE) == {"smoke", "tiny", "paper"}
    assert TABLE["paper"].n_latents == 16_384 and TABLE["paper"].eta == 2.0 and TABLE["paper"].layer == 14
    assert len({s.run_id for s in TABLE.values()}) == 3
    assert pick(TABLE, "smoke", n_steps=7).run_id != TABLE["smoke"].run_id
    with pytest.raises(ValueError, match="must be positive"):
        replace(TABLE["smoke"], ce_docs=0)
    with pytest.raises(ValueError, match="high must be in"):
        replace(TABLE["smoke"], high=1.0)


def test_chat_only_candidates():
    std, tied = make_model(n_latents=8), make_model(n_latents=5, architecture="tied")
    with torch.no_grad():
        std.W_dec[:, 0] *= 0.01  # every latent chat-exclusive but 2 and 5
        std.W_dec[[2, 5], 0] *= 100
    cands = exp6.chat_only_candidates(Crosscoders({"standard": std, "tied": tied}, {}, 0), TABLE["smoke"])
    assert cands["standard"][0].tolist() == [0, 1, 3, 4, 6, 7] and cands["standard"][1] is None
    assert cands["tied"][0].tolist() == list(range(5)) and cands["tied"][1] == "chat"


def _scaling(nu_e, nu_r):
    k = len(nu_e)
    chat = torch.ones(k)
    return LatentScaling(torch.arange(k), None, torch.stack([torch.tensor(nu_r), chat]),
                         torch.stack([torch.tensor(nu_e), chat]), torch.full((k,), 10))  # fmt: skip


def test_tables_and_findings():
    scaling = {"standard": _scaling([0.1, 0.9, 0.1, 0.9], [0.1, 0.1, 0.9, 0.9]), "tied": _scaling([], [])}
    st = exp6.scaling_table(scaling, 0.5)
    assert st.loc["standard", "chat-only latents"] == 4
    verdicts = ["chat-specific", "complete shrinkage", "latent decoupling", "both"]
    assert st.loc["standard", verdicts].tolist() == [0.25] * 4
    assert math.isnan(st.loc["tied", "chat-specific"])
    loc = {"standard": Localisation(torch.arange(4), None, torch.tensor([1.0, 1.0, 1.0, 0.0]),
                                    torch.tensor([0.9, 0.2, 0.6, math.nan]), torch.tensor([0.0, 0.7, 0.1, math.nan])),
           "tied": Localisation(torch.arange(0), "chat", torch.zeros(0), torch.zeros(0), torch.zeros(0))}  # fmt: skip
    lt = exp6.localisation_table(loc, 0.5)
    assert lt.loc["standard", "mainly template"] == pytest.approx(2 / 3)
    assert lt.loc["standard", "mainly assistant"] == pytest.approx(1 / 3)
    idx = pd.MultiIndex.from_product([["standard", "tied"], ["web", "chat"], ["base", "chat"]])
    ce = pd.DataFrame({"recovered": [0.9, 0.8, 0.7, 0.6, 0.95, 0.85, 0.75, 0.65], "kl": [0.1] * 8}, index=idx)
    cc = Crosscoders({}, {}, 0)
    out = exp6.findings(TABLE["smoke"], "smoke", cc, ce, st, lt)
    assert all(k.startswith("exp6_") and isinstance(v, str) for k, v in out.items())
    assert out["exp6_ce_standard"] == (
        "base on web: recovered 0.9000, KL 0.1000; chat on chat: recovered 0.6000, KL 0.1000"
    )
    assert "25% chat-specific" in out["exp6_scaling_standard"] and "n/a" in out["exp6_scaling_tied"]
    assert out["exp6_template_standard"].startswith("67% fire mainly on template tokens, 33%")
    assert exp6.summary(out).splitlines()[0].startswith("setup: smoke scale")


def test_synthetic_ground_truth_orders_the_ablations():
    size = exp6.SyntheticAblationSize(n_shifted=8, n_rows=1024, n_eval=1024, n_latents=16, n_steps=20)
    truth = exp6.synthetic_ground_truth(TABLE["smoke"], size)
    assert list(truth.index) == [(s, c) for s in ("timing-shifted", "direction-shifted") for c in ("ideal", "trained")]
    assert truth.loc[("timing-shifted", "ideal"), "timing_share"] > 0.99
    assert truth.loc[("direction-shifted", "ideal"), "timing_share"] < 0.01
    assert truth.loc[("direction-shifted", "ideal"), "representation_chat"] > 0.1
    with pytest.raises(ValueError, match="shift must be one of"):
        size.synthetic("both")


def test_ablation_table_and_findings():
    costs = exp6.ideal_costs(make_synthetic(exp6.SyntheticAblationSize().synthetic("timing-shifted"), n_rows=512))
    truth = pd.DataFrame({("timing-shifted", c): costs.summary() for c in ("ideal", "trained")}
                         | {("direction-shifted", c): {**costs.summary(), "timing_share": 0.0}
                            for c in ("ideal", "trained")}).T  # fmt: skip
    table = exp6.ablation_table(truth[list(exp6.ablation.COLUMNS)], costs, TABLE["smoke"], "smoke")
    assert table.loc[("smoke pair", "tied, all firing"), "n_triples"] == int((costs.n_active >= 2).sum())
    # The timing-shifted features' true rows are equal in both models (relative norm 0.5): all in the shared band.
    assert table.loc[("smoke pair", "tied, shared band"), "n_triples"] == table.loc[("smoke pair", "tied, all firing"),
                                                                                    "n_triples"]  # fmt: skip
    out = exp6.ablation_findings(table, "smoke")
    assert set(out) == {"exp6_ablation_lab", "exp6_ablation_timing", "exp6_ablation_direction"}
    assert "timing's share 100%" in out["exp6_ablation_lab"]
    assert out["exp6_ablation_direction"].startswith("direction-shifted synthetic data: ideal crosscoder timing's "
                                                     "share 0%")  # fmt: skip
    ax = exp6.figures.ablation_bars(table).axes[0]
    assert len(ax.patches) == 3 * len(table) and len(ax.get_yticklabels()) == len(table)
