"""Issue 16's positive control (tiedlib.experiments.exp5.positive_control) on gaussian rows: the planted sets and
direction, the measurements on hand-built decoders, and one toy training where the answer is known."""

import math
from dataclasses import replace

import matplotlib.pyplot as plt
import pytest
import torch

from tests.helpers import make_model
from tiedlib.config import BASE, CHAT
from tiedlib.experiments import exp5
from tiedlib.experiments.exp5.positive_control import (
    SETS,
    control_key,
    inject,
    match_standard,
    match_tied,
    measure_control,
    planted_direction,
    planted_sets,
)
from tiedlib.experiments.exp5.presets import ControlSettings


def test_planted_sets_have_the_asked_sizes_overlap_and_magnitudes():
    p = planted_sets(1000, rate=0.1, overlap=0.3, scale=2.0, spread=0.5, seed=3)
    s = p.sizes()
    assert (s["A"], s["B"], s["A & B"], s["A only"], s["B only"], s["neither"]) == (100, 100, 30, 70, 70, 830)
    assert s["overlap"] == pytest.approx(0.3)
    masks = torch.stack(list(p.masks().values()))
    assert (masks.sum(0) == 1).all()  # the four sets partition the positions
    on = p.a | p.b
    assert (p.magnitude[~on] == 0).all() and p.magnitude[on].min() >= 1.0 and p.magnitude[on].max() <= 3.0
    again = planted_sets(1000, rate=0.1, overlap=0.3, scale=2.0, spread=0.5, seed=3)
    assert torch.equal(again.a, p.a) and torch.equal(again.b, p.b)
    assert not torch.equal(planted_sets(1000, rate=0.1, overlap=0.3, scale=2.0, spread=0.5, seed=4).a, p.a)


@pytest.mark.parametrize("kw", [dict(rate=0.0), dict(rate=0.6), dict(overlap=1.2), dict(spread=1.0), dict(scale=0.0),
                                dict(overlap=0.0), dict(overlap=1.0)])  # fmt: skip
def test_planted_sets_reject_bad_settings(kw):
    with pytest.raises(ValueError):
        planted_sets(1000, **{**dict(rate=0.1, overlap=0.3, scale=1.0, spread=0.5), **kw})


def test_planted_direction_is_a_unit_vector_off_the_top_principal_directions():
    rows = torch.randn(2000, 2, 12) * torch.linspace(5, 0.5, 12)  # variance falls along the coordinates
    d = planted_direction(rows, avoid_top=3, seed=0)
    assert d.norm().item() == pytest.approx(1.0, abs=1e-5)
    pooled = rows.reshape(-1, 12).double()
    top = torch.linalg.svd(pooled - pooled.mean(0), full_matrices=False).Vh[:3]
    assert (top @ d.double()).abs().max() < 1e-6
    assert torch.equal(planted_direction(rows, avoid_top=3, seed=0), d)
    with pytest.raises(ValueError, match="avoid_top"):
        planted_direction(rows, avoid_top=12)


def test_inject_adds_the_direction_to_base_at_a_and_chat_at_b_only():
    rows = torch.randn(200, 2, 8)
    p = planted_sets(200, rate=0.2, overlap=0.5, scale=3.0, spread=0.2, seed=0)
    d = torch.nn.functional.normalize(torch.randn(8), dim=0)
    diff = inject(rows, p, d) - rows
    assert torch.allclose(diff[p.a, BASE], p.magnitude[p.a, None] * d) and (diff[~p.a, BASE] == 0).all()
    assert torch.allclose(diff[p.b, CHAT], p.magnitude[p.b, None] * d) and (diff[~p.b, CHAT] == 0).all()
    with pytest.raises(ValueError, match="planted sets cover"):
        inject(rows[:10], p, d)


def _decoder(n=16, d_model=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, d_model, generator=g), torch.nn.functional.normalize(torch.randn(d_model, generator=g),
                                                                                    dim=0)  # fmt: skip


def test_match_standard_reports_an_exclusive_pair_and_a_shared_latent():
    W, d = _decoder()
    W[3, BASE], W[3, CHAT] = d, 0.01 * W[3, CHAT]  # base-exclusive, along d
    W[7, BASE], W[7, CHAT] = 0.01 * W[7, BASE], 2 * d  # chat-exclusive, along d
    m = match_standard(W, d)
    assert (m["base_latent"], m["chat_latent"]) == (3, 7) and m["exclusive_pair"]
    assert m["base_cos"] == pytest.approx(1.0) and m["pair_cos"] == pytest.approx(1.0)
    assert m["shared_cos"] < 0.9  # no random shared latent is along d
    # d on both halves of one latent: a shared latent, no exclusive pair
    W2, _ = _decoder()
    W2[5] = d
    m2 = match_standard(W2, d)
    assert m2["shared_latent"] == 5 and m2["shared_cos"] == pytest.approx(1.0) and not m2["exclusive_pair"]


def test_match_standard_without_exclusive_latents_says_none():
    W, d = _decoder()
    m = match_standard(W, d, exclusive_below=0.0)
    assert m["base_latent"] is None and m["chat_latent"] is None and math.isnan(m["pair_cos"])
    assert not m["exclusive_pair"]


def test_match_tied_finds_one_triple_and_counts_a_second_aligned_half():
    W, d = _decoder()
    W[4, BASE], W[4, CHAT] = 0.5 * d, 3 * d
    m = match_tied(W, d)
    assert m["triple"] == 4 and m["single"] and m["n_aligned"] == 1
    W[9, BASE] = d  # a second index writes d into the base model (e.g. a lopsided triple)
    m = match_tied(W, d)
    assert m["triple"] == 4 and m["n_aligned"] == 2 and not m["single"]


def _hand_built(architecture, d, d_model, index=2):
    """A crosscoder whose ``index`` reads and writes ``d``: standard latents index (base only) and index + 1 (chat
    only); tied triple ``index`` with both halves along ``d`` and each group reading its model(s)."""
    model = make_model(architecture=architecture, d_model=d_model, n_latents=8)
    with torch.no_grad():
        model.W_dec.zero_()
        model.W_enc.zero_()
        model.b_enc.fill_(-0.5)
        if architecture == "standard":
            model.W_dec[index, BASE] = d
            model.W_dec[index + 1, CHAT] = d
            model.W_enc[BASE, :, index] = d
            model.W_enc[CHAT, :, index + 1] = d
        else:
            model.W_dec[index] = d
            # shared group: d in both models; base group: d in base minus d in chat; chat group: the mirror image
            model.W_enc[BASE, :, 0, index], model.W_enc[CHAT, :, 0, index] = d, d
            model.b_enc[0, index] = -2.5  # fires only where both models carry d (magnitude 2)
            model.W_enc[BASE, :, 1, index], model.W_enc[CHAT, :, 1, index] = d, -d
            model.W_enc[BASE, :, 2, index], model.W_enc[CHAT, :, 2, index] = -d, d
    return model.eval()


def test_measure_control_on_hand_built_crosscoders():
    d_model = 8
    d = torch.zeros(d_model)
    d[0] = 1.0
    rows = torch.zeros(400, 2, d_model)
    p = planted_sets(400, rate=0.25, overlap=0.4, scale=2.0, spread=0.0, seed=1)
    data = exp5.ControlData(rows=inject(rows, p, d), planted=p, direction=d, norm_factors=None, mean_norm=1.0)
    models = {"standard": _hand_built("standard", d, d_model), "tied (write-up)": _hand_built("tied", d, d_model)}
    res = measure_control(models, data)
    assert res.matches["standard"]["exclusive_pair"] and res.matches["tied (write-up)"]["single"]
    t = res.table().set_index(["crosscoder", "unit"])
    std_base, std_chat = t.loc[("standard", "base-exclusive")], t.loc[("standard", "chat-exclusive")]
    assert (std_base["precision"], std_base["recall"]) == (1.0, 1.0) and std_base["B only"] == 0
    assert (std_chat["precision"], std_chat["recall"]) == (1.0, 1.0) and std_chat["A & B"] == p.sizes()["A & B"]
    for unit, target in (("shared", "A & B"), ("base", "A only"), ("chat", "B only")):
        row = t.loc[("tied (write-up)", unit)]
        assert row["target"] == target and row["precision"] == 1.0 and row["recall"] == 1.0
        assert row["mass precision"] == pytest.approx(1.0)
        assert row[target] == p.sizes()[target] and sum(row[s] for s in SETS) == row[target]
    assert "an exclusive pair" in res.verdict() and "one triple" in res.verdict()
    # the same measurements as two seeds of a run, the second with the tied decoder's chat half turned away
    models["tied (write-up)"].W_dec.data[2, CHAT] = torch.roll(d, 1)
    run = exp5.ControlRun(results={0: res, 1: measure_control(models, data)}, summaries={0: "", 1: ""})
    assert run.passed("standard") == [True, True] and run.passed("tied (write-up)") == [True, False]
    assert run.glue_values()["exp5_control_tied_passed"] == "1/2" and run.glue_values()["exp5_control_seeds"] == 2
    assert run.verdict().startswith("Passed: standard: 2/2 seeds (exclusive pair), tied (write-up): 1/2 seeds")
    table = run.seed_table()
    assert list(table["passed"]) == [True, True, True, False] and table["aligned indices"].iloc[1] == "[2]"
    glued = res.glue_values()
    assert all(k.startswith("exp5_control_") for k in glued)
    assert glued["exp5_control_standard_pair"] == "yes" and glued["exp5_control_tied_single"] == "yes"
    assert glued["exp5_control_tied_shared_recall"] == 1.0
    frac = res.firing_fractions()
    assert set(frac["set"]) == set(SETS) and frac["fraction"].between(0, 1).all()
    fig = exp5.control_firing_bars(frac, title="hand-built")
    assert len(fig.axes) == 2
    plt.close(fig)


def test_a_short_toy_training_finds_the_planted_exclusive_pair(tmp_path):
    # Sparse rows from a 12-direction dictionary, the same in both models up to noise; d planted on top of them.
    d_model, n = 16, 4000
    g = torch.Generator().manual_seed(0)
    dictionary = torch.nn.functional.normalize(torch.randn(12, d_model, generator=g), dim=-1)
    coef = (torch.rand(n, 12, generator=g) < 0.15) * torch.rand(n, 12, generator=g) * 4
    rows = (coef @ dictionary)[:, None, :].repeat(1, 2, 1) + 0.05 * torch.randn(n, 2, d_model, generator=g)
    cs = ControlSettings(rate=0.05, overlap=0.4, scale=1.0, spread=0.3, avoid_top=0, n_latents=24, n_steps=300,
                         batch_size=256, lr=5e-3, l1_coeff=0.5)  # fmt: skip
    data = exp5.control_data(rows, cs)
    assert data.planted.sizes()["A & B"] == 80
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only adds contention
    try:
        models = exp5.train_control_crosscoders(data, cs, tmp_path)
        run = exp5.run_control(rows, None, replace(cs, seeds=(0,)), tmp_path)  # seed 0: the same runs, loaded
    finally:
        torch.set_num_threads(threads)
    assert set(models) == {"standard", "tied (write-up)", "tied (recommended)"}
    assert run.passed("standard") == [True] and run.results[0].sizes == data.planted.sizes()
    assert type(models["tied (recommended)"]).__name__ == "WrittenTiedCrosscoder"
    assert (tmp_path / f"control-{control_key(cs)}" / "standard").is_dir()
    assert control_key(replace(cs, overlap=0.5)) != control_key(cs)  # a changed control never loads an old run
    assert control_key(replace(cs, seeds=(5, 6))) == control_key(cs)
    res = measure_control(models, data)
    m = res.matches["standard"]
    assert m["exclusive_pair"] and m["pair_cos"] > 0.9, m
    t = res.table().set_index(["crosscoder", "unit"])
    assert t.loc[("standard", "base-exclusive"), "recall"] > 0.9
    assert t.loc[("standard", "chat-exclusive"), "recall"] > 0.9
