"""Experiment 4: settings, the standard crosscoder (trained on a tiny pair, or a released checkpoint), the max-cosine
panels, their statistics and the summary (hand-set decoders with known cosines)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch

from tests.helpers import make_model
from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer
from tiedlib.analysis.cosines import exclusivity_categories
from tiedlib.config import pick
from tiedlib.experiments.exp4 import (
    TABLE,
    Alive,
    PanelStats,
    SeedRuns,
    StandardRun,
    alive_latents,
    cross_seed_panels,
    figures,
    findings,
    max_cosine_panels,
    panel_stats,
    seed_runs,
    standard_crosscoder,
    stats_table,
    summary,
)
from tiedlib.experiments.exp4 import pipeline as exp4_pipeline
from tiedlib.pairs import ModelPair, wrap


def test_settings_validate_and_keep_the_run_id_of_their_repr():
    s = pick(TABLE, "tiny")
    assert s.run_id == hashlib.sha256(repr(s).encode()).hexdigest()[:10]  # the notebook's run folder before the move
    assert s.run_id != pick(TABLE, "tiny", n_steps=10).run_id
    with pytest.raises(ValueError, match="low <= high"):
        pick(TABLE, "smoke", low=0.8)
    with pytest.raises(ValueError, match="positive n_docs"):
        pick(TABLE, "smoke", n_docs=0)
    assert pick(TABLE, "paper").n_docs == 0  # a released checkpoint needs no training data
    with pytest.raises(ValueError, match="chunk_size"):
        pick(TABLE, "smoke", chunk_size=0)


def test_standard_run_reports_the_last_logged_metrics():
    run = StandardRun(None, [{"l0": 9.0}, {"explained_variance": 0.81234, "l0": 12.3456, "mse": 2.0}], "data")
    assert run.final["mse"] == 2.0
    assert run.final_metrics() == {"explained_variance": 0.812, "l0": 12.346}
    assert StandardRun(None, [], "released").final_metrics() == {}


def test_standard_crosscoder_loads_a_released_checkpoint(tmp_path):
    model = make_model(n_latents=32)
    model.save_pretrained(tmp_path / "released")
    settings = pick(TABLE, "smoke", checkpoint=str(tmp_path / "released"))
    run = standard_crosscoder(settings, tmp_path / "unused")
    torch.testing.assert_close(run.crosscoder.W_dec, model.W_dec)
    assert run.metrics == [] and run.data == f"released crosscoder {tmp_path / 'released'}"
    assert not (tmp_path / "unused").exists()


def test_standard_crosscoder_trains_on_the_pair_mix_then_reloads(tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    base, chat = tiny_gemma2(n_layers=2, seed=0), tiny_gemma2(n_layers=2, seed=1)
    pair = ModelPair("smoke", wrap(base, tok), wrap(chat, tok), tok, layer=1, d_model=32, base_hf=base, chat_hf=chat)
    asked = {}

    def fake_load_pair(name, *, layer, device):
        asked["pair"] = (name, layer, device)
        return pair

    def fake_sequences(p, n, *, web_fraction, seed):
        asked["mix"] = (n, web_fraction, seed)
        return random_sequences(n, 4, 9, len(tok), seed=seed)

    monkeypatch.setattr(exp4_pipeline, "load_pair", fake_load_pair)
    monkeypatch.setattr(exp4_pipeline, "training_sequences", fake_sequences)
    settings = pick(TABLE, "smoke", n_docs=6, web_fraction=0.25, n_latents=16, n_steps=4, batch_size=8, seed=3)
    run = standard_crosscoder(settings, tmp_path / "run")
    assert asked == {"pair": ("smoke", None, "cpu"), "mix": (6, 0.25, 3)}
    n_tokens = sum(len(s) - 1 for s in random_sequences(6, 4, 9, len(tok), seed=3))  # BOS dropped
    assert run.data.startswith(f"{n_tokens:,} tokens from 6 documents, layer 1, d_model 32; norm factors [")
    assert run.crosscoder.cfg.architecture == "standard" and run.crosscoder.cfg.n_latents == 16
    assert run.metrics[-1]["step"] == 4 and "explained_variance" in run.final_metrics()
    again = standard_crosscoder(settings, tmp_path / "run")
    torch.testing.assert_close(again.crosscoder.W_dec, run.crosscoder.W_dec)


def test_released_layout_gets_norm_factors_estimated_on_the_pair(tmp_path, monkeypatch, capsys):
    import json

    from tiedlib.activations import estimate_norm_factors, harvest_all

    tok = tiny_tokenizer()
    base, chat = tiny_gemma2(n_layers=2, seed=0), tiny_gemma2(n_layers=2, seed=1)
    pair = ModelPair("smoke", wrap(base, tok), wrap(chat, tok), tok, layer=1, d_model=32, base_hf=base, chat_hf=chat)
    monkeypatch.setattr(exp4_pipeline, "load_pair", lambda name, *, layer, device: pair)
    monkeypatch.setattr(exp4_pipeline, "training_sequences",
                        lambda p, n, *, web_fraction, seed: random_sequences(n, 4, 9, len(tok), seed=seed))
    model = make_model(d_model=32, n_latents=16)
    folder = tmp_path / "repo" / "blocks.14.hook_resid_pre"  # the standard release's layout
    folder.mkdir(parents=True)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, folder / "cc_weights.pt")
    (folder / "cfg.json").write_text(json.dumps({"d_in": 32, "dict_size": 16}))
    settings = pick(TABLE, "smoke", checkpoint=str(folder / "cc_weights.pt"), norm_docs=5, seed=2)
    run = standard_crosscoder(settings, tmp_path / "unused")
    seqs = random_sequences(5, 4, 9, len(tok), seed=2)
    expected = estimate_norm_factors(harvest_all(pair.base, pair.chat, seqs, 1, progress=False), 32)
    assert run.crosscoder.cfg.norm_factors == pytest.approx(expected.tolist())
    n_tokens = sum(len(s) - 1 for s in seqs)
    assert f"estimated on {n_tokens:,} tokens of 5 documents" in run.data
    assert "estimated on" in capsys.readouterr().out
    torch.testing.assert_close(run.crosscoder.W_dec, model.W_dec)
    # a pair of another width is refused by name
    monkeypatch.setattr(exp4_pipeline, "load_pair", lambda name, *, layer, device: replace(pair, d_model=16))
    with pytest.raises(ValueError, match="d_model 32"):
        standard_crosscoder(settings, tmp_path / "unused")
    with pytest.raises(ValueError, match="norm_docs"):
        pick(TABLE, "paper", norm_docs=0)


def _decoder() -> torch.Tensor:
    """Four latents in 4 dimensions: base-exclusive 0, chat-exclusive 1, shared 2 and 3 (cosines set by hand)."""
    e = torch.eye(4)
    W = torch.zeros(4, 2, 4)
    W[0, 0] = e[0]  # base-exclusive
    W[0, 1] = 0.1 * e[3]
    W[1, 1] = e[1]  # chat-exclusive: its chat vector e1 against base vectors of latents 0, 2, 3
    W[1, 0] = 0.1 * e[3]
    W[2, 0], W[2, 1] = e[1], e[2]  # shared: base e1 (cosine 1 with latent 1's chat vector)
    W[3, 0], W[3, 1] = (e[2] + e[3]) / math.sqrt(2), e[0]
    return W


def test_max_cosine_panels_and_their_statistics():
    W = _decoder()
    norms = W.norm(dim=-1)
    r = norms[:, 1] / norms.sum(-1)
    settings = pick(TABLE, "smoke", chunk_size=2)
    panels = max_cosine_panels(W, r, settings)
    assert [p.query for p in panels] == ["base", "chat"]
    chat = panels[1]
    # chat-exclusive latent 1: chat e1 vs base of 0 (e0), 2 (e1), 3 -> cosine 1 with latent 2
    assert chat.exclusive.values.tolist() == pytest.approx([1.0]) and chat.exclusive.indices.tolist() == [2]
    # shared 2: chat e2 vs base of 0, 1, 3 -> 1/sqrt(2) with latent 3; shared 3: chat e0 vs base of 0, 1, 2 -> 1
    assert chat.shared.values.tolist() == pytest.approx([1 / math.sqrt(2), 1.0])
    stats = panel_stats(panels)
    s = stats[1]
    assert (s.query, s.n_exclusive, s.n_shared) == ("chat", 1, 2)
    assert s.median_exclusive == pytest.approx(1.0)
    assert s.median_shared == pytest.approx(1 / math.sqrt(2))  # torch's median of an even count is the lower one
    assert (s.frac_exclusive_above_half, s.frac_shared_above_half) == (1.0, 1.0)
    assert s.verdict == "closer partners than shared latents (less exclusive)"
    table = stats_table(stats)
    assert list(table.index) == ["base", "chat"] and table.loc["chat", "n_shared"] == 2
    assert table.loc["chat", "verdict"] == s.verdict


def test_panel_stats_without_exclusive_latents_and_the_verdicts():
    none = PanelStats("chat", 0, 3, math.nan, 0.4, math.nan, 0.0)
    assert none.verdict == "none to compare"
    assert PanelStats("base", 2, 3, 0.3, 0.4, 0.0, 0.0).verdict == "no closer partners than shared latents"
    assert none.summary() == ("chat-exclusive latents: median max cosine with base decoders nan (n=0) vs shared "
                              "latents 0.400 (n=3); above 0.5: nan% vs 0% -> none to compare.")
    W = _decoder()
    W[1] = W[2]  # no chat-exclusive latent left
    stats = panel_stats(max_cosine_panels(W, None, pick(TABLE, "smoke")))
    assert stats[1].n_exclusive == 0 and math.isnan(stats[1].median_exclusive)


def test_summary_counts_categories_and_prints_each_panel():
    W = _decoder()
    settings = pick(TABLE, "smoke")
    panels = max_cosine_panels(W, None, settings)
    stats = panel_stats(panels)
    run = StandardRun(None, [{"explained_variance": 0.8, "l0": 12.34}], "data")
    lines = summary(settings, run, panels, stats, scale="smoke").splitlines()
    assert lines[0] == ("Scale: smoke (smoke pair), standard crosscoder with 4 latents, explained variance 0.800, "
                        "L0 12.3.")
    assert lines[1] == "Latents: 1 base-exclusive (r < 0.3), 2 shared, 1 chat-exclusive (r > 0.7)."
    assert lines[2] == stats[0].summary() and lines[3] == stats[1].summary()
    released = summary(settings, replace(run, metrics=[]), panels, stats, scale="paper").splitlines()[0]
    assert released.endswith("with 4 latents.")
    with pytest.raises(ValueError, match="no max-cosine panels"):
        summary(settings, run, [], stats, scale="smoke")


def test_figures_draw_the_histograms():
    r = torch.tensor([0.1, 0.5, 0.5, 0.9, 0.95])
    fig = figures.relative_norm_histogram(r, bins=10)
    assert sum(p.get_height() for p in fig.axes[0].patches) == pytest.approx(5)
    assert [len(c) for c in exclusivity_categories(r)] == [1, 2, 2]
    panels = max_cosine_panels(_decoder(), None, pick(TABLE, "smoke"))
    fig = figures.max_cosine_histograms(panels, bins=4)
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "chat-exclusive vs shared latents"
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend[0].startswith("shared (n=2)") and legend[1].startswith("chat-exclusive (n=1)")
    # each histogram is a density: bar areas of one hue sum to 1
    bars = [p for p in fig.axes[1].patches if p.get_height() > 0]
    assert sum(p.get_height() * p.get_width() for p in bars) == pytest.approx(2.0)
    plt.close("all")


# ---- seeds and the glued findings -----------------------------------------------------------------------------------
def test_seed_runs_reseed_short_runs_on_one_harvest(tmp_path, monkeypatch):
    from tiedlib.experiments.exp4 import seeds as seeds_mod

    harvested, trained = [], []

    def fake_train(run_dir, acts, *, seed, n_steps, architecture, **kw):
        trained.append((run_dir, acts, seed, n_steps, architecture))
        torch.manual_seed(seed)
        W = _decoder() + 0.05 * torch.randn(4, 2, 4)
        norms = W.norm(dim=-1)
        return SimpleNamespace(W_dec=W, relative_decoder_norm=lambda: norms[:, 1] / norms.sum(-1)), []

    monkeypatch.setattr(seeds_mod, "harvest", lambda s: harvested.append(s.seed) or "acts")
    monkeypatch.setattr(seeds_mod, "heldout_sample", lambda s: harvested.append("heldout") or "heldout")
    monkeypatch.setattr(seeds_mod, "alive_latents", lambda cc, sample: Alive(torch.tensor([True] * 4), 10))
    monkeypatch.setattr(seeds_mod, "train_crosscoder", fake_train)
    runs = seed_runs(pick(TABLE, "smoke", seeds=(0, 1, 2), seed_steps=7, seed=5), tmp_path)
    assert harvested == [5, "heldout"]  # one harvest, of the headline run's documents, and one held-out sample
    assert runs.null_pairs == [(0, 1), (1, 2), (2, 0)] and len(runs.null) == 3 and runs.dead == [0, 0, 0]
    # the seed twins hold the same latents (up to noise), so the chat-exclusive latent finds its partner there too
    assert runs.within_minus_null("chat").n == 3 and abs(runs.within_minus_null("chat").mean) < 0.1
    assert [t[1:] for t in trained] == [("acts", s, 7, "standard") for s in (0, 1, 2)]
    assert [t[0] for t in trained] == [tmp_path / f"seed{s}" for s in (0, 1, 2)]
    chat = runs.difference("chat")
    assert chat.n == 3 and chat.mean > 0  # the chat-exclusive latent has a partner at cosine ~1, shared ones less
    assert runs.summary().splitlines()[0] == ("3 standard crosscoders (seeds [0, 1, 2], 7 steps each); dead latents "
                                              "per seed: 0, 0, 0 of 4 (no firing on the held-out sample; left out).")
    with pytest.raises(ValueError, match="query must be"):
        runs.difference("both")
    with pytest.raises(ValueError, match="seeds is empty"):
        seed_runs(pick(TABLE, "smoke", seeds=()), tmp_path)
    with pytest.raises(ValueError, match="released checkpoint"):
        seed_runs(pick(TABLE, "smoke", checkpoint="x"), tmp_path)


def _stats(ex, sh):
    return [PanelStats("base", 3, 5, ex, sh, 0.0, 0.0), PanelStats("chat", 3, 5, ex, sh, 0.0, 0.0)]


def test_seed_verdicts_and_findings_keys():
    from tests.test_findings import glued_keys

    closer = SeedRuns([0, 1, 2], 5, [_stats(0.8, 0.5), _stats(0.7, 0.5), _stats(0.75, 0.5)])
    assert closer.verdict("chat") == "chat-exclusive latents have closer partners than shared ones"
    mixed = SeedRuns([0, 1, 2], 5, [_stats(0.8, 0.5), _stats(0.3, 0.5), _stats(0.5, 0.5)])
    assert mixed.verdict("base") == "inconclusive at this scale"
    nan = math.nan
    none = SeedRuns([0, 1], 5, [_stats(nan, 0.5), _stats(nan, 0.5)])
    assert none.difference("chat") is None and none.difference_text("chat").startswith("n/a")
    assert none.verdict("chat") == "no chat-exclusive latents to compare: inconclusive at this scale"
    assert "n/a (no base-exclusive latent in any seed)" in none.summary()
    W = _decoder()
    settings = pick(TABLE, "smoke")
    panels = max_cosine_panels(W, None, settings)
    run = StandardRun(None, [{"explained_variance": 0.8, "l0": 12.34}], "data")
    out = findings(settings, run, panels, panel_stats(panels), scale="smoke", seeds=closer)
    assert glued_keys("exp4_") <= set(out) and all(isinstance(v, str) for v in out.values())
    assert out["exp4_categories"] == "1 base-exclusive, 2 shared, 1 chat-exclusive"
    assert out["exp4_chat_medians"] == "exclusive 1.00 (n=1) vs shared 0.71 (n=2)"
    assert out["exp4_seed_chat"] == closer.difference_text("chat") and out["exp4_seeds"] == "3 seeds x 5 steps"
    bare = findings(settings, replace(run, metrics=[]), panels, panel_stats(panels), scale="paper")
    assert set(bare) == set(out) and bare["exp4_seed_verdict"] == "no seed runs at this scale"
    with pytest.raises(ValueError, match="base and chat panel"):
        findings(settings, run, panels, panel_stats(panels)[::-1], scale="smoke")


# ---- dead latents and the null comparison ----------------------------------------------------------------------------
def test_dead_latents_are_found_on_held_out_rows_and_left_out_of_every_panel():
    model = make_model(d_model=4, n_latents=4)
    with torch.no_grad():
        model.W_dec.copy_(_decoder())
        model.W_enc.zero_()
        model.b_enc.copy_(torch.tensor([1.0, 1.0, -1.0, 1.0]))  # latent 2 never fires: its pre-activation is -1
    alive = alive_latents(model, [torch.randn(6, 2, 4), torch.randn(3, 2, 4)])
    assert alive.mask.tolist() == [True, True, False, True] and alive.n_tokens == 9 and alive.n_dead == 1
    assert alive.text() == "1 of 4 latents dead (no firing on 9 held-out tokens), left out of every panel"
    with pytest.raises(ValueError, match="holds no token"):
        alive_latents(model, [])
    settings = pick(TABLE, "smoke")
    panels = max_cosine_panels(model.W_dec, None, settings, alive=alive.mask)
    chat = panels[1]
    # Dead latent 2 was the chat-exclusive latent 1's partner (cosine 1); among live base vectors e0 and (e2+e3)/sqrt2
    # its chat vector e1 has cosine 0, and the partner index is one of all latents (0 or 3), never 2.
    assert chat.exclusive.values.tolist() == pytest.approx([0.0]) and chat.exclusive.indices.item() in (0, 3)
    assert chat.categories.shared.tolist() == [3] and chat.categories.chat_exclusive.tolist() == [1]
    assert panel_stats(panels)[1].n_shared == 1
    with pytest.raises(ValueError, match="does not match 4 latents"):
        max_cosine_panels(model.W_dec, None, settings, alive=torch.tensor([True]))
    run = StandardRun(None, [{"explained_variance": 0.8, "l0": 12.34}], "data")
    lines = summary(settings, run, panels, panel_stats(panels), scale="smoke", alive=alive).splitlines()
    assert lines[0].startswith("Scale: smoke (smoke pair), standard crosscoder with 4 latents")
    assert lines[1] == f"Dead latents: {alive.text()}."
    assert lines[2] == "Live latents: 1 base-exclusive (r < 0.3), 1 shared, 1 chat-exclusive (r > 0.7)."
    out = findings(settings, run, panels, panel_stats(panels), scale="smoke", alive=alive)
    assert out["exp4_dead"] == alive.text() and out["exp4_setup"].endswith("4 latents, 300 steps")
    assert out["exp4_categories"] == "1 base-exclusive, 1 shared, 1 chat-exclusive (live latents)"


def test_the_null_statistic_looks_for_partners_in_the_seed_twin():
    W_a = _decoder()
    perm = torch.tensor([3, 2, 1, 0])  # B: the same four latents in another order (B's latent 1 is A's latent 2)
    W_b = W_a[perm]
    settings = pick(TABLE, "smoke", chunk_size=2)
    base, chat = cross_seed_panels(W_a, W_b, settings)
    # A's chat-exclusive 1 (chat e1) vs B's base halves of B's shared + base-exclusive: A's latent 2 again, in B at 1
    assert chat.exclusive.values.tolist() == pytest.approx([1.0]) and chat.exclusive.indices.tolist() == [1]
    # A's shared 2 (chat e2) and 3 (chat e0) vs all of B's base halves: (e2+e3)/sqrt2 (B's 0) and e0 (B's 3)
    assert chat.shared.values.tolist() == pytest.approx([1 / math.sqrt(2), 1.0])
    assert chat.shared.indices.tolist() == [0, 3] and chat.categories.shared.tolist() == [2, 3]
    # A's base-exclusive 0 (base e0) vs B's chat halves of B's shared (0, 1) and chat-exclusive (2): e0 at B's 0
    assert base.exclusive.values.tolist() == pytest.approx([1.0]) and base.exclusive.indices.tolist() == [0]
    # B's copy of A's latent 2 is dead: A's chat-exclusive latent finds no partner closer than cosine 0
    dead_b = torch.tensor([True, False, True, True])
    chat_dead = cross_seed_panels(W_a, W_b, settings, alive_b=dead_b)[1]
    assert chat_dead.exclusive.values.tolist() == pytest.approx([0.0]) and chat_dead.exclusive.indices.item() != 1
    with pytest.raises(ValueError, match="one width"):
        cross_seed_panels(W_a, torch.zeros(4, 2, 5), settings)


def test_null_comparison_table_verdict_text_and_figure():
    closer = SeedRuns([0, 1, 2], 5, [_stats(0.8, 0.5), _stats(0.7, 0.5), _stats(0.75, 0.5)],
                      null_pairs=[(0, 1), (1, 2), (2, 0)], null=[_stats(0.4, 0.9), _stats(0.45, 0.9), _stats(0.5, 0.9)],
                      dead=[3, 4, 5], n_latents=64)  # fmt: skip
    assert closer.within_minus_null("chat").mean == pytest.approx(0.3)  # (0.4 + 0.25 + 0.25) / 3
    assert closer.null_verdict("base") == ("base-exclusive latents have closer partners in their own crosscoder than "
                                           "in a seed twin")
    assert closer.null_difference("chat").mean == pytest.approx(-0.45)
    assert closer.null_text("chat").startswith("exclusive 0.75 [") and "against a seed twin" in closer.null_text("chat")
    assert "(3 seeds) within" in closer.null_text("chat") and "(3 seed pairs) against" in closer.null_text("chat")
    assert closer.dead_text().startswith("dead latents per seed: 3, 4, 5 of 64")
    table = closer.null_table()
    assert table.loc[("chat", "against a seed twin (null)"), "median shared"] == pytest.approx(0.9)
    assert table.loc[("base", "within one crosscoder"), "exclusive - shared"] == pytest.approx(0.25)
    lines = closer.summary().splitlines()
    assert lines[3] == "Null (each run against its seed twin: 0 vs 1, 1 vs 2, 2 vs 0):" and len(lines) == 6
    bare = SeedRuns([0, 1], 5, [_stats(0.8, 0.5), _stats(0.7, 0.5)])
    assert bare.null_verdict("chat").endswith("inconclusive at this scale") and len(bare.summary().splitlines()) == 3
    fig = figures.null_comparison(closer)
    assert [ax.get_title() for ax in fig.axes] == ["query = base", "query = chat"]
    bars = sorted(round(p.get_height(), 3) for p in fig.axes[1].patches if p.get_width() > 0)
    assert bars == [0.45, 0.5, 0.75, 0.9]  # the mean of each (latents, comparison) group
    plt.close("all")
    out = findings(pick(TABLE, "smoke"), StandardRun(None, [], "data"), max_cosine_panels(_decoder(), None,
                   pick(TABLE, "smoke")), _stats(0.5, 0.5), scale="smoke", seeds=closer)  # fmt: skip
    assert out["exp4_null_chat"] == closer.null_text("chat") and out["exp4_seed_dead"] == closer.dead_text()
    assert out["exp4_null_verdict"].startswith("base query: base-exclusive latents have closer partners in their own")
