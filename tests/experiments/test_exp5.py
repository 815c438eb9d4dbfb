"""tiedlib.tying_lab: picking the fix from a sweep, half balance, and the colour-triple helpers (hand-built cases)."""

import pytest
import torch

from tests.helpers import make_model
from tiedlib.experiments.exp5.tying_lab import (
    best_fix,
    colour_masks,
    colour_triple,
    half_balance,
    triple_firing,
    variant_config,
)


def _row(variant, eta, ev, one):
    return {"variant": variant, "eta": eta, "explained_variance": ev, "timing_one_index": one}


def test_best_fix_respects_the_ev_tolerance_and_skips_non_fixes():
    rows = [_row("standard", None, 0.90, 0.1), _row("tied", 2.0, 0.91, 0.9), _row("tied_equal", 2.0, 0.88, 0.8),
            _row("tied_max", 2.0, 0.85, 0.95), _row("tied_unit", 1.0, 0.89, 0.5)]  # fmt: skip
    fix = best_fix(rows, ev_tolerance=0.03)
    assert (fix["variant"], fix["eta"]) == ("tied_equal", 2.0)  # tied_max loses 0.05 EV, tied is excluded
    assert fix["candidates"] == 2 and fix["ev_cost"] == pytest.approx(0.02)
    assert best_fix(rows, ev_tolerance=0.06)["variant"] == "tied_max"
    none = best_fix(rows, ev_tolerance=-0.5)
    assert none["variant"] is None and none["candidates"] == 0
    # EV from the two per-model columns when the mean is absent
    two = [{"variant": "standard", "eta": None, "explained_variance_base": 0.8, "explained_variance_chat": 1.0,
            "timing_one_index": 0.1},
           {"variant": "tied_equal", "eta": 2.0, "explained_variance_base": 0.85, "explained_variance_chat": 0.93,
            "timing_one_index": 0.7}]  # fmt: skip
    assert best_fix(two)["variant"] == "tied_equal"
    with pytest.raises(ValueError, match="baseline"):
        best_fix(rows[1:])


def test_variant_config_maps_the_benchmark_variants():
    cfg = variant_config("tied_equal", 16, 40, eta=3.0)
    assert cfg.architecture == "tied" and cfg.decoder_norm == "equal" and cfg.eta == 3.0
    assert variant_config("tied_max", 16, 40).shared_penalty == "max"
    assert variant_config("standard_designated", 16, 40).n_designated_shared == 5
    assert variant_config("tied_batchtopk", 16, 40, k=4.0).k == 4.0
    with pytest.raises(ValueError, match="unknown variant"):
        variant_config("nope", 16, 40)


def test_half_balance_finds_shrunk_halves_and_their_shared_firings():
    model = make_model(architecture="tied", n_latents=4)
    with torch.no_grad():
        model.W_dec.copy_(torch.zeros(4, 2, 16))
        model.W_dec[:, 0, 0] = torch.tensor([1.0, 1.0, 0.1, 1.0])
        model.W_dec[:, 1, 1] = torch.tensor([1.0, 0.5, 1.0, 0.01])
    hb = half_balance(model, torch.tensor([10, 0, 5, 5]), below=0.3)
    torch.testing.assert_close(hb["ratio"], torch.tensor([1.0, 0.5, 0.1, 0.01]))
    assert hb["one_sided"].tolist() == [False, False, True, True]
    assert hb["one_sided_frac"] == pytest.approx(2 / 3)  # of the three triples whose shared group fires
    assert hb["shared_firings_one_sided"] == pytest.approx(0.5)
    assert "one_sided_frac" not in half_balance(model)


def test_colour_triple_picks_the_index_blue_green_on_both_halves():
    vocab, d = 10, 8
    W_U = torch.zeros(d, vocab)
    W_U[0, 3] = W_U[0, 4] = 1.0  # direction 0 reads as tokens 3 and 4 (" blue", " green")
    W_U[1, 5] = 1.0
    W_U[2, 6] = 1.0
    ids = {"blue": 3, "green": 4}
    W = torch.zeros(5, 2, d)
    W[:, :, 2] = 1.0  # every half reads as token 6 first ...
    W[1, 0, 0] = 2.0  # ... index 1: blue/green on the base half only
    W[3, :, 0] = 2.0  # index 3: on both halves
    W[4, 1, 0] = 2.0  # index 4: on the chat half only
    out = colour_triple(W, W_U, W_U, ids, top_k=3)
    assert out["triple"] == 3 and out["rank_base"] == 0 and out["rank_chat"] == 0
    assert out["hits_base"] == [1, 3] and out["hits_chat"] == [3, 4] and out["both"] == [3]
    assert out["single"] is False
    rate = torch.tensor([0.0, 0.5, 0.0, 0.0, 0.5])  # only indices 1 and 4 fire on colour tokens
    gated = colour_triple(W, W_U, W_U, ids, colour_rate=rate)
    assert gated["hits_base"] == [1] and gated["hits_chat"] == [4] and gated["both"] == []
    assert gated["triple"] in (1, 4)
    W[1, 0, 0] = W[4, 1, 0] = 0.0
    assert colour_triple(W, W_U, W_U, ids)["single"] is True


def test_colour_masks_and_triple_firing():
    seqs = [[1, 7, 8, 3], [1, 9, 4]]  # prefixes ending in blue (3) and green (4)
    token_ids = torch.tensor([7, 8, 3, 9, 4])
    doc = torch.tensor([0, 0, 0, 1, 1])
    pos = torch.tensor([1, 2, 3, 1, 2])
    m = colour_masks(token_ids, doc, pos, seqs, {"blue": 3, "green": 4})
    assert m["blue token"].tolist() == [False, False, True, False, False]
    assert m["before blue"].tolist() == [False, True, False, False, False]
    assert m["green token"].tolist() == [False, False, False, False, True]
    assert m["before green"].tolist() == [False, False, False, True, False]
    model = make_model(architecture="tied", n_latents=4)
    with torch.no_grad():
        model.W_enc.zero_()
        model.b_enc.fill_(-1.0)
        model.b_enc[0, 2] = 1.0  # triple 2's shared group always fires, its exclusive groups never
    rows = torch.randn(5, 2, 16)
    fire = triple_firing(model, rows, {**m, "none": torch.zeros(5, dtype=torch.bool)}, 2)
    assert fire["blue token"] == [1.0, 0.0, 0.0]
    assert all(v != v for v in fire["none"])
