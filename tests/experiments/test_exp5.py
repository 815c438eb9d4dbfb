"""tiedlib.experiments.exp5 (notebook 05): settings, the sweep and its fix, the lab-pair and colour-toy pipelines, the
summary and the figures, on hand-built cases and tiny random crosscoders."""

import warnings
from dataclasses import replace
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch

from tests.helpers import make_model, random_rows
from tiedlib.activations.batches import InMemoryBatches
from tiedlib.activations.collect import PairActivations
from tiedlib.activations.harvest import HarvestBatch
from tiedlib.analysis.contexts import TokenSample
from tiedlib.analysis.firing import FiringCounts, HeldOutMetrics, firing_ratios
from tiedlib.config import BASE, BASE_ONLY, CHAT, CHAT_ONLY, SHARED
from tiedlib.experiments import exp5
from tiedlib.experiments.exp5.colour_toy import colour_train_config
from tiedlib.experiments.exp5.lab_pair import lab_variants
from tiedlib.experiments.exp5.sweep import TABLE_COLUMNS, best_per_variant, row_name
from tiedlib.experiments.exp5.tying import BenchmarkSize, run_tying_benchmark
from tiedlib.experiments.exp5.tying_lab import (
    best_fix,
    colour_masks,
    colour_triple,
    half_balance,
    triple_firing,
    variant_config,
)
from tiedlib.pairs.colours import COLOUR_TOY
from tiedlib.synthetic.benchmark import SyntheticConfig

SMOKE = exp5.TABLE["smoke"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---- tying_lab helpers -----------------------------------------------------------------------------------------------
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


# ---- presets ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["smoke", "tiny", "paper"])
def test_presets_use_the_shared_colour_toy_of_each_scale(scale):
    s = exp5.TABLE[scale]
    assert s.colour == COLOUR_TOY[scale]  # the fine-tunes notebook 02 caches
    assert s.colour_n_steps == s.colour_train_tokens // s.colour_batch_size
    assert s.colour_eta == 2.0 and s.colour_top_k == 3 and s.colour_fold_final_norm


def test_preset_colour_crosscoder_sizes():
    assert (SMOKE.colour_n_latents, SMOKE.colour_batch_size, SMOKE.colour_lr) == (128, 256, 1e-3)
    tiny = exp5.TABLE["tiny"]
    assert (tiny.colour_n_latents, tiny.colour_batch_size, tiny.colour_lr, tiny.colour_n_steps) == (256, 512, 5e-4, 195)
    assert replace(tiny, colour_train_tokens=10).colour_n_steps == 1


# ---- section 1: the sweep --------------------------------------------------------------------------------------------
MICRO = BenchmarkSize(
    SyntheticConfig(d_model=8, n_shared=2, n_timing=2, n_direction=1, n_base_only=1, n_chat_only=1, n_rows=256,
                    fire_prob_min=0.05, fire_prob_max=0.1, noise_std=0.0),
    n_latents=8, n_steps=3, batch_size=64, n_eval=128,
)  # fmt: skip


def test_run_benchmark_runs_each_seed_and_aggregates():
    settings = replace(SMOKE, bench_size=MICRO, bench_seeds=(0, 1), bench_variants=("standard", "tied"),
                       bench_etas=(1.0, 2.0))  # fmt: skip
    bench = exp5.run_benchmark(settings)
    assert [(r["variant"], r["eta"]) for r in bench.rows] == [("standard", None), ("tied", 1.0), ("tied", 2.0)] * 2
    assert [r["n"] for r in bench.agg] == [2, 2, 2]
    # seed 1's rows are exactly what run_tying_benchmark gives for seed 1 alone
    alone = run_tying_benchmark(MICRO, etas=(1.0, 2.0), variants=("standard", "tied"), seed=1)
    assert [r["explained_variance"] for r in bench.rows[3:]] == [r["explained_variance"] for r in alone]
    assert bench.summary().startswith("6 models (2 seed(s)), 8-d rows, 8 latents / triples, 3 steps each; ")
    table = bench.table()
    assert list(table.columns) == list(TABLE_COLUMNS) and len(table) == 3
    rec = bench.recovery_table()
    assert list(rec.columns) == ["variant", "eta", "shared", "timing", "direction", "base_only", "chat_only"]
    assert rec["shared"].tolist() == [r["recovery_shared"] for r in bench.agg]


def _agg_rows():
    return [{"variant": "standard", "eta": None, "explained_variance": 0.9, "timing_one_index": 0.25,
             "one_sided_frac": 0.0, "recovery_shared": 0.8, "recovery_timing": 0.7, "seconds": 1.0},
            {"variant": "tied", "eta": 2.0, "explained_variance": 0.91, "timing_one_index": 0.5, "one_sided_frac": 0.4,
             "recovery_shared": 0.9, "recovery_timing": 0.6, "seconds": 2.0},
            {"variant": "tied", "eta": 1.0, "explained_variance": 0.92, "timing_one_index": 0.3, "one_sided_frac": 0.2,
             "recovery_shared": 0.9, "recovery_timing": 0.6, "seconds": 2.0},
            {"variant": "tied_equal", "eta": 1.0, "explained_variance": 0.89, "timing_one_index": 0.75,
             "one_sided_frac": 0.0, "recovery_shared": 0.85, "recovery_timing": 0.8, "seconds": 2.0},
            {"variant": "tied_equal", "eta": 2.0, "explained_variance": 0.85, "timing_one_index": 1.0,
             "one_sided_frac": 0.0, "recovery_shared": 0.85, "recovery_timing": 0.8, "seconds": 2.0}]  # fmt: skip


def test_row_name_and_best_per_variant():
    agg = _agg_rows()
    assert row_name(agg[0]) == "standard" and row_name(agg[3]) == "tied_equal (eta 1)"
    best = best_per_variant(agg)
    assert list(best) == ["tied_equal"] and best["tied_equal"]["eta"] == 2.0
    tie = [{**agg[3], "timing_one_index": 1.0}, agg[4]]
    assert best_per_variant(tie)["tied_equal"]["eta"] == 1.0  # the first of equal rows


def test_benchmark_result_tables_from_hand_made_rows():
    agg = _agg_rows()[:2]
    bench = exp5.BenchmarkResult(size=MICRO, seeds=(0,), rows=agg, agg=agg)
    assert bench.summary() == "2 models (1 seed(s)), 8-d rows, 8 latents / triples, 3 steps each; 3 s of training"
    table = bench.table(("variant", "eta", "l0_base"))
    assert table["variant"].tolist() == ["standard", "tied"] and table["l0_base"].isna().all()
    rec = bench.recovery_table()
    assert list(rec.columns) == ["variant", "eta", "shared", "timing"]  # the kinds the rows have
    assert rec["timing"].tolist() == [0.7, 0.6]


def test_choose_fix_lines():
    fix = exp5.choose_fix(_agg_rows(), ev_tolerance=0.03)
    assert [r["eta"] for r in fix.tied] == [1.0, 2.0]
    assert fix.fix["variant"] == "tied_equal" and fix.fix["eta"] == 1.0  # eta 2 loses 0.05 EV
    assert fix.lines() == [
        "standard: timing_one_index 0.25, EV 0.900",
        "write-up tied: eta 1 -> 0.30 (one-sided 0.20), eta 2 -> 0.50 (one-sided 0.40)",
        "best fix: tied_equal (eta 1.0): timing_one_index 0.75, EV 0.890 (standard 0.900; 1 variant/eta rows "
        "within 0.03)",
    ]
    assert exp5.choose_fix(_agg_rows(), ev_tolerance=0.0).lines()[-1] == (
        "no variant stays within 0.0 EV of the standard crosscoder")
    with pytest.raises(ValueError, match="no 'standard' row"):
        exp5.choose_fix(_agg_rows()[1:])


# ---- section 2: the lab pair -----------------------------------------------------------------------------------------
LAB = replace(SMOKE, n_latents=8, n_steps=3, batch_size=64, lr=1e-3, log_every=1, variant="tied_equal")


def _lab_data(rows):
    return exp5.LabData(pair_name="toy", layer=2, d_model=16, n_sequences=7,
                        make_data=lambda: InMemoryBatches(rows, 64, seed=0, epochs=None))  # fmt: skip


def test_train_lab_crosscoders_trains_both_variants_in_their_folders(tmp_path):
    rows = random_rows(256)
    run = exp5.train_lab_crosscoders(_lab_data(rows), LAB, tmp_path)
    assert run.variants == lab_variants(LAB) == {"tied": "tied", "fix": "tied_equal"}
    assert (tmp_path / "tied" / "model.safetensors").exists() and (tmp_path / "tied_equal").is_dir()
    assert run.models["fix"].cfg.decoder_norm == "equal" and run.models["tied"].cfg.architecture == "tied"
    assert run.models["tied"].cfg.n_latents == 8 and run.models["fix"].cfg.eta == LAB.eta
    assert not run.models["tied"].training
    assert run.summary() == ("pair toy, layer 2, d_model 16; 7 training sequences; 8 triples; tied = write-up, "
                             "fix = tied_equal")
    again = exp5.train_lab_crosscoders(_lab_data(rows), LAB, tmp_path)  # loaded, not retrained
    torch.testing.assert_close(again.models["fix"].W_dec, run.models["fix"].W_dec)


def _sample(acts, n_docs, name, docs=None):
    n = acts.shape[0]
    per = n // n_docs
    return TokenSample(acts=acts, token_ids=torch.arange(n) % 11, doc_index=torch.arange(n) // per,
                       position=torch.arange(n) % per, sequences=[list(range(per))] * n_docs, name=name,
                       docs=docs)  # fmt: skip


def _lab_run(models):
    data = exp5.LabData(pair_name="toy", layer=2, d_model=16, n_sequences=4, make_data=lambda: iter(()))
    return exp5.LabRun(data=data, n_latents=models["tied"].cfg.n_latents, eta=2.0, variants=lab_variants(LAB),
                       models=models, logs={})  # fmt: skip


def test_evaluate_lab_counts_every_token_and_reports_the_loophole():
    torch.manual_seed(0)
    models = {"tied": make_model(architecture="tied", n_latents=8),
              "fix": make_model(architecture="tied", n_latents=8, decoder_norm="equal")}  # fmt: skip
    web, chat = _sample(random_rows(40, seed=1), 4, "web"), _sample(random_rows(30, seed=2), 3, "chat")
    ev = exp5.evaluate_lab(_lab_run(models), web, chat, LAB)
    assert ev.held["tied"].firing.n_tokens == 70
    hb = half_balance(models["fix"], ev.held["fix"].firing.counts[SHARED], below=LAB.one_sided_below)
    assert ev.balance["fix"]["one_sided_frac"] == hb["one_sided_frac"]
    table = ev.table()
    assert list(table.columns) == ["tied (tied)", "fix (tied_equal)"]
    assert table.loc["n_tokens", "tied (tied)"] == 70
    assert table.loc["shared_firings_one_sided", "fix (tied_equal)"] == hb["shared_firings_one_sided"]
    lines = ev.lines()
    assert len(lines) == 2 and lines[1].startswith("Lab pair, fix (tied_equal, eta 2): EV base ")
    assert "refusal" not in lines[0] and lines[0].endswith("of the shared firings.")
    refusal = {"tied": {"triple": 5, "joint_auroc": 0.8125, "exists": True}}
    assert ev.lines(refusal)[0].endswith("; refusal triple 5 (joint AUROC 0.812: exists).")


def _held(ev_base, ev_chat, l0, counts, n_tokens):
    return HeldOutMetrics(explained_variance=torch.tensor([ev_base, ev_chat]), l0=torch.tensor(l0, dtype=torch.float64),
                          firing=FiringCounts(torch.tensor(counts), n_tokens))  # fmt: skip


def test_ratio_points_and_summary():
    # triples: 0 chat-sided, 1 base-sided, 2 balanced, 3 never shared, 4 rare
    counts = torch.tensor([[10, 10, 10, 0, 1], [1, 30, 10, 5, 0], [30, 1, 10, 5, 0]])  # shared, base, chat
    ratios = firing_ratios(FiringCounts(counts, 1000), min_frequency=0.005)
    pts = exp5.ratio_points(ratios, k=1)
    assert pts["index"].tolist() == [0, 1, 2]
    assert pts["corner"].tolist() == ["top-left", "bottom-right", "other"]
    assert pts["chat_over_shared"].tolist() == [3.0, 0.1, 1.0]
    assert pts.attrs["corners"] == {"top-left": [0], "bottom-right": [1]}
    assert exp5.ratio_summary("tied", ratios) == "tied: 3 triples plotted; median base/shared 1.000, chat/shared 1.000"
    empty = firing_ratios(FiringCounts(torch.zeros(3, 2, dtype=torch.long), 10))
    assert exp5.ratio_summary("x", empty) == "x: 0 triples plotted; median base/shared nan, chat/shared nan"
    assert len(exp5.ratio_points(empty)) == 0


def _labelled_sample(marker_model, marker_dim, labels, name):
    """Two documents of 5 tokens; ``labels[concept]`` lists 10 booleans. The marker dimension of one model is 1 on
    the tokens of the first concept that is present."""
    docs = [SimpleNamespace(input_ids=list(range(5)), labels={c: v[5 * d: 5 * d + 5] for c, v in labels.items()})
            for d in range(2)]  # fmt: skip
    acts = torch.zeros(10, 2, 16)
    acts[:, marker_model, marker_dim] = torch.tensor([float(any(v[i] for v in labels.values())) for i in range(10)])
    return TokenSample(acts=acts, token_ids=torch.arange(10), doc_index=torch.arange(10) // 5,
                       position=torch.arange(10) % 5, sequences=[list(range(5))] * 2, name=name, docs=docs)


def test_concept_check_finds_the_planted_refusal_triple():
    tied = make_model(architecture="tied", n_latents=4)
    fix = make_model(architecture="tied", n_latents=4)
    with torch.no_grad():
        for m in (tied, fix):
            m.W_enc.zero_()
            m.b_enc.zero_()
        tied.W_enc[CHAT, 0, CHAT_ONLY, 1] = 1.0  # triple 1's chat part reads chat dim 0 (refusals)
        tied.W_enc[BASE, 1, BASE_ONLY, 1] = 1.0  # its base part reads base dim 1 (web disclaimers)
    off, on = [False] * 10, [False, True, True, False, False, False, False, False, True, False]
    chat = _labelled_sample(CHAT, 0, {"refusal": on, "disclaimer": off}, "chat")
    web = _labelled_sample(BASE, 1, {"refusal": off, "disclaimer": on}, "web")
    ev = exp5.LabEval(run=_lab_run({"tied": tied, "fix": fix}), web=web, chat=chat, held={}, balance={})
    check = exp5.concept_check(ev, threshold=0.75, concepts=["refusal", "disclaimer"])
    r = check.refusal["tied"]
    assert (r["triple"], r["base_concept"], r["exists"]) == (1, "disclaimer", True)
    assert r["chat_auroc"] == pytest.approx(1.0) and r["base_auroc"] == pytest.approx(1.0)
    assert check.refusal["fix"]["exists"] is False and check.refusal["fix"]["joint_auroc"] == pytest.approx(0.5)
    assert check.columns == ["shared / web", "base / web", "chat / web", "shared / chat", "base / chat", "chat / chat"]
    assert check.best["tied"].shape == (2, 6)
    assert check.best["tied"][0, 5] == pytest.approx(1.0)  # refusal, chat group on chat data
    assert torch.isnan(check.best["tied"][1, 5])  # no disclaimer in the chat sample
    mean = check.mean_best("tied")
    assert mean["chat / chat"] == pytest.approx(0.75)  # (1.0 + NaN as 0.5) / 2
    assert list(check.table().columns) == ["tied", "fix"]
    assert check.lines()[0] == ("tied: refusal triple 1: chat part AUROC 1.000 on chat refusals, base part 1.000 on "
                                "web disclaimers -> exists at AUROC >= 0.75")
    unlabelled = exp5.LabEval(run=ev.run, web=replace(web, docs=None), chat=chat, held={}, balance={})
    assert exp5.concept_check(unlabelled) is None


# ---- section 3: the colour toy ---------------------------------------------------------------------------------------
def test_finetune_lines():
    toy = SimpleNamespace(info={"no-swap": {"cached": True, "losses": [2.0, 1.5, 0.25]},
                                "half-swap": {"cached": False, "losses": [2.5, 0.75]}})  # fmt: skip
    assert exp5.finetune_lines(toy) == ["no-swap: loaded from cache, loss 2.000 -> 0.250",
                                        "half-swap: fine-tuned, loss 2.500 -> 0.750"]


def _pair_acts(rows):
    n = rows.shape[0]
    h = HarvestBatch(rows, torch.zeros(n, dtype=torch.long), torch.arange(n) // 150, torch.arange(n) % 150)
    return PairActivations(h, torch.tensor([1.5, 0.5]))


def test_train_colour_crosscoders(tmp_path):
    settings = replace(SMOKE, colour_n_latents=8, colour_train_tokens=192, colour_batch_size=64, colour_eta=3.0)
    cfg = colour_train_config(settings)
    assert (cfg.n_steps, cfg.log_every, cfg.lr, cfg.device) == (3, 1, 1e-3, "cpu")
    acts = _pair_acts(random_rows(300))
    run = exp5.train_colour_crosscoders([[1, 2], [3]], acts, settings, tmp_path, {"tied": "tied", "fix": "tied_max"})
    assert (tmp_path / "colour" / "tied" / "model.safetensors").exists()
    assert (tmp_path / "colour" / "tied_max" / "model.safetensors").exists()
    fix = run.models["fix"].cfg
    assert fix.shared_penalty == "max" and fix.eta == 3.0 and fix.n_latents == 8
    assert fix.norm_factors == pytest.approx([1.5, 0.5])  # the activations' own factors travel into the config
    assert run.summary() == "300 tokens from 2 prefixes; 3 steps, 8 triples"


def _colour_run():
    """Two prefixes ending in blue (3) and green (4); triple 2 decodes to blue/green on both halves and its shared
    group fires exactly on the colour tokens (base dimension 3 is 1 there)."""
    seqs = [[1, 7, 8, 3], [1, 9, 4]]
    token_ids = torch.tensor([7, 8, 3, 9, 4])
    acts = torch.zeros(5, 2, 8)
    acts[[2, 4], BASE, 3] = 1.0
    h = HarvestBatch(acts, token_ids, torch.tensor([0, 0, 0, 1, 1]), torch.tensor([1, 2, 3, 1, 2]))
    model = make_model(architecture="tied", n_latents=4, d_model=8)
    with torch.no_grad():
        model.W_dec.zero_()
        model.W_dec[:, :, 2] = 1.0  # every half reads as token 6 first ...
        model.W_dec[2, :, 0] = 2.0  # ... triple 2 as blue and green
        model.W_enc.zero_()
        model.b_enc.fill_(-0.5)
        model.W_enc[BASE, 3, SHARED, 2] = 1.0
    run = exp5.ColourRun(seqs=seqs, acts=PairActivations(h, torch.ones(2)), variants={"tied": "tied"},
                         models={"tied": model}, train_cfg=colour_train_config(SMOKE), n_latents=4)  # fmt: skip
    W_U = torch.zeros(8, 10)
    W_U[0, 3] = W_U[0, 4] = 1.0
    W_U[2, 6] = 1.0
    return run, {"no-swap": W_U, "half-swap": W_U}


def test_find_colour_triples_reads_the_planted_triple():
    run, W_U = _colour_run()
    check = exp5.find_colour_triples(run, W_U, {"blue": 3, "green": 4}, SMOKE)
    ct = check.result["tied"]
    assert (ct["triple"], ct["both"], ct["single"], ct["ratio"]) == (2, [2], True, 1.0)
    assert check.fire["tied"]["blue token"] == [1.0, 0.0, 0.0]
    assert check.fire["tied"]["before green"] == [0.0, 0.0, 0.0]
    assert check.title("tied") == "tied (tied): blue/green triple 2"
    assert check.lines() == ["tied (tied): triple 2 (colour ranks: no-swap half 0, half-swap half 0; decoder half "
                             "ratio 1.00); blue/green on the no-swap half at [2], half-swap half at [2], both at [2] "
                             "-> one tied triple: True"]
    assert check.summary_lines() == ["Colour toy, tied (tied): blue/green triple 2 (colour ranks 0/0), blue/green on "
                                     "both halves at 1 index(es), one tied triple: True; on blue tokens its "
                                     "shared/no-swap/half-swap groups fire 1.00/0.00/0.00, on green tokens "
                                     "1.00/0.00/0.00."]
    table = check.table()
    assert table.shape == (4, 3) and table.loc["green token", ("tied", "shared")] == 1.0
    assert list(table.columns.get_level_values(1)) == list(exp5.COLOUR_GROUPS)
    # a colour rate threshold above every rate leaves no live index: the pick falls back to all indices
    assert exp5.find_colour_triples(run, W_U, {"blue": 3, "green": 4}, replace(SMOKE, min_colour_rate=1.1)).result[
        "tied"]["both"] == []


# ---- summary ---------------------------------------------------------------------------------------------------------
def test_summary_lines():
    agg = _agg_rows()
    bench = exp5.BenchmarkResult(size=MICRO, seeds=(0,), rows=agg, agg=agg)
    fix = exp5.choose_fix(agg, ev_tolerance=0.03)
    models = {"tied": make_model(architecture="tied", n_latents=4), "fix": make_model(architecture="tied", n_latents=4)}
    held = {label: _held(0.5, 0.25, [1.0, 0.5, 0.25], [[1, 0, 0, 0]] * 3, 10) for label in models}
    balance = {label: {"one_sided_frac": 0.5, "shared_firings_one_sided": 0.25} for label in models}
    lab = exp5.LabEval(run=_lab_run(models), web=None, chat=None, held=held, balance=balance)
    colour_run, W_U = _colour_run()
    colour = exp5.find_colour_triples(colour_run, W_U, {"blue": 3, "green": 4}, SMOKE)
    lines = exp5.summary_lines("smoke", bench, fix, lab, None, colour_run, colour)
    assert lines[0] == ("Scale: smoke. Synthetic benchmark: 1 seed(s), 8-d rows, 8 latents/triples, 3 steps; lab pair "
                        "toy (layer 2), 4 triples; colour toy on fine-tunes of the toy base model, 4 triples.")
    assert lines[1] == ("Timing-shifted concepts kept on one index (timing_one_index): standard 0.25 (EV 0.900); "
                        "write-up tied eta 1 0.30 (one-sided 0.20), eta 2 0.50 (one-sided 0.40); best eta of each "
                        "other variant: tied_equal (eta 2) 1.00 (EV 0.850).")
    assert lines[2] == ("Best fix within 0.03 EV of the standard crosscoder: tied_equal (eta 1) with timing_one_index "
                        "0.75 at an EV cost of 0.010.")
    assert lines[3] == ("Lab pair, tied (tied, eta 2): EV base 0.500 / chat 0.250; L0 shared/base/chat 1.00/0.50/0.25; "
                        "one-sided triples among those whose shared group fires 0.50, carrying 0.25 of the shared "
                        "firings.")
    assert lines[5:] == colour.summary_lines() and len(lines) == 6
    grid = _grid_result()
    with_grid = exp5.summary_lines("smoke", bench, fix, lab, None, colour_run, colour, grid=grid)
    assert with_grid[3].startswith("Robustness grid (issue 15, grid 'smoke': 12 crosscoders = 2 settings x 2 configs")
    assert "recommended: tied eta 1: meets the goal (tied >= 0.85, EV gap >= -0.03) in 1 of 2" in with_grid[3]
    assert with_grid[:3] + with_grid[4:] == lines


# ---- issue 15: the robustness grid in the notebook ------------------------------------------------------------------
def _grid_rows():
    rows = []
    for setting in ("base", "dense"):
        for seed in (0, 1, 2):
            for arch, eta, tied, gap in (("standard", None, 0.0, 0.0), ("tied", 1.0, 0.9 + 0.01 * seed, 0.02)):
                rows.append({"setting": setting, "axis": setting, "arch": arch, "eta": eta, "seed": seed,
                             "config": arch if eta is None else f"{arch} eta {eta:g}", "seconds": 1.0,
                             "timing_one_index": tied if setting == "base" else tied - 0.2,
                             "timing_one_index_strict": tied - 0.3, "ev_gap": gap, "explained_variance": 0.9 + gap,
                             "dead_exclusive": 0.0})  # fmt: skip
    return rows


def _grid_result():
    from tiedlib.synthetic.grid import recommend, summarize

    rows = _grid_rows()
    return exp5.GridResult(scale="smoke", rows=rows, table=summarize(rows), recommendation=recommend(rows))


def test_run_robustness_runs_the_settings_grid_and_recommends(monkeypatch):
    from tiedlib.experiments.exp5 import sweep

    calls = []
    monkeypatch.setattr(sweep, "run_grid", lambda scale, n_threads=1: calls.append(scale) or _grid_rows())
    grid = exp5.run_robustness(SMOKE)
    assert calls == ["smoke"] and grid.scale == "smoke"
    assert grid.recommendation.config == "tied eta 1" and grid.recommendation.failing == ["dense"]
    assert grid.recommendation.worst_strict[0] == "base"
    assert grid.summary() == "grid 'smoke': 12 crosscoders = 2 settings x 2 configs x 3 seeds; 12 s of training"
    wide = grid.wide()
    assert list(wide.columns) == ["base", "dense"] and wide.loc["tied eta 1", "base"] == pytest.approx(0.91)
    assert grid.limits()[-1] == "settings passed per config: standard 0, tied eta 1 1"


def test_plot_grid_annotates_mean_and_interval():
    fig = exp5.plot_grid(_grid_result().table)
    assert len(fig.axes) == 6  # three heatmaps and their colour bars
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 4 and any(t.startswith("0.91\n[") for t in texts)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles == ["timing concepts on one index", "... strict count", "EV minus standard's"]


# ---- figures and the notebook's setup --------------------------------------------------------------------------------
def test_firing_ratio_scatter_labels_the_corners():
    counts = torch.tensor([[10, 10, 10, 0, 1], [1, 30, 10, 5, 0], [30, 1, 10, 5, 0]])
    fig = exp5.firing_ratio_scatter(firing_ratios(FiringCounts(counts, 1000), min_frequency=0.005), k=1,
                                    title="toy")  # fmt: skip
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "1"]
    assert ax.get_title() == "toy\n3 triples; not shown: 1 rare, 1 never shared"
    assert sum(len(c.get_offsets()) for c in ax.collections) == 3


def test_auroc_heatmap_annotates_finite_cells():
    values = torch.tensor([[0.5, 1.0], [float("nan"), 0.25]])
    fig = exp5.auroc_heatmap(values, ["refusal", "disclaimer"], ["a", "b"], title="t")
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0.25", "0.50", "1.00"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["refusal", "disclaimer"]


def test_triple_firing_bars_draws_one_bar_per_mask_and_group():
    fire = {"blue token": [1.0, 0.0, 0.5], "before blue": [0.25, 0.0, 0.0]}
    fig = exp5.triple_firing_bars(fire, groups=exp5.COLOUR_GROUPS, title="x")
    heights = sorted(round(p.get_height(), 3) for p in fig.axes[0].patches if p.get_width() > 0)
    assert heights == sorted([1.0, 0.0, 0.5, 0.25, 0.0, 0.0])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(exp5.COLOUR_GROUPS)


def test_plot_tying_benchmark_draws_one_panel_per_metric():
    fig = exp5.plot_tying_benchmark(_agg_rows(), metrics=("timing_one_index", "one_sided_frac"))
    assert [ax.get_title() for ax in fig.axes] == ["timing_one_index", "one_sided_frac"]


def test_quiet_silences_the_epoch_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp5.quiet()
        warnings.warn("InMemoryBatches: starting epoch 2", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
