"""The synthetic tying benchmark: ground truth, metrics on hand-built representations, and a tiny sweep."""

import pytest
import torch

from tests.helpers import make_model
from tiedlib.experiments.exp5.figures import plot_tying_benchmark
from tiedlib.experiments.exp5.tying import VARIANTS, BenchmarkSize, aggregate_rows, format_table, run_tying_benchmark
from tiedlib.synthetic.benchmark import (
    SyntheticConfig,
    coverage,
    decoder_cosines,
    evaluate_crosscoder,
    feature_match,
    group_usage,
    index_consistency,
    make_synthetic,
    model_coefficients,
    recovery,
    row_kind_masks,
)

TINY = SyntheticConfig(d_model=16, n_shared=6, n_timing=4, n_direction=3, n_base_only=3, n_chat_only=3, n_rows=4000,
                       fire_prob_min=0.05, fire_prob_max=0.1, noise_std=0.0)  # fmt: skip


def test_synthetic_data_follows_its_kinds():
    data = make_synthetic(TINY)
    n_feat = 19
    assert data.x.shape == (4000, 2, 16) and data.acts.shape == (4000, 2, n_feat)
    assert data.directions.shape == (n_feat, 2, 16) and len(data.kinds) == n_feat
    torch.testing.assert_close(data.directions.norm(dim=-1), torch.ones(n_feat, 2))
    torch.testing.assert_close(data.x, torch.einsum("nmf,fmd->nmd", data.acts, data.directions))  # noise_std = 0
    a, ids = data.acts, data.kind_ids
    assert torch.equal(a[:, 0, ids("shared")], a[:, 1, ids("shared")])
    assert torch.equal(a[:, 0, ids("direction")], a[:, 1, ids("direction")])
    assert a[:, 1, ids("base_only")].abs().sum() == 0 and a[:, 0, ids("base_only")].sum() > 0
    assert a[:, 0, ids("chat_only")].abs().sum() == 0 and a[:, 1, ids("chat_only")].sum() > 0
    masks = row_kind_masks(a[:, :, ids("timing")])
    assert (masks.sum(dim=1) > 0).all()  # every timing concept fires in both, in base alone and in chat alone
    cos = (data.directions[:, 0] * data.directions[:, 1]).sum(-1)
    torch.testing.assert_close(cos[ids("direction")], torch.full((3,), 0.5))
    torch.testing.assert_close(cos[ids("timing")], torch.ones(4))
    rate = (a > 0).any(dim=1).float().mean(0)
    assert torch.all((rate > 0.03) & (rate < 0.13))  # fire_prob in [0.05, 0.1], 4000 rows


def test_dictionary_is_seeded_and_rows_can_be_held_out():
    a, b = make_synthetic(TINY), make_synthetic(TINY)
    assert torch.equal(a.x, b.x)
    held = make_synthetic(TINY, n_rows=100, row_seed=7)
    assert torch.equal(held.directions, a.directions) and held.x.shape[0] == 100
    assert not torch.equal(held.x, a.x[:100])
    with pytest.raises(ValueError, match="fire_prob"):
        SyntheticConfig(fire_prob_min=0.5, fire_prob_max=0.1)


def _oracle_writes(acts, n_feat, split):
    """Index j writes feature j in every model it fires in; with ``split``, base-alone and chat-alone firings of the
    timing features are written by two other indices (a standard crosscoder's shared + two exclusive latents)."""
    b, c = acts[:, 0] > 0, acts[:, 1] > 0
    writes = torch.zeros(acts.shape[0], 2, 3 * n_feat, dtype=torch.bool)
    if not split:
        writes[:, 0, :n_feat], writes[:, 1, :n_feat] = b, c
        return writes
    writes[:, 0, :n_feat], writes[:, 1, :n_feat] = b & c, b & c
    writes[:, 0, n_feat : 2 * n_feat] = b & ~c
    writes[:, 1, 2 * n_feat :] = ~b & c
    return writes


@pytest.mark.parametrize("split", [False, True])
def test_index_consistency_tells_one_index_from_a_split(split):
    data = make_synthetic(TINY)
    tids = data.kind_ids("timing")
    n_feat = len(data.kinds)
    W_dec = torch.cat([data.directions, data.directions, data.directions])  # three candidate indices per feature
    if split:
        W_dec[n_feat : 2 * n_feat, 1] *= 0.01  # base-exclusive copies: chat half absent
        W_dec[2 * n_feat :, 0] *= 0.01
    cos = decoder_cosines(W_dec, data.directions)
    rec = recovery(cos, data.kinds)
    torch.testing.assert_close(rec["recovery"], torch.ones(n_feat))
    match = feature_match(cos, data.kinds)
    best = match.argmax(dim=0)
    assert torch.equal(best[tids], tids)  # ties go to the first (the full) copy
    masks = row_kind_masks(data.acts[:, :, tids])
    cov = coverage(_oracle_writes(data.acts, n_feat, split)[:, :, :], masks)
    ic = index_consistency(cov, best[tids], match[:, tids])
    if split:
        torch.testing.assert_close(ic["best_coverage"], torch.tensor([[1.0, 0.0, 0.0]]).expand(4, 3))
        assert not ic["one_index"].any() and torch.equal(ic["n_indices"], torch.full((4,), 3))
    else:
        torch.testing.assert_close(ic["consistency"], torch.ones(4))
        assert ic["one_index"].all() and torch.equal(ic["n_indices"], torch.ones(4, dtype=torch.long))


def test_model_coefficients_and_group_usage():
    tied = make_model(architecture="tied", n_latents=4)
    f = torch.zeros(2, 3, 4)
    f[0, 0, 1], f[0, 1, 1], f[1, 2, 3] = 1.0, 2.0, 5.0
    coeffs = model_coefficients(tied, f)
    assert coeffs[0, 0, 1] == 3.0 and coeffs[0, 1, 1] == 1.0 and coeffs[1, 1, 3] == 5.0 and coeffs[1, 0, 3] == 0
    usage = group_usage(tied, f)
    assert (usage["l0_shared"], usage["l0_base"], usage["l0_chat"], usage["l0"]) == (0.5, 0.5, 0.5, 1.5)
    assert usage["dead_shared"] == 0.75 and usage["dead_frac"] == 9 / 12
    std = make_model(n_latents=3)
    with torch.no_grad():
        std.W_dec[0, 1] *= 0.01  # base-exclusive
        std.W_dec[2, 0] *= 0.01  # chat-exclusive
    usage = group_usage(std, torch.tensor([[1.0, 1.0, 0.0]]))
    assert (usage["l0_base"], usage["l0_shared"], usage["l0_chat"], usage["dead_chat"]) == (1.0, 1.0, 0.0, 1.0)


def test_tiny_sweep_returns_plain_rows_for_every_variant_and_eta():
    size = BenchmarkSize(TINY, n_latents=24, n_steps=15, batch_size=128, n_eval=512)
    rows = run_tying_benchmark(size, etas=(1.0, 2.0), variants=["standard", "tied_unit", "tied_batchtopk"])
    assert [(r["variant"], r["eta"]) for r in rows] == [("standard", None), ("tied_unit", 1.0), ("tied_unit", 2.0),
                                                        ("tied_batchtopk", None)]  # fmt: skip
    for r in rows:
        for key in ("explained_variance_base", "explained_variance_chat", "l0_shared", "l0_base", "dead_frac",
                    "recovery_timing", "timing_consistency", "timing_one_index", "seconds"):  # fmt: skip
            assert isinstance(r[key], float), key
        assert set(r["per_kind"]) == {"shared", "timing", "direction", "base_only", "chat_only"}
        assert len(r["per_feature"]["timing"]["coverage"]) == 4
    groups = [len(r["per_feature"]["timing"]["group_rates"][0][0]) for r in rows]
    assert groups == [1, 3, 3, 3]
    table = format_table(rows)
    assert table.splitlines()[0].startswith("variant") and len(table.splitlines()) == 5
    with pytest.raises(ValueError, match="unknown variants"):
        run_tying_benchmark(size, variants=["tied_magic"])
    assert set(VARIANTS) >= {"standard", "standard_designated", "tied", "tied_equal", "tied_unit", "tied_max"}


def test_evaluate_is_side_effect_free_for_batchtopk():
    model = make_model(architecture="tied", d_model=16, n_latents=8, activation="batchtopk", k=2.0)
    data = make_synthetic(TINY, n_rows=256)
    before = float(model.threshold)
    res = evaluate_crosscoder(model, data)
    assert model.training and float(model.threshold) == before
    assert 0 <= res["timing_one_index"] <= 1


def test_aggregate_rows_and_plot():
    rows = [
        {"variant": "tied", "eta": 2.0, "ev": 0.8, "seconds": 1.0},
        {"variant": "tied", "eta": 2.0, "ev": 0.6, "seconds": 3.0, "extra": 1.0},
        {"variant": "standard", "eta": None, "ev": 0.7, "seconds": 2.0},
    ]
    agg = aggregate_rows(rows)
    assert [(a["variant"], a["eta"], a["n"]) for a in agg] == [("tied", 2.0, 2), ("standard", None, 1)]
    assert agg[0]["ev"] == pytest.approx(0.7) and agg[0]["ev_std"] == pytest.approx(0.1414, abs=1e-3)
    assert "extra" not in agg[0] and agg[1]["ev_std"] == 0.0
    import matplotlib

    matplotlib.use("Agg")
    fig = plot_tying_benchmark(agg, metrics=("ev", "seconds"))
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "ev"
