"""The timing/representation ablation: exact against a brute-force re-decode, and ground truth on the synthetic
benchmark with the crosscoder built by hand from the known dictionary (timing-shifted data costs only under the timing
ablation, direction-shifted data only under the representation ablation)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import make_model, random_rows
from tiedlib.analysis.ablation import ablation_costs, ablation_costs_from_coefficients
from tiedlib.config import BASE, CHAT
from tiedlib.synthetic.benchmark import SyntheticConfig, make_synthetic


def _fvu(x, x_hat):
    var = (x - x.mean(0, keepdim=True)).pow(2).sum(dim=(0, 2))
    return (x_hat - x).pow(2).sum(dim=(0, 2)) / var


@torch.no_grad()
def test_per_triple_and_joint_costs_match_a_brute_force_redecode():
    model = make_model(n_latents=6, architecture="tied")
    with torch.no_grad():
        model.b_enc.fill_(0.3)  # every group fires often, so base and chat coefficients differ
        model.b_dec.normal_()
    x = random_rows(256)
    costs = ablation_costs(model, x, torch.tensor([1, 4]), batch_size=100)
    f = model.encode(x)
    clean = _fvu(x, model.decode(f))
    assert torch.allclose(costs.fvu, clean, atol=1e-5)
    W = model.W_dec.detach().clone()
    for k, i in enumerate([1, 4]):
        ablated = model.W_dec.detach().clone()
        ablated[i, CHAT] = W[i, BASE] / W[i, BASE].norm() * W[i, CHAT].norm()
        model.W_dec.copy_(ablated)
        rep = _fvu(x, model.decode(f)) - clean
        model.W_dec.copy_(W)
        assert torch.allclose(costs.per_triple["representation_chat"][k], rep, atol=1e-5)
        assert costs.per_triple["representation_chat"][k, BASE] == 0
        g = f.clone()
        cb, cc = g[:, 0, i] + g[:, 1, i], g[:, 0, i] + g[:, 2, i]
        g[:, 0, i], g[:, 1, i], g[:, 2, i] = (cb + cc) / 2, 0, 0  # both models now write the mean
        tim = _fvu(x, model.decode(g)) - clean
        assert torch.allclose(costs.per_triple["timing"][k], tim, atol=1e-5)
    g = f.clone()
    for i in (1, 4):
        cb, cc = g[:, 0, i] + g[:, 1, i], g[:, 0, i] + g[:, 2, i]
        g[:, 0, i], g[:, 1, i], g[:, 2, i] = (cb + cc) / 2, 0, 0
    assert torch.allclose(costs.joint["timing"], _fvu(x, model.decode(g)) - clean, atol=1e-5)
    assert costs.per_triple["timing"].shape == (2, 2) and costs.n_active.shape == (2,)


def _hand_built(kind: str):
    """Synthetic data with shared features plus timing- or direction-shifted ones, and the ideal tied crosscoder's
    coefficients (each feature's activation in each model) and decoder (its true directions)."""
    cfg = SyntheticConfig(d_model=16, n_shared=8, n_timing=16 if kind == "timing" else 0,
                          n_direction=16 if kind == "direction" else 0, n_base_only=0, n_chat_only=0,
                          n_rows=2048, direction_cos=0.5)  # fmt: skip
    data = make_synthetic(cfg)
    x_hat = torch.einsum("bmf,fmd->bmd", data.acts, data.directions)
    return ablation_costs_from_coefficients(data.x, x_hat, data.acts, data.directions)


def test_ground_truth_timing_shifted_data_costs_under_timing_only():
    s = _hand_built("timing").summary()
    assert s["timing"] > 0.1 and s["joint_timing"] > 0.1
    assert s["representation_chat"] < 1e-6 and s["representation_base"] < 1e-6  # one direction per concept
    assert s["timing_share"] > 0.99 and s["fvu_chat"] < 0.01


def test_ground_truth_direction_shifted_data_costs_under_representation_only():
    c = _hand_built("direction")
    s = c.summary()
    assert s["representation_chat"] > 0.1 and s["representation_base"] > 0.1
    assert s["representation_chat_base"] == 0 and s["representation_base_chat"] == 0
    assert abs(s["timing"]) < 1e-6 and s["timing_share"] < 0.01  # the same firing in both models
    assert c.firing(1, low=0.3, high=0.7).sum() == s["n_triples"]


def test_rejects_a_standard_crosscoder_and_mismatched_shapes():
    with pytest.raises(ValueError, match="needs a tied crosscoder"):
        ablation_costs(make_model(n_latents=4), random_rows(8))
    with pytest.raises(ValueError, match="do not match"):
        ablation_costs_from_coefficients(torch.zeros(4, 2, 3), torch.zeros(4, 2, 3), torch.zeros(4, 2, 5),
                                         torch.zeros(6, 2, 3))  # fmt: skip
