"""The robustness grid of issue 15: settings along each axis, intervals, the smoke grid and the recommendation."""

import math

import pytest

from tiedlib.synthetic.grid import (
    ARCHS,
    AXES,
    GRID_SCALES,
    build_model,
    config_name,
    grid_settings,
    mean_interval,
    recommend,
    run_grid,
    summarize,
    vary,
)

BASE = GRID_SCALES["full"].base


def test_each_axis_moves_only_its_own_setting():
    s = BASE.synthetic
    assert vary(BASE, "superposition_1x").synthetic.d_model == s.n_features
    assert vary(BASE, "superposition_4x").synthetic.d_model == round(s.n_features / 4)
    assert vary(BASE, "dense").synthetic.fire_prob_max == pytest.approx(4 * s.fire_prob_max)
    assert vary(BASE, "shift_0.3").synthetic.timing_cos == 0.3
    heavy = vary(BASE, "timing_heavy").synthetic
    assert heavy.n_timing == 2 * s.n_timing and heavy.n_shared == s.n_shared // 2
    excl = vary(BASE, "exclusive_heavy").synthetic
    assert (excl.n_base_only, excl.n_shared, excl.n_timing) == (2 * s.n_base_only, s.n_shared // 2, s.n_timing)
    assert vary(BASE, "steps_double").n_steps == 2 * BASE.n_steps
    assert vary(BASE, "lognormal").synthetic == BASE.synthetic.__class__(**{**s.to_dict(), "magnitude": "lognormal"})
    names = [g.name for g in grid_settings("full")]
    assert names == ["base", *AXES]
    with pytest.raises(ValueError, match="unknown grid axis"):
        vary(BASE, "wider")
    with pytest.raises(ValueError, match="unknown grid scale"):
        grid_settings("huge")


def test_mean_interval_is_the_student_t_interval():
    mean, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(4.303 / math.sqrt(3)) and mean - lo == pytest.approx(hi - mean)
    assert mean_interval([0.5]) == (0.5, 0.5, 0.5)
    assert mean_interval([float("nan"), 1.0]) == (1.0, 1.0, 1.0)
    assert all(math.isnan(v) for v in mean_interval([float("nan")]))


def test_build_model_matches_parameter_counts_and_partitions():
    tied = build_model("tied", 8, 10, eta=1.5)
    std2 = build_model("standard_2x", 8, 10)
    # the equal-parameter-count comparison (weights; biases aside): 3 encoders + 1 decoder pair = 2 x (1 + 1)
    assert tied.cfg.eta == 1.5 and tied.W_enc.numel() + tied.W_dec.numel() == std2.W_enc.numel() + std2.W_dec.numel()
    assert build_model("designated_2x", 8, 10).cfg.n_designated_shared == 2
    ded = build_model("dedicated_2x", 8, 10)
    assert (ded.n_base_only, ded.n_chat_only) == (5, 5)
    assert type(build_model("tied_written", 8, 10)).__name__ == "WrittenTiedCrosscoder"
    auxk = build_model("tied_written_auxk", 8, 10, eta=1.5)
    assert type(auxk).__name__ == "WrittenTiedCrosscoder" and auxk.cfg.aux_k > 0
    assert auxk.tokens_since_fired.shape == (30,)
    assert build_model("tied_auxk", 8, 10, eta=2.0).cfg.aux_k == auxk.cfg.aux_k
    groups = build_model("tied_batchtopk_groups", 8, 10, k=3.0, k_groups=(1.5, 0.75, 0.75))
    assert groups.cfg.k_groups == (1.5, 0.75, 0.75) and groups.cfg.k == 3.0 and groups.threshold.shape == (3,)
    assert build_model("tied_batchtopk", 8, 10, k=3.0).cfg.k_groups is None
    with pytest.raises(ValueError, match="per-group k from the data"):
        build_model("tied_batchtopk_groups", 8, 10, k=3.0)
    with pytest.raises(ValueError, match="unknown grid architecture"):
        build_model("tied_magic", 8, 10)


def _row(setting, arch, eta, seed, tied, gap):
    return {"setting": setting, "axis": setting, "arch": arch, "eta": eta, "config": config_name(arch, eta),
            "seed": seed, "timing_one_index_strict": tied, "timing_one_index": tied, "ev_gap": gap,
            "explained_variance": 0.9 + gap, "dead_exclusive": 0.1}  # fmt: skip


def test_recommend_picks_the_config_that_passes_in_most_settings():
    rows = []
    for setting in ("a", "b", "c"):
        for seed in (0, 1, 2):
            rows += [_row(setting, "standard", None, seed, 0.1, 0.0), _row(setting, "tied", 2.0, seed, 0.4, 0.0),
                     # x: ties everywhere but costs 0.05 EV in c; y: passes everywhere; z: passes in a only
                     _row(setting, "x", 2.0, seed, 0.95, -0.05 if setting == "c" else 0.0),
                     _row(setting, "y", 1.5, seed, 0.88 + 0.01 * seed, -0.02),
                     _row(setting, "z", 2.0, seed, 0.99 if setting == "a" else 0.5, 0.0)]  # fmt: skip
    table = summarize(rows)
    y_a = table[(table["config"] == "y eta 1.5") & (table["setting"] == "a")].iloc[0]
    assert y_a["timing_one_index_strict"] == pytest.approx(0.89)
    assert y_a["timing_one_index_strict_lo"] < 0.89 < y_a["timing_one_index_strict_hi"]
    assert not table[(table["config"] == "x eta 2") & (table["setting"] == "c")].iloc[0]["passes"]
    rec = recommend(rows)
    assert rec.config == "y eta 1.5" and (rec.n_passing, rec.n_settings) == (3, 3) and rec.failing == []
    assert rec.write_up["timing_one_index_strict"][0] == pytest.approx(0.4)
    text = "\n".join(rec.lines())
    assert "y eta 1.5" in text and "3 of 3" in text and "write-up tied (eta 2)" in text
    worse = recommend([r for r in rows if r["config"] != "y eta 1.5"])
    assert worse.config == "x eta 2" and worse.failing == ["c"]  # 2 settings beat z's 1
    glued = rec.glue_values()
    assert glued["exp5_recommended_config"] == "y eta 1.5" and glued["exp5_recommended_passing"] == "3 of 3"
    assert glued["exp5_writeup_tied"] == "0.40 [0.40, 0.40]" and glued["exp5_recommended_ev_gap"].startswith("-0.020")
    assert glued["exp5_writeup_tied_strict"] == "0.40 [0.40, 0.40]"
    with pytest.raises(ValueError, match="no config"):
        recommend([r for r in rows if r["arch"] == "standard"])


def test_recommended_names_the_factory_config():
    from tiedlib.crosscoders.crosscoder import recommended_tied
    from tiedlib.synthetic.grid import RECOMMENDED

    model, factory = build_model(*RECOMMENDED[:1], 8, 10, eta=RECOMMENDED[1]), recommended_tied(8, 10)
    assert type(model) is type(factory) and model.cfg == factory.cfg


def test_smoke_grid_runs_every_setting_seed_and_config():
    scale = GRID_SCALES["smoke"]
    rows = run_grid("smoke")
    n_configs = sum(len(scale.etas.get(a, ARCHS[a].etas)) for a in scale.archs)
    assert len(rows) == len(grid_settings("smoke")) * len(scale.seeds) * n_configs
    for r in rows:
        assert 0 <= r["timing_one_index_strict"] <= 1 and 0 <= r["timing_one_index"] <= 1
        assert r["explained_variance"] <= 1
        if r["arch"] == "standard":
            assert r["ev_gap"] == 0
    # every (setting, seed) has its own data: the standard crosscoder's EV differs between seeds
    evs = {(r["setting"], r["seed"]): r["explained_variance"] for r in rows if r["arch"] == "standard"}
    assert len(set(evs.values())) == len(evs)
    with pytest.raises(ValueError, match="unknown grid architectures"):
        run_grid("smoke", archs=["nope"])
