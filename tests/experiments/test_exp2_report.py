"""Experiment 2's report: a blue/green pair or partner is reported only when its latents pass the test, the pair over
seeds with an interval, and the glued headline numbers (hand-made decoders from test_exp2)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest

from tests.experiments.test_exp2 import HALVES, IDS, W_U, ZERO, _e, _standard_with_decoder
from tests.test_findings import glued_keys
from tiedlib.config import pick
from tiedlib.experiments.exp2 import TABLE, HeldOutChoice, TiedColourTriple, colour_latents_by_category, figures, report

# Latent 2 (c-exclusive) now reads as token 5 in c: no c-exclusive latent passes, though one is still best-ranked.
NO_CHAT_HIT = [*HALVES[:2], (ZERO, _e((1, 1.0))), *HALVES[3:]]


def _found(halves=HALVES, shared=True):
    return colour_latents_by_category(_standard_with_decoder(halves), W_U, ("b", "c"), IDS, top_k=3, shared=shared)


def test_a_pair_and_a_partner_are_reported_only_when_they_pass():
    found = _found()
    assert report.passing_pair(found) == (1, 2, pytest.approx(0.4))
    assert report.pair_report(found) == ("blue/green pair: b-exclusive latent 1 and c-exclusive latent 2, decoder "
                                         "cosine 0.400 (write-up: 0.97)")  # fmt: skip
    assert report.partner_report(found) == ("blue/green c-exclusive latent 2: closest shared latent 4 at cosine 0.894 "
                                            "(write-up: 0.91), itself blue/green: yes")  # fmt: skip
    assert report.partner_report(_found(shared=False)).endswith("itself blue/green: n/a")
    failing = _found(NO_CHAT_HIT)
    assert failing.best("chat") is not None  # a best-ranked candidate exists, but it fails the test
    assert report.passing_pair(failing) is None and report.shared_partner(failing) is None
    assert report.pair_report(failing).startswith("no blue/green pair: 1 of 2 b-exclusive and 0 of 2 c-exclusive")
    assert report.partner_report(failing) == ("no c-exclusive latent passes the blue/green test, so there is no "
                                              "partner to measure")  # fmt: skip


def test_summary_names_no_candidate_that_fails():
    choice = HeldOutChoice({m: {"p_true": 0.5, "p_other": 0.4, "true_wins": 0.5} for m in ("base", "no-swap",
                                                                                         "half-swap")}, 4)  # fmt: skip
    triple = TiedColourTriple(("b", "c"), [1], [1], 1, {"colour tokens": [1, 0, 0], "all tokens": [1, 0, 0]})
    failing = _found(NO_CHAT_HIT)
    lines = report.summary(pick(TABLE, "smoke"), layer=1, n_entries=8, choice=choice, no_swap_half_swap=failing,
                           base_half_swap=failing, tied=triple, scale="smoke").splitlines()  # fmt: skip
    assert "No blue/green pair" in lines[2] and "Best candidates" not in lines[2]
    assert lines[3].endswith("no c-exclusive latent passes the blue/green test, so there is no partner to measure.")


def test_colour_seeds_interval_and_verdict():
    found, failing = _found(), _found(NO_CHAT_HIT)
    seeds = report.ColourSeeds([0, 1, 2], [found, found, found])
    assert seeds.n_pairs == 3 and seeds.pair_cosine().mean == pytest.approx(0.4)
    assert seeds.cosine_verdict() == ("the exclusive blue/green pair is further than cosine 0.5 (over the 3 of 3 seeds "
                                      "with a pair)")  # fmt: skip
    one = report.ColourSeeds([0, 1], [found, failing])
    assert one.n_pairs == 1 and one.pair_cosine().n == 1
    assert one.cosine_verdict() == "inconclusive at this scale (over the 1 of 2 seeds with a pair)"
    assert one.hits("chat").mean == pytest.approx(0.5)
    none = report.ColourSeeds([0, 1], [failing, failing])
    assert none.pair_cosine() is None
    assert none.cosine_verdict() == "no seed has a blue/green pair: inconclusive at this scale"
    assert none.summary().startswith("2 seeds [0, 1]: passing blue/green pair in 0;")


def test_colour_seed_runs_reuse_the_headline_run_and_reseed_the_others(tmp_path, monkeypatch):
    trained = []

    def fake_train(settings, run_dir, acts, architecture, *, source=None):
        trained.append((settings.seed, run_dir.name, architecture, source))
        return _standard_with_decoder(NO_CHAT_HIT if settings.seed == 2 else HALVES), []

    monkeypatch.setattr(report, "train", fake_train)
    first = _found(shared=False)
    seeds = report.colour_seed_runs(pick(TABLE, "smoke"), tmp_path, None, W_U, ("b", "c"), IDS, seeds=(0, 1, 2),
                                    first=first, source="pair A")  # fmt: skip
    # Every seed's run folder records (and checks) the activations' source pair.
    assert trained == [(1, "seed1", "standard", "pair A"), (2, "seed2", "standard", "pair A")]
    assert seeds.runs[0] is first and seeds.n_pairs == 2 and report.SEEDS["tiny"] == (0, 1, 2)
    with pytest.raises(ValueError, match="no seeds"):
        report.colour_seed_runs(pick(TABLE, "smoke"), tmp_path, None, W_U, ("b", "c"), IDS, seeds=())


def test_findings_give_every_key_the_page_and_readme_paste():
    choice = HeldOutChoice({m: {"p_true": 0.5, "p_other": 0.4, "true_wins": 0.5} for m in ("base", "no-swap",
                                                                                         "half-swap")}, 4)  # fmt: skip
    triple = TiedColourTriple(("b", "c"), [1], [1], 1, {"colour tokens": [1, 0, 0], "all tokens": [1, 0, 0]})
    seeds = report.ColourSeeds([0, 1], [_found(), _found(NO_CHAT_HIT)])
    out = report.findings(pick(TABLE, "smoke"), scale="smoke", choice=choice, no_swap_half_swap=_found(NO_CHAT_HIT),
                          base_half_swap=_found(), tied=triple, seeds=seeds)  # fmt: skip
    assert glued_keys("exp2_") <= set(out) and all(isinstance(v, str) for v in out.values())
    assert out["exp2_pair"] == "none passed" and out["exp2_tied"].startswith("yes")
    assert out["exp2_seed_pairs"] == "1 of 2 seeds" and out["exp2_seed_cosine"] == "0.400 (1 seed, no interval)"
    assert not math.isnan(float(out["exp2_seed_cosine"].split()[0]))


def test_recommended_tied_side_by_side_and_the_passing_counts():
    choice = HeldOutChoice({m: {"p_true": 0.5, "p_other": 0.4, "true_wins": 0.5} for m in ("base", "no-swap",
                                                                                         "half-swap")}, 4)  # fmt: skip
    tied = TiedColourTriple(("b", "c"), [1, 2], [2], 2, {"colour tokens": [1, 0, 0.5], "all tokens": [0.2, 0, 0]})
    rec = TiedColourTriple(("b", "c"), [], [], None, None)
    found, failing = _found(), _found(NO_CHAT_HIT)
    assert report.passing_counts(found, failing, tied, rec) == (
        "standard (b, c): 1 of 2 b-exclusive, 1 of 2 c-exclusive; standard (b, c): 1 of 2 b-exclusive, 0 of 2 "
        "c-exclusive; write-up tied: 2 indices pass (b half 2, c half 1, both 1); recommended tied: 0 indices pass "
        "(b half 0, c half 0, both 0)")
    assert "recommended" not in report.passing_counts(found, failing, tied)
    lines = report.summary(pick(TABLE, "smoke"), layer=1, n_entries=8, choice=choice, no_swap_half_swap=found,
                           base_half_swap=found, tied=tied, rec_tied=rec, scale="smoke").splitlines()  # fmt: skip
    assert len(lines) == 6 and lines[4].startswith("Tied crosscoder on (b, c): blue/green on the b half at 2 indices")
    assert lines[5] == ("Recommended tied crosscoder (written penalty, eta 1.5) on (b, c): blue/green on the b half at "
                        "0 indices, on the c half at 0, on both at 0; one tied triple for blue/green: False.")
    fit = [{"explained_variance": 0.75, "l0": 3.0}]
    table = report.tied_table({"w": (tied, fit), "r": (rec, [])})
    assert list(table.index) == ["w", "r"] and table.loc["w", "b half passes"] == 2
    assert table.loc["w", "explained variance"] == 0.75 and table.loc["w", "c only on colour tokens"] == 0.5
    assert table.loc["r", "triple"] == -1 and math.isnan(table.loc["r", "shared on colour tokens"])
    seeds = report.ColourSeeds([0], [found])
    out = report.findings(pick(TABLE, "smoke"), scale="smoke", choice=choice, no_swap_half_swap=found,
                          base_half_swap=failing, tied=tied, seeds=seeds, rec_tied=rec,
                          fits={"tied": fit})  # fmt: skip
    assert out["exp2_rec_tied"] == "no (b half blue/green at 0 indices, c half at 0, both at 0)"
    assert out["exp2_rec_triple"].startswith("no index passes") and out["exp2_tied_triple"].startswith("triple 2:")
    assert out["exp2_tied_fit"] == "explained variance 0.750, L0 3.0" and out["exp2_rec_fit"] == "no training log"
    assert out["exp2_passing"] == report.passing_counts(found, failing, tied, rec)
    bare = report.findings(pick(TABLE, "smoke"), scale="smoke", choice=choice, no_swap_half_swap=found,
                           base_half_swap=failing, tied=tied, seeds=seeds)  # fmt: skip
    assert set(bare) == set(out) and bare["exp2_rec_tied"] == "not trained"
    fig = figures.tied_firing_comparison({"w": tied, "r": rec}, model_names=("b", "c"))
    assert [ax.get_title() for ax in fig.axes] == ["w: triple 2", "r"]
    assert sorted(round(p.get_height(), 2) for p in fig.axes[0].patches if p.get_width() > 0) == [0, 0, 0, 0.2, 0.5, 1]
    assert not fig.axes[1].patches and "no index passes" in fig.axes[1].texts[0].get_text()
    plt.close("all")
