"""Latent Scaling on synthetic data with known betas: the closed form, Complete Shrinkage and Latent Decoupling."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import make_model
from tiedlib.analysis.latent_scaling import latent_scaling, scaling_betas
from tiedlib.config import CrosscoderConfig
from tiedlib.crosscoders import StandardCrosscoder, TiedCrosscoder

D = 8


def test_closed_form_recovers_planted_betas():
    n, k = 400, 3
    q, _ = torch.linalg.qr(torch.randn(D, D))
    dirs = q[:, :k].T * torch.tensor([[1.0], [2.0], [0.5]])  # orthogonal directions of different norms
    f = torch.relu(torch.randn(n, k))
    betas = torch.tensor([0.3, -1.2, 2.0])
    noise = torch.randn(n, D) @ (q[:, k:] @ q[:, k:].T)  # orthogonal to every direction
    y = (f * betas) @ dirs + noise
    assert torch.allclose(scaling_betas(f, dirs, y), betas, atol=1e-5)
    # brute force: minimise over a grid for latent 1
    grid = torch.linspace(-2, 0, 2001)
    losses = [((b * f[:, 1:2] * dirs[1] - y) ** 2).sum() for b in grid]
    assert float(grid[int(torch.stack(losses).argmin())]) == pytest.approx(-1.2, abs=2e-3)
    assert math.isnan(float(scaling_betas(torch.zeros(n, 1), dirs[:1], y)[0]))


def chat_only_standard(decoupled: bool) -> StandardCrosscoder:
    """Latent 0 reads chat coordinate 0 and decodes to chat e0 only; latent 1 (when ``decoupled``) reads base
    coordinate 0 and decodes to base e0 only: the base copy of the same concept in another latent."""
    model = StandardCrosscoder(CrosscoderConfig(d_model=D, n_latents=4))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_enc[1, 0, 0] = 1.0
        model.W_dec[0, 1, 0] = 1.0
        if decoupled:
            model.W_enc[0, 0, 1] = 1.0
            model.W_dec[1, 0, 0] = 1.0
        # A decoder bias along e0 must not count as reconstruction; the inputs carry it (x + 0.25) and the encoder
        # bias takes it off again, so the latents still read the concept's strength.
        model.b_dec.fill_(0.25)
        model.b_enc[:2] = -0.25
    return model


def concept_in_both(n: int = 300) -> torch.Tensor:
    """Chat carries the concept at strength a along e0, base at 0.5 a (plus noise on the other coordinates)."""
    a = torch.rand(n) + 0.5
    x = torch.randn(n, 2, D) * 0.3
    x[:, :, 0] = 0
    x[:, 1, 0] = a
    x[:, 0, 0] = 0.5 * a
    return x


def test_complete_shrinkage_shows_in_the_base_error():
    x = concept_in_both()
    ls = latent_scaling(chat_only_standard(decoupled=False), [x + 0.25], [0])
    assert ls.beta_error[:, 0].tolist() == pytest.approx([0.5, 1.0], abs=1e-5)
    assert ls.beta_reconstruction[:, 0].tolist() == pytest.approx([0.0, 1.0], abs=1e-5)
    assert float(ls.nu_error[0]) == pytest.approx(0.5, abs=1e-5)
    assert ls.verdicts(0.4) == ["complete shrinkage"] and ls.verdicts(0.6) == ["chat-specific"]
    assert int(ls.n_active[0]) == x.shape[0]


def test_latent_decoupling_shows_in_the_base_reconstruction():
    x = concept_in_both()
    ls = latent_scaling(chat_only_standard(decoupled=True), [x + 0.25], [0, 2])
    assert ls.beta_reconstruction[:, 0].tolist() == pytest.approx([0.5, 1.0], abs=1e-5)
    assert ls.beta_error[:, 0].tolist() == pytest.approx([0.0, 1.0], abs=1e-5)
    assert ls.verdicts(0.4) == ["latent decoupling", "never fires"]
    table = ls.table()
    assert list(table.index) == [0, 2] and math.isnan(table.loc[2, "nu_error"])
    fired = ls.select(ls.n_active > 0)
    assert fired.latents.tolist() == [0] and fired.beta_error.shape == (2, 1)


def test_tied_chat_part_adds_back_no_base_contribution():
    """The chat part of triple 0 decodes to chat e0 only, although the triple's base decoder is e0 too."""
    model = TiedCrosscoder(CrosscoderConfig(d_model=D, n_latents=3, architecture="tied"))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_enc[1, 0, 2, 0] = 1.0  # chat part of triple 0 reads chat coordinate 0
        model.W_dec[0, :, 0] = 1.0
    ls = latent_scaling(model, [concept_in_both()], [0], group="chat")
    assert ls.beta_error[:, 0].tolist() == pytest.approx([0.5, 1.0], abs=1e-5)
    assert ls.beta_reconstruction[:, 0].tolist() == pytest.approx([0.0, 1.0], abs=1e-5)


def test_normalisation_and_bad_arguments():
    model = make_model(d_model=D, n_latents=16, norm_factors=[2.0, 0.5])
    x = torch.randn(50, 2, D)
    raw = latent_scaling(model, [x], range(16))
    pre = latent_scaling(model, [model.normalize(x)], range(16), normalized=True)
    assert torch.allclose(raw.beta_error, pre.beta_error, equal_nan=True)
    with pytest.raises(ValueError, match="latent indices"):
        latent_scaling(model, [x], [16])
    with pytest.raises(ValueError, match="no latent groups"):
        latent_scaling(model, [x], [0], group="chat")
    with pytest.raises(ValueError, match="needs group"):
        latent_scaling(make_model(d_model=D, architecture="tied"), [x], [0])


def test_exclude_triple_counts_only_copies_in_other_triples():
    """Triple 0's chat part reads chat e0; its own base part and triple 1's base part both read base e0 and decode it:
    the base reconstruction holds 2 x 0.5 of the direction, half of it in triple 0 itself."""
    model = TiedCrosscoder(CrosscoderConfig(d_model=D, n_latents=3, architecture="tied"))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_enc[1, 0, 2, 0] = 1.0  # chat part of triple 0
        model.W_enc[0, 0, 1, 0] = 1.0  # base part of triple 0
        model.W_enc[0, 0, 1, 1] = 1.0  # base part of triple 1
        model.W_dec[0, :, 0] = 1.0
        model.W_dec[1, 0, 0] = 1.0
    x = concept_in_both()
    full = latent_scaling(model, [x], [0], group="chat")
    others = latent_scaling(model, [x], [0], group="chat", exclude_triple=True)
    assert full.beta_reconstruction[:, 0].tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert others.beta_reconstruction[:, 0].tolist() == pytest.approx([0.5, 1.0], abs=1e-5)
    assert torch.allclose(others.beta_error, full.beta_error)
    with pytest.raises(ValueError, match="tied crosscoders only"):
        latent_scaling(make_model(d_model=D), [x], [0], exclude_triple=True)
