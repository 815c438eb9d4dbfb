"""Experiment 1's pipeline on hand-made inputs: data preparation, the two crosscoders, the ratio scatter, ground
truth on hand-labelled documents, the standard-crosscoder baseline, the summary and the figures."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import tiedlib.experiments.exp1 as exp1  # noqa: E402
from tests.helpers import make_model, random_rows  # noqa: E402
from tiedlib.activations.batches import InMemoryBatches  # noqa: E402
from tiedlib.analysis import concepts as gt  # noqa: E402
from tiedlib.analysis.contexts import TokenSample, latent_activations  # noqa: E402
from tiedlib.analysis.firing import Corners, FiringCounts, HeldOutMetrics, evaluate  # noqa: E402
from tiedlib.config import pick  # noqa: E402
from tiedlib.crosscoders.crosscoder import WrittenTiedCrosscoder, recommended_tied  # noqa: E402
from tiedlib.experiments.exp1 import data as data_mod  # noqa: E402
from tiedlib.experiments.exp1 import figures  # noqa: E402

PAIR = SimpleNamespace(name="toy", layer=3, d_model=16, fingerprint="toy|layer=3")


def _settings(**overrides):
    base = dict(n_latents=8, n_steps=6, batch_size=32, standard_n_latents=6, standard_n_steps=4, log_every=2,
                n_corner=1, n_neighbours=2, min_frequency=0.05)  # fmt: skip
    return pick(exp1.TABLE, "smoke", **{**base, **overrides})


def _sample(n_docs=4, length=6, d_model=16, seed=0, name="x", docs=None):
    seqs = [[2] + [10 + (d * 7 + t) % 30 for t in range(length - 1)] for d in range(n_docs)]
    doc = torch.arange(n_docs).repeat_interleave(length - 1)
    pos = torch.arange(1, length).repeat(n_docs)
    ids = torch.tensor([seqs[d][p] for d, p in zip(doc.tolist(), pos.tolist(), strict=True)])
    return TokenSample(random_rows(len(ids), d_model, seed=seed), ids, doc, pos, seqs, name, docs)


# ---- data -----------------------------------------------------------------------------------------------------------
def test_quiet_logs_silences_epoch_warnings_and_hf_bars():
    from transformers.utils import logging as hf_logging

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp1.quiet_logs()
        warnings.warn("InMemoryBatches: starting epoch 2", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
    assert not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()


def test_training_data_counts_tokens_without_bos_and_summarises():
    td = exp1.TrainingData(PAIR, _settings(n_steps=10, batch_size=4), [[2, 5, 6], [2, 7]], lambda: iter(()), [])
    assert td.n_tokens == 3
    assert td.passes == pytest.approx(40 / 3)
    assert td.summary() == "pair toy: layer 3, d_model 16; 2 training sequences, about 3 tokens; 13.3 passes"
    with pytest.raises(ValueError, match="no training tokens"):
        _ = exp1.TrainingData(PAIR, _settings(), [[2]], lambda: iter(()), []).passes


def test_prepare_training_passes_the_settings_through(monkeypatch):
    calls = {}

    def fake_sequences(pair, n, *, web_fraction, seq_len):
        calls["seqs"] = (n, web_fraction, seq_len)
        return [[2, 3, 4]] * n

    def fake_data(pair, seqs, **kw):
        calls["data"] = (len(seqs), kw)
        return lambda: iter(())

    monkeypatch.setattr(data_mod, "training_sequences", fake_sequences)
    monkeypatch.setattr(data_mod, "training_data", fake_data)
    monkeypatch.setattr(data_mod, "template_ids", lambda pair: [7, 8])
    monkeypatch.setattr(data_mod, "is_lab", lambda pair: False)
    s = _settings(train_docs=5, web_fraction=0.25, seq_len=64, batch_size=16, model_batch_size=3)
    td = exp1.prepare_training(PAIR, s)
    assert calls["seqs"] == (5, 0.25, 64)
    assert calls["data"] == (5, dict(batch_size=16, exclude_token_ids=[], model_batch_size=3, in_memory=False))
    assert td.exclude_token_ids == [] and td.n_tokens == 10 and td.settings is s
    td = exp1.prepare_training(PAIR, _settings(exclude_template_tokens=True))
    assert td.exclude_token_ids == [7, 8] and calls["data"][1]["exclude_token_ids"] == [7, 8]


def test_heldout_samples_harvest_web_then_chat_and_concatenate(monkeypatch):
    asked = []

    def fake_eval(pair, source, n, **kw):
        asked.append((source, n, kw))
        return _sample(n_docs=2 if source == "web" else 3, seed=len(asked), name=source)

    monkeypatch.setattr(data_mod, "eval_sample", fake_eval)
    s = _settings(eval_docs=7, seq_len=32, model_batch_size=5)
    samples = exp1.heldout_samples(PAIR, s, [9])
    kw = dict(exclude_token_ids=[9], seq_len=32, model_batch_size=5)
    assert asked == [("web", 7, kw), ("chat", 7, kw)]
    assert list(samples.by_source) == ["web", "chat"] and list(samples.all) == ["web", "chat", "web + chat"]
    assert samples.mix.name == "web + chat" and len(samples.mix) == len(samples.web) + len(samples.chat)
    torch.testing.assert_close(samples.mix.acts[len(samples.web) :], samples.chat.acts)
    assert samples.mix.doc_index.max() == 4  # chat documents come after the 2 web ones


# ---- the two crosscoders -----------------------------------------------------------------------------------------
def _training(settings):
    rows = random_rows(256)
    return exp1.TrainingData(PAIR, settings, [[2, 3]] * 4, lambda: InMemoryBatches(rows, 32, epochs=None), [])


def test_configs_follow_the_settings():
    s = _settings(lr=3e-3, l1_coeff=0.7, eta=1.5)
    tc = exp1.train_config(s, 11)
    assert (tc.n_steps, tc.lr, tc.l1_coeff, tc.log_every, tc.progress) == (11, 3e-3, 0.7, 2, True)
    tied = exp1.tied_config(s, 16)
    assert (tied.architecture, tied.n_latents, tied.eta, tied.d_model) == ("tied", 8, 1.5, 16)
    std = exp1.standard_config(s, 16)
    assert (std.architecture, std.n_latents) == ("standard", 6)
    rec = exp1.recommended_config(s, 16)
    assert (rec.architecture, rec.shared_penalty, rec.n_latents) == ("tied", "written", 8)
    assert rec == recommended_tied(16, 8).cfg  # the project's recommended configuration, not a copy that may drift


def test_tied_and_standard_crosscoders_train_then_load(tmp_path):
    td = _training(_settings())
    tied, log = exp1.tied_crosscoder(td, tmp_path / "tied")
    assert tied.cfg.architecture == "tied" and tied.cfg.n_latents == 8 and not tied.training
    assert log[-1]["step"] == 6 and (tmp_path / "tied" / "config.json").exists()
    again, log2 = exp1.tied_crosscoder(td, tmp_path / "tied")  # finished run: loaded, not retrained
    torch.testing.assert_close(again.W_dec, tied.W_dec)
    assert log2 == log
    std, std_log = exp1.standard_crosscoder(td, tmp_path / "standard")
    assert std.cfg.architecture == "standard" and std.cfg.n_latents == 6 and len(std_log) > 0
    rec, rec_log = exp1.recommended_crosscoder(td, tmp_path / "recommended")  # same data, same steps
    assert isinstance(rec, WrittenTiedCrosscoder) and rec.cfg.shared_penalty == "written"
    assert rec_log[-1]["step"] == log[-1]["step"] == 6


def test_released_checkpoints_replace_training(tmp_path):
    model = make_model(architecture="tied", n_latents=8)
    model.save_pretrained(tmp_path / "released")
    td = _training(_settings(checkpoint=str(tmp_path / "released")))
    tied, log = exp1.tied_crosscoder(td, tmp_path / "never")
    assert log == [] and not (tmp_path / "never").exists() and not tied.training
    torch.testing.assert_close(tied.W_enc, model.W_enc)


def _write_tied_release(folder, model):
    """A tied crosscoder in the released layout (torch.save state dict + <name>_cfg.json, no norm factors)."""
    import json

    folder.mkdir(parents=True)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, folder / "tied_crosscoder_eta_2.pt")
    (folder / "tied_crosscoder_eta_2_cfg.json").write_text(json.dumps({"d_in": model.cfg.d_model,
                                                                      "dict_size": model.cfg.n_latents}))
    return folder / "tied_crosscoder_eta_2.pt"


def test_released_layout_gets_norm_factors_of_the_training_data(tmp_path, capsys):
    model = make_model(architecture="tied", n_latents=8)
    path = _write_tied_release(tmp_path / "release", model)
    rows = random_rows(256)
    td = exp1.TrainingData(PAIR, _settings(checkpoint=str(path)), [[2, 3]] * 4,
                           lambda: InMemoryBatches(rows, 32, epochs=None, norm_factors=torch.tensor([0.5, 2.0])),
                           [])  # fmt: skip
    tied, log = exp1.tied_crosscoder(td, tmp_path / "never")
    assert log == [] and not (tmp_path / "never").exists()
    assert tied.source == exp1.presets.TIED_RELEASE and tied.cfg.norm_factors == [0.5, 2.0]
    assert "normalisation factors (base, chat) [0.5, 2.0] estimated" in capsys.readouterr().out
    evaluate(tied, [rows])  # analysis of raw activations now runs (it refuses without factors)
    # a data source without factors: a clear error instead of a silently unnormalised analysis
    td_bare = exp1.TrainingData(PAIR, td.settings, [[2, 3]] * 4, lambda: iter([rows]), [])
    with pytest.raises(ValueError, match="no norm_factors"):
        exp1.tied_crosscoder(td_bare, tmp_path / "never")


def test_focus_latent_of_the_release_is_checked_against_the_crosscoder(tmp_path):
    # The paper preset trains its own crosscoder, so it names no release latent; the write-up's one is at hand.
    assert pick(exp1.TABLE, "paper").focus_latent is None
    focus = exp1.presets.WRITEUP_REFUSAL_LATENT
    assert focus == exp1.presets.LatentRef(10615, "sa7270/tied-crosscoder/tied_crosscoder_eta_2.pt")
    model = make_model(architecture="tied", n_latents=8)
    released = exp1.models.load_crosscoder(_write_tied_release(tmp_path / "release", model))
    ref = exp1.presets.LatentRef(5, exp1.presets.TIED_RELEASE)
    assert exp1.focus_triple(_scatter(), ref, model=released) == 5
    with pytest.raises(ValueError, match="unrelated feature"):  # the same index in a crosscoder trained here
        exp1.focus_triple(_scatter(), ref, model=model)
    with pytest.raises(ValueError, match="model="):
        exp1.focus_triple(_scatter(), ref)
    with pytest.raises(ValueError, match="out of range"):
        exp1.focus_triple(_scatter(), exp1.presets.LatentRef(10615, exp1.presets.TIED_RELEASE), model=released)


def test_held_out_metrics_and_table():
    model = make_model(architecture="tied", n_latents=8)
    samples = {"web": _sample(seed=1), "chat": _sample(seed=2)}
    held = exp1.held_out_metrics(model, samples)
    direct = evaluate(model, samples["chat"].batches())
    torch.testing.assert_close(held["chat"].explained_variance, direct.explained_variance)
    table = exp1.held_out_table(held)
    assert list(table.columns) == ["web", "chat"]
    assert table.loc["n_tokens", "web"] == 20 and table.loc["l0_chat", "chat"] == pytest.approx(float(direct.l0[2]))


# ---- ratio scatter --------------------------------------------------------------------------------------------------
def _scatter():
    # index 0: base/shared 0.5, chat/shared 2 (top-left); 1: never shared; 2: base 2, chat 0.5 (bottom-right); 3: rare
    counts = torch.tensor([[10, 0, 10, 1], [5, 5, 20, 0], [20, 0, 5, 0]])
    return exp1.ratio_scatter(FiringCounts(counts, 100), _settings(n_corner=1, min_frequency=0.05))


def test_ratio_scatter_counts_corners_and_summary():
    sc = _scatter()
    assert (sc.n_kept, sc.n_rare, sc.n_never_shared, sc.n_plotted) == (3, 1, 1, 2)
    assert (sc.most_top_left, sc.most_bottom_right) == (0, 2)
    assert sc.summary() == (
        "top-left: [0]\nbottom-right: [2]\n3 triples kept, 1 rare, 1 kept but never firing in the shared group"
    )
    assert sc.browser_latents(7) == [7, 0, 2]
    assert sc.extremes == [0, 2]
    # Both corner parts fire 20 times: at a floor of 21 neither corner has a triple, and the summary says so.
    floor = exp1.ratio_scatter(sc.firing, _settings(n_corner=1, min_frequency=0.05, min_exclusive_firings=21))
    assert floor.extremes == []
    held = HeldOutMetrics(torch.ones(2), torch.ones(3), floor.firing)
    tied = SimpleNamespace(cfg=SimpleNamespace(n_latents=4, eta=2.0))
    none = "none (no triple has enough exclusive firings)"
    assert f"most top-left {none}, most bottom-right {none}." in exp1.summary("tiny", PAIR, tied, held, floor,
                                                                               _settings())  # fmt: skip
    empty = exp1.ratio_scatter(FiringCounts(torch.zeros(3, 2, dtype=torch.long), 10), _settings())
    with pytest.raises(ValueError, match="no corners"):
        _ = empty.most_top_left


# ---- ground truth ---------------------------------------------------------------------------------------------------
CONCEPTS = ["refusal", "disclaimer", "turn_marker", "code"]


def _scores(n=2):
    """Hand-made AUROC tables of a tied crosscoder with ``n`` triples (columns shared 0..n-1, base, chat)."""
    web = torch.full((4, 3 * n), 0.5)
    chat = torch.full((4, 3 * n), 0.5)
    web[1, n + 1] = 0.9  # triple 1's base part: web disclaimers
    web[0, n + 0] = 0.8  # triple 0's base part: web refusals
    chat[0, 2 * n + 1] = 0.85  # triple 1's chat part: chat refusals
    chat[0, 2 * n + 0] = 0.6
    mix = torch.full((4, 3 * n), 0.5)
    mix[2, 2 * n + 0] = 0.95  # triple 0's chat part: turn markers
    mix[3, 2 * n + 1] = 0.7  # triple 1's chat part: code
    mix[0, 2 * n + 1] = 0.8  # ... and refusals, better still
    mix[3, n + 1] = 0.9  # triple 1's base part: code
    mix[:, 0] = float("nan")
    labels_web = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)  # refusal, disclaimer, code on web
    labels_chat = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)  # refusal, turn marker on chat
    # Precision tables from the AUROC ones: 0.5 -> 0 (chance picks nothing), 0.9 -> 0.8, 0.85 -> 0.7, ...
    parts = {name: gt.PartScores(((a - 0.5) * 2).clamp_min(0), ((a - 0.5) * 2).clamp_min(0) / 2,
                                 torch.full(a.shape, 30), torch.full((4,), 25), 20, torch.full((4,), 100))
             for name, a in (("web", web), ("chat", chat), ("mix", mix))}  # fmt: skip
    return exp1.ConceptScores(CONCEPTS, n, web, chat, mix, labels_web, labels_chat, parts)


def test_concept_scores_source_only_concepts_and_best_table():
    s = _scores()
    assert s.chat_only == ["turn_marker"] and s.web_only == ["disclaimer", "code"]
    table = s.best_table()
    assert list(table.columns) == ["shared / web", "base / web", "chat / web", "shared / chat", "base / chat",
                                   "chat / chat"]  # fmt: skip
    assert list(table.index) == CONCEPTS
    assert table.loc["disclaimer", "base / web"] == pytest.approx(0.9)
    assert table.loc["refusal", "chat / chat"] == pytest.approx(0.85)
    assert table.loc["code", "shared / chat"] == pytest.approx(0.5)
    precision = s.precision_table()
    assert precision.loc["disclaimer", "base / web"] == pytest.approx(0.8)
    assert precision.loc["refusal", "chat / chat"] == pytest.approx(0.7)
    bare = exp1.ConceptScores(CONCEPTS, 2, s.web, s.chat, s.mix, s.labels_web, s.labels_chat)
    with pytest.raises(ValueError, match="no precision-at-k tables"):
        bare.precision_table()


def test_concept_scores_on_hand_labelled_documents():
    model = make_model(architecture="tied", n_latents=4)

    def docs(n_docs, length, flag):
        return [SimpleNamespace(input_ids=list(range(length)), labels={c: [flag and t % 2 == 1 for t in range(length)]
                                                                       for c in [*CONCEPTS, "end_of_prompt"]})
                for _ in range(n_docs)]  # fmt: skip

    web = _sample(n_docs=3, seed=1, name="web", docs=docs(3, 6, True))
    chat = _sample(n_docs=3, seed=2, name="chat", docs=docs(3, 6, False))
    samples = exp1.HeldOutSamples.from_sources(web, chat)
    s = exp1.concept_scores(model, samples, CONCEPTS, k=3)
    assert s.web.shape == (4, 12) and s.n_latents == 4
    torch.testing.assert_close(s.mix, gt.concept_auroc(model, samples.mix, CONCEPTS), equal_nan=True)
    torch.testing.assert_close(s.web, gt.concept_auroc(model, samples.web, CONCEPTS), equal_nan=True)
    # The web part scores are those of the web rows alone (encoded once on web + chat, then sliced).
    acts = latent_activations(model, web.batches(), [(g, i) for g in range(3) for i in range(4)])
    direct = gt.part_scores(acts, *gt.positional_labels(web.docs, web.doc_index, web.position, CONCEPTS), 3)
    torch.testing.assert_close(s.part("web").precision, direct.precision, equal_nan=True)
    assert s.part("chat").n_positive.sum() == 0 and s.part("mix").precision.shape == (4, 12)
    assert torch.isnan(s.chat).all()  # no positive labels on chat data: AUROC undefined
    assert s.labels_web.sum() == 9 * 4 and s.web_only == CONCEPTS and s.chat_only == []
    with pytest.raises(ValueError, match="no labelled documents"):
        exp1.concept_scores(model, exp1.HeldOutSamples.from_sources(_sample(), _sample()), CONCEPTS)


def test_refusal_triple_is_chosen_by_precision_and_its_sentences():
    r = exp1.refusal_triple(_scores())
    assert (r.triple, r.base_concept, r.k) == (1, "disclaimer", 20)
    assert (r.chat_precision, r.base_precision, r.joint) == pytest.approx((0.7, 0.8, 0.7))
    assert (r.chat_p_fires, r.base_p_fires, r.chat_auroc, r.base_auroc) == pytest.approx((0.35, 0.4, 0.85, 0.9))
    assert r.found(0.7) and not r.found(0.71)
    assert r.summary(0.5) == ("triple 1: chat part precision@20 0.70 (P(refusal | fires) 0.35, chance 0.25, AUROC "
                              "0.850) for chat refusals, base part precision@20 0.80 (P(disclaimer | fires) 0.40, "
                              "chance 0.25, AUROC 0.900) for web disclaimers, at the end of the prompt "
                              "(threshold 0.5)")  # fmt: skip
    assert r.verdict(0.9).endswith("-> no triple passes at precision >= 0.9.")
    assert "such a triple exists" in r.verdict(0.5)
    # A triple with a better chat AUROC but no precision loses: chat AUROC 0.99 for triple 0, precision unchanged.
    s = _scores()
    s.chat[0, 2 * 2 + 0] = 0.99
    assert exp1.refusal_triple(s).triple == 1


def test_focus_triple_prefers_ground_truth_then_settings_then_top_left():
    sc = _scatter()
    r = exp1.RefusalTriple(5, 0.8, 0.8, 0.9, "refusal")
    assert exp1.focus_triple(sc, 42, r) == 5 and r.found(0.8)
    assert exp1.focus_triple(sc, 42) == 42
    assert exp1.focus_triple(sc, None) == 0


def test_concept_share():
    assert exp1.concept_share(["a", "b", "a", "c"], {"a"}) == 0.5
    assert exp1.concept_share([], {"a"}) == 0.0


def test_corner_concepts_on_hand_made_scores():
    counts = torch.tensor([[10, 10], [5, 20], [20, 5]])  # triple 0 top-left, triple 1 bottom-right
    sc = exp1.ratio_scatter(FiringCounts(counts, 100), _settings(n_corner=1))
    cc = exp1.corner_concepts(_scores(), sc)
    assert cc.top_left == [0] and cc.top_left_best == ["turn_marker"]  # triple 1's chat part is best at refusals
    assert cc.n_alive == 2 and cc.top_left_chat_frac == 1.0 and cc.all_chat_frac == 0.5
    assert cc.bottom_right_web_frac == 1.0  # triple 1's base part is best at code, a web-only concept
    table = cc.table()
    assert table.to_dict("list") == {"top-left triple": [0], "chat part's best concept": ["turn_marker"],
                                     "precision at k": [0.9], "chat/shared": [2.0], "base/shared": [0.5]}  # fmt: skip
    assert cc.summary() == ("top-left triples whose chat part's best concept is chat-only: 100% "
                            "(all 2 kept triples whose chat part fires >= 1 times: 50%)")  # fmt: skip
    # The firing floor: only triple 0's chat part fires 10 times, so it alone is compared at a floor of 10.
    assert exp1.corner_concepts(_scores(), sc, min_firings=10).n_alive == 1
    # A part with zero precision for every concept has no best concept.
    assert exp1.ground_truth.best_part_concepts(torch.zeros(4, 6), torch.tensor([1]), CONCEPTS) == ["none"]
    assert cc.verdict().endswith("bottom-right base parts best at a web-only concept: 100%.")


# ---- baseline -------------------------------------------------------------------------------------------------------
def test_pick_query_and_best_tied_triple():
    assert exp1.pick_query(torch.tensor([3, 1]), torch.tensor([0.0, 5.0, 0.0, 4.0])) == 1
    assert exp1.pick_query(torch.tensor([], dtype=torch.long), torch.zeros(4)) is None
    row = torch.tensor([0.5, 0.6, 0.7, 0.55, float("nan"), 0.9, 0.5, 0.5, 0.5])  # shared, base, chat of 3 triples
    assert exp1.best_tied_triple(row, 3) == (2, pytest.approx(0.9))  # triple 2 is best (its base part, 0.9)
    row[5] = 0.1
    triple, base = exp1.best_tied_triple(row, 3)
    assert triple == 2 and base == pytest.approx(0.1)  # triple 2 still best through its shared part (0.7)


def _standard():
    """Standard crosscoder, d_model 4, 4 latents: 0 chat-exclusive and firing on x_chat[0]; 1 chat-exclusive but
    dead; 2 and 3 shared. Base decoder vectors: latent 2 along e0 (closest to latent 0's chat vector), 3 along e1."""
    model = make_model(architecture="standard", d_model=4, n_latents=4)
    with torch.no_grad():
        model.W_dec.zero_()
        model.W_dec[0, 1, 0] = 1.0
        model.W_dec[1, 1, 1] = 1.0
        model.W_dec[2, 0] = torch.tensor([1.0, 0.1, 0, 0])
        model.W_dec[2, 1, 2] = 1.0
        model.W_dec[3, 0, 1] = 1.0
        model.W_dec[3, 1, 3] = 1.0
        model.W_enc.zero_()
        model.W_enc[1, 0, 0] = 1.0  # latent 0 reads the chat model's first coordinate
        model.W_enc[0, 2, 2] = 1.0
        model.W_enc[0, 3, 3] = 1.0
        model.b_enc.copy_(torch.tensor([0.0, -100.0, 0.0, 0.0]))
        model.b_dec.zero_()
    return model


def _samples_4d():
    def sample(seed):
        s = _sample(n_docs=3, d_model=4, seed=seed)
        s.acts = s.acts.abs()
        return s

    return exp1.HeldOutSamples.from_sources(sample(1), sample(2))


def test_standard_baseline_without_ground_truth_picks_the_firing_chat_exclusive_latent():
    b = exp1.standard_baseline(_standard(), _samples_4d(), 2)
    assert b.chat_exclusive.tolist() == [0, 1]
    assert b.query == 0 and b.neighbours.tolist()[0] == 2 and b.concepts is None and b.verdict() is None
    assert b.cosines[0] == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)
    assert b.describe().endswith("; 2 chat-exclusive latents") and "'dead_all': 1" in b.describe()


def test_standard_baseline_without_a_firing_chat_exclusive_latent():
    std = _standard()
    with torch.no_grad():
        std.b_enc[0] = -100.0
    b = exp1.standard_baseline(std, _samples_4d(), 2)
    assert b.query is None and b.neighbours is None and b.verdict() is None


def test_concept_baseline_on_hand_made_precisions():
    std = _standard()
    std_score = torch.tensor([[0.9, 0.0, 0.6, 0.4], [0.0, 0.0, 0.7, 0.95], [0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2]])
    neighbours, cosines = torch.tensor([2, 3]), torch.tensor([0.99, 0.0])
    c = exp1.concept_baseline(std, std_score, 0, neighbours, cosines, _scores(n=2))
    assert c.concept == "refusal" and c.query_score == pytest.approx(0.9) and c.metric == "precision@20"
    assert c.neighbour_best == pytest.approx(0.6) and c.neighbour_scores == pytest.approx([0.6, 0.4])
    assert (c.tied_triple, c.tied_base) == (1, pytest.approx(0.0))  # triple 1's chat part is best at refusals
    assert list(c.table["latent"]) == [0, 2, 3] and list(c.table["cosine"]) == pytest.approx([1.0, 0.99, 0.0])
    assert list(c.table["best concept"]) == ["refusal", "disclaimer", "disclaimer"]
    assert list(c.table["relative norm"]) == pytest.approx([1.0, 0.5, 0.5])
    assert list(c.table["precision@20 refusal"]) == pytest.approx([0.9, 0.6, 0.4])
    b = exp1.StandardBaseline(evaluate(std, _samples_4d().mix.batches()), torch.tensor([0]), 0, neighbours, cosines,
                              c)  # fmt: skip
    assert b.verdict() == ("Baseline: standard chat-exclusive latent 0 picks out 'refusal' (precision@20 0.90); its 2 "
                           "nearest base decoder vectors reach at best 0.60 for it; the tied triple best at it (1) has "
                           "a base part at 0.00.")  # fmt: skip
    fig = figures.baseline_neighbours(b)
    assert fig.axes[1].get_xlabel() == "precision@20 for 'refusal'"
    plt.close(fig)


# ---- summary --------------------------------------------------------------------------------------------------------
def test_summary_lines_with_and_without_ground_truth():
    held = HeldOutMetrics(torch.tensor([0.91234, 0.8]), torch.tensor([3.04, 1.0, 2.26]),
                          FiringCounts(torch.tensor([[1, 0], [1, 1], [0, 0]]), 1234))  # fmt: skip
    tied = SimpleNamespace(cfg=SimpleNamespace(n_latents=4, eta=2.0, shared_penalty="sum"))
    text = exp1.summary("tiny", PAIR, tied, held, _scatter(), _settings())
    assert text.splitlines() == [
        "Scale: tiny (pair toy, layer 3, 4 x 3 latents, eta 2.0).",
        "Held-out explained variance: base 0.912, chat 0.800; L0 shared/base/chat 3.0/1.0/2.3; dead [1, 0, 2] over "
        "1,234 tokens.",
        "Ratio scatter: 2 triples plotted, 1 dropped as rare, 1 never shared; most top-left 0, most bottom-right 2.",
    ]
    r, cc = exp1.RefusalTriple(1, 0.8, 0.8, 0.9, "refusal"), exp1.corner_concepts(_scores(n=4), _scatter())
    no_query = exp1.StandardBaseline(held, torch.tensor([]), None)
    lines = exp1.summary("tiny", PAIR, tied, held, _scatter(), _settings(), refusal=r, corners=cc,
                         baseline=no_query).splitlines()  # fmt: skip
    assert len(lines) == 5 and lines[3] == r.verdict(0.8) and lines[4] == cc.verdict()
    with pytest.raises(ValueError, match="both ground-truth results"):
        exp1.summary("tiny", PAIR, tied, held, _scatter(), _settings(), refusal=r)


# ---- figures --------------------------------------------------------------------------------------------------------
def test_ratio_points_mark_the_corners():
    sc = _scatter()
    pts = figures.ratio_points(sc.ratios, sc.corners)
    assert pts.to_dict("list") == {"triple": [0, 2], "base/shared": [0.5, 2.0], "chat/shared": [2.0, 0.5],
                                   "kind": ["top-left", "bottom-right"]}  # fmt: skip
    assert list(figures.ratio_points(sc.ratios)["kind"]) == ["other", "other"]


def test_figures_draw_what_they_are_given():
    sc = _scatter()
    fig = figures.firing_ratio_scatter(sc.ratios, Corners(torch.tensor([0]), torch.tensor([2])), title="t")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "top-left (1)" in labels and "bottom-right (1)" in labels and "not shown: 1 rare, 1 never shared" in labels
    plt.close(fig)
    table = pd.DataFrame([[0.9, float("nan")], [0.25, 0.5]], index=["a", "b"], columns=["x", "y"])
    fig = figures.auroc_heatmap(table)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.90", "0.25", "0.50"]  # the NaN cell is blank
    plt.close(fig)
    fig = figures.auroc_heatmap(table.to_numpy(), ["a", "b"], ["x", "y"])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b"]
    plt.close(fig)
    with pytest.raises(ValueError, match="no query latent"):
        figures.baseline_neighbours(exp1.StandardBaseline(None, torch.tensor([]), None))  # type: ignore[arg-type]


# ---- seeds and the glued findings -----------------------------------------------------------------------------------
def test_prepare_training_on_a_lab_pair_harvests_once_for_every_consumer(monkeypatch):
    harvested = []
    rows = random_rows(64)

    def fake_collect(pair, seqs, **kw):
        harvested.append((len(seqs), kw))
        return SimpleNamespace(batches=lambda bs, seed=0: InMemoryBatches(rows, bs, seed=seed, epochs=None))

    monkeypatch.setattr(data_mod, "training_sequences", lambda pair, n, **kw: [[2, 3, 4]] * n)
    monkeypatch.setattr(data_mod, "collect_activations", fake_collect)
    monkeypatch.setattr(data_mod, "is_lab", lambda pair: True)
    td = exp1.prepare_training(PAIR, _settings(train_docs=5, batch_size=16, model_batch_size=3))
    assert harvested == []  # lazy: nothing is harvested before training asks
    first, second = next(td.make_data()), next(td.make_data())
    assert td.activations() is td.activations()
    assert harvested == [(5, dict(exclude_token_ids=[], batch_size=3, progress=False))]
    torch.testing.assert_close(first, second)  # seed-0 batches, as training_data(seed=0) serves them
    assert first.shape == (16, 2, 16)


def _held(l0_base, l0_chat, dead_base=0, dead_chat=0, ev=(0.9, 0.8)):
    counts = torch.zeros(3, 4, dtype=torch.long)
    counts[1, : 4 - dead_base] = 1
    counts[2, : 4 - dead_chat] = 1
    return HeldOutMetrics(torch.tensor(ev), torch.tensor([5.0, l0_base, l0_chat]), FiringCounts(counts, 100))


def test_seed_runs_interval_and_verdict_on_hand_made_metrics():
    up = exp1.SeedRuns([0, 1, 2], 10, [_held(0.1, 1.1), _held(0.2, 1.1, dead_chat=1), _held(0.1, 1.2)])
    assert up.l0_chat_minus_base().mean == pytest.approx(1.0) and up.l0_chat_minus_base().n == 3
    assert up.l0_verdict() == "the chat-only group fires more than the base-only group"
    assert up.dead_chat_minus_base().mean == pytest.approx(1 / 3)
    assert up.table()["dead_chat"] == [0, 1, 0]
    mixed = exp1.SeedRuns([0, 1, 2], 10, [_held(0.1, 1.1), _held(1.0, 0.1), _held(0.5, 0.5)])
    assert mixed.l0_verdict() == "inconclusive at this scale"
    lines = mixed.summary().splitlines()
    assert lines[0].startswith("3 tied crosscoders (seeds [0, 1, 2], 10 steps each); held-out explained variance "
                               "base 0.900 [0.900, 0.900] (3 seeds)")  # fmt: skip
    assert lines[1].endswith("-> inconclusive at this scale.")


def test_seed_runs_train_one_tied_crosscoder_per_seed_then_load(tmp_path):
    rows = random_rows(256)
    acts = SimpleNamespace(harvest=SimpleNamespace(acts=rows), d_model=16,
                           batches=lambda bs, seed=0: InMemoryBatches(rows, bs, seed=seed, epochs=None))  # fmt: skip
    s = _settings(seeds=(0, 1), seed_steps=3)
    td = exp1.TrainingData(PAIR, s, [[2, 3]] * 4, lambda: acts.batches(32), [], lambda: acts)
    samples = exp1.HeldOutSamples.from_sources(_sample(seed=1), _sample(seed=2))
    runs = exp1.seed_runs(td, samples, tmp_path)
    assert runs.seeds == [0, 1] and runs.n_steps == 3 and len(runs.held) == 2
    (folder,) = tmp_path.iterdir()  # keyed by the settings: other seed_steps would not load these runs
    assert sorted(p.name for p in folder.iterdir()) == ["seed0", "seed1"]
    assert not torch.equal(runs.held[0].l0, runs.held[1].l0)  # another init and batch order
    again = exp1.seed_runs(td, samples, tmp_path)  # finished runs are loaded
    torch.testing.assert_close(again.held[1].l0, runs.held[1].l0)
    with pytest.raises(ValueError, match="seeds is empty"):
        exp1.seed_runs(exp1.TrainingData(PAIR, _settings(seeds=()), [], td.make_data, []), samples, tmp_path)
    with pytest.raises(ValueError, match="streams its activations"):
        exp1.seed_runs(exp1.TrainingData(PAIR, s, [], td.make_data, []), samples, tmp_path)


def test_findings_give_every_key_the_page_and_readme_paste():
    from tests.test_findings import glued_keys

    held = _held(0.3, 0.26, dead_base=1, ev=(0.97, 0.968))
    tied = SimpleNamespace(cfg=SimpleNamespace(n_latents=4, eta=2.0, shared_penalty="sum"))
    seeds = exp1.SeedRuns([0, 1, 2], 10, [_held(0.1, 1.1), _held(1.0, 0.1), _held(0.5, 0.5)])
    r, cc = exp1.RefusalTriple(7, 0.42, 0.42, 0.9, "refusal"), exp1.corner_concepts(_scores(n=4), _scatter())
    out = exp1.findings("tiny", PAIR, tied, held, _settings(), refusal=r, corners=cc, seeds=seeds)
    assert glued_keys("exp1_") <= set(out) and all(isinstance(v, str) for v in out.values())
    assert out["exp1_ev"] == "base 0.970, chat 0.968"
    assert out["exp1_dead"] == "base-only 1, chat-only 0 of 4"
    assert out["exp1_refusal_recovered"] == "no: joint precision@20 0.42 < 0.8"
    assert out["exp1_corners"] == "not measured" and out["exp1_rec_ev"].startswith("n/a (the recommended")
    assert out["exp1_seed_verdict"] == "inconclusive at this scale" and out["exp1_seeds"] == "3 seeds x 10 steps"
    assert out["exp1_baseline"] == "no firing chat-exclusive latent in the standard crosscoder"
    bare = exp1.findings("paper", PAIR, tied, held, _settings())
    assert set(bare) == set(out)
    assert bare["exp1_refusal"].startswith("n/a") and bare["exp1_seed_l0"] == "no seed runs at this scale"


# ---- corners: the firing floor and the bootstrap ---------------------------------------------------------------------
def test_a_corner_needs_enough_exclusive_firings():
    # Triple 0: chat part 19 firings, triple 1: 20 (both far above their shared and base parts); triple 2: base 25.
    counts = torch.tensor([[1, 1, 1], [0, 0, 25], [19, 20, 0]])
    sc = exp1.ratio_scatter(FiringCounts(counts, 100), _settings(n_corner=3, min_exclusive_firings=20))
    assert sc.corners.top_left.tolist() == [1] and sc.corners.bottom_right.tolist() == [2]
    m = exp1.corners.corner_masks(counts.double(), torch.tensor(1000.0), min_frequency=0.0, min_firings=20, ratio=2.0)
    assert m["top-left"].tolist() == [False, True, False] and m["bottom-right"].tolist() == [False, False, True]
    with pytest.raises(ValueError, match="min_firings >= 1"):
        exp1.corners.corner_masks(counts, torch.tensor(1.0), min_frequency=0.0, min_firings=0, ratio=2.0)


def test_corner_share_bootstrap_on_a_constructed_case():
    s = _settings(min_frequency=0.0, min_exclusive_firings=20, corner_ratio=2.0, n_boot=400)
    # 10 documents; triple 1 fires in its shared part in every one (always kept, never a corner).
    docs = torch.zeros(10, 3, 2, dtype=torch.int32)
    docs[:, 0, 1] = 3
    spread = docs.clone()
    spread[:, 2, 0] = 5  # triple 0's chat part: 5 firings in every document -> a corner in every resample
    shares = exp1.corner_shares(spread, torch.full((10,), 50), s)
    assert (shares.top_left.share, shares.top_left.low, shares.top_left.high) == (0.5, 0.5, 0.5)
    assert shares.top_left.count == 1 and shares.n_kept == 2 and shares.bottom_right.share == 0.0
    one = docs.clone()
    one[0, 2, 0] = 25  # all 25 firings in one document: resamples without it (about 35%) have no corner
    shares = exp1.corner_shares(one, torch.full((10,), 50), s)
    assert shares.top_left.share == 0.5 and shares.top_left.low == 0.0 and shares.top_left.high == 0.5
    assert shares.text().startswith("top-left 50.0% [0.0%, 50.0%] (1 triples)")
    # Stratified: with document 0 alone in its stratum it is drawn in every resample, so the interval closes.
    pinned = exp1.corner_shares(one, torch.full((10,), 50), s, strata=[1] + [0] * 9)
    assert (pinned.top_left.low, pinned.top_left.high) == (0.5, 0.5)
    with pytest.raises(ValueError, match="strata has 3 labels"):
        exp1.corner_shares(one, torch.full((10,), 50), s, strata=[0, 1, 0])


def test_document_counts_add_up_to_the_held_out_counts_and_analyse_both_models():
    model, rec = make_model(architecture="tied", n_latents=8), make_model(architecture="tied", n_latents=8)
    samples = exp1.HeldOutSamples.from_sources(_sample(seed=1, name="web"), _sample(seed=2, name="chat"))
    counts, tokens = exp1.corners.document_firing_counts(model, samples.mix)
    assert counts.shape == (8, 3, 8) and tokens.tolist() == [5] * 8
    torch.testing.assert_close(counts.sum(dim=0).long(), evaluate(model, samples.mix.batches()).firing.counts)
    s = _settings(min_exclusive_firings=1, n_boot=50)
    both = [exp1.analyse(name, m, samples, s, ground_truth=False) for name, m in (("a", model), ("b", rec))]
    assert both[0].shares.n_docs == 8 and both[0].scores is None
    table = exp1.side_by_side(both, s)
    assert list(table.columns) == ["a", "b"] and table.loc["penalty", "a"] == "sum, eta 2.0"
    assert table.loc["top-left share [95% CI]", "b"] == both[1].shares.top_left.text()
    fig = figures.ratio_scatters({r.name: (r.scatter.ratios, r.scatter.corners) for r in both})
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"] and fig.axes[0].get_xlim() == fig.axes[1].get_xlim()
    plt.close(fig)
    with pytest.raises(ValueError, match="no ground truth"):
        exp1.precision_tables(both)
    # With ground truth: one row per Figure-3 score, the same rows for both models whichever base concept won.
    sc = _scores(n=4)
    gt_results = [exp1.ArchResults(name, r.model, r.held, r.scatter, r.shares, sc, exp1.refusal_triple(sc),
                                   exp1.corner_concepts(sc, _scatter())) for name, r in zip("ab", both, strict=True)]
    table = exp1.side_by_side(gt_results, s)
    row = "base part on web refusals or disclaimers (precision@20, P | fires)"
    assert table.loc[row, "b"] == "0.80, 0.40 (disclaimers)"
    assert table.notna().all().all() and table.loc["Figure-3 triple found", "a"] == "no"  # 0.7 < 0.8
    assert list(exp1.precision_tables(gt_results).columns) == ["a: base / web", "a: chat / chat", "b: base / web",
                                                               "b: chat / chat"]  # fmt: skip
    out = exp1.findings("tiny", PAIR, model, both[0].held, s, shares=both[0].shares, recommended=both[1])
    assert out["exp1_rec_refusal"].startswith("n/a") and out["exp1_rec_corners"] == both[1].shares.text()
    assert {k.replace("exp1_rec_", "exp1_") for k in out if k.startswith("exp1_rec_")} <= set(out)
