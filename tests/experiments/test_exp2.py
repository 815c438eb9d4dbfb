"""Experiment 2: settings, the colour toy's reports and colour choice, blue/green latents by category, the tied
triple and the summary (hand-made toys, decoders and unembeddings with known answers)."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from tests.helpers import make_model, random_rows
from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer
from tiedlib.activations import collect as collect_module
from tiedlib.activations.collect import PairActivations
from tiedlib.activations.harvest import HarvestBatch
from tiedlib.config import pick
from tiedlib.experiments.exp2 import (
    TABLE,
    HeldOutChoice,
    TiedColourTriple,
    acts_report,
    collect,
    colour_latents_by_category,
    figures,
    final_metrics,
    finetune_report,
    fit_summary,
    held_out_choice,
    sets_report,
    summary,
    tied_colour_triple,
    train,
    unembeddings,
)
from tiedlib.pairs.colours import COLOUR_TOY, ColourToy

BLUE, GREEN = 3, 4
IDS = {"blue": BLUE, "green": GREEN}


class _Tok:
    """Decodes id ``i`` as ``t<i>`` (words joined by spaces)."""

    def decode(self, ids):
        return " ".join(f"t{int(i)}" for i in ids)


def _toy(sets, models=None, info=None, n_finetune=1, source=None) -> ColourToy:
    cfg = replace(COLOUR_TOY["smoke"], n_finetune_per_colour=n_finetune, n_crosscoder_per_colour=1)
    source = source or SimpleNamespace(tokenizer=_Tok(), layer=0, d_model=8, config=None)
    return ColourToy(source=source, models=models or {}, info=info or {}, sets=sets, colour_ids=IDS, pad_id=0,
                     cfg=cfg)


# ---------------------------------------------------------------------------------------------------------- presets
def test_settings_share_the_colour_toy_and_derive_steps_and_run_id():
    for scale, settings in TABLE.items():
        assert settings.toy == COLOUR_TOY[scale]
    s = pick(TABLE, "tiny")
    assert s.n_steps == 250_000 // 512 == 488
    assert replace(s, train_tokens=10).n_steps == 1
    assert s.run_id == pick(TABLE, "tiny").run_id and len(s.run_id) == 10
    assert s.run_id != pick(TABLE, "tiny", lr=1e-4).run_id
    assert s.run_id != replace(s, toy=replace(s.toy, finetune_epochs=1)).run_id
    with pytest.raises(ValueError, match="positive"):
        pick(TABLE, "smoke", top_k=0)
    with pytest.raises(ValueError, match="lr"):
        pick(TABLE, "smoke", lr=0.0)


# -------------------------------------------------------------------------------------------------------------- toy
def test_sets_report_counts_and_decodes_without_bos():
    toy = _toy({"blue": [[1, 7, 8], [1, 9]], "green": [[1, 5, 6, 7]]})
    assert sets_report(toy).splitlines() == [
        "blue: 2 prefixes, mean length 2.5 tokens; e.g. 't7 t8' -> ' blue'",
        "green: 1 prefixes, mean length 4.0 tokens; e.g. 't5 t6 t7' -> ' green'",
    ]
    with pytest.raises(ValueError, match="green set is empty"):
        sets_report(_toy({"blue": [[1, 2]], "green": []}))


def test_finetune_report_says_trained_or_loaded_and_the_loss_ends():
    info = {"no-swap": {"cached": False, "n_examples": 48, "losses": [2.5, 1.0, 0.1234]},
            "half-swap": {"cached": True, "n_examples": 48, "losses": [2.0, 0.75]}}
    assert finetune_report(info).splitlines() == ["no-swap: trained, 48 examples, loss 2.500 -> 0.123",
                                                  "half-swap: loaded from cache, 48 examples, loss 2.000 -> 0.750"]


class _LastTokenLM(nn.Module):
    """Logits depend on the current token only: ``logits[b, t] = table[input_ids[b, t]]``."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def _lm(p_blue_after_7: float, p_blue_after_8: float) -> _LastTokenLM:
    """Vocab of 9; after token 7 (blue context) or 8 (green context) only blue and green have probability."""
    table = torch.full((9, 9), -1e4)
    for row, p in ((7, p_blue_after_7), (8, p_blue_after_8)):
        table[row, BLUE], table[row, GREEN] = math.log(p), math.log(1 - p)
    return _LastTokenLM(table)


def test_held_out_choice_measures_each_model_on_prefixes_the_fine_tunes_never_saw():
    # The first prefix of each set is the fine-tuning one (ends in the *other* context: it must not be measured).
    sets = {"blue": [[1, 8], [1, 7], [1, 5, 7]], "green": [[1, 7], [1, 8], [1, 8]]}
    models = {"base": _lm(0.75, 0.25), "no-swap": _lm(0.9, 0.1), "half-swap": _lm(0.5, 0.5)}
    choice = held_out_choice(_toy(sets, models), n=5)
    assert isinstance(choice, HeldOutChoice) and choice.n_prefixes == 4
    assert choice.by_model["base"] == pytest.approx({"p_true": 0.75, "p_other": 0.25, "true_wins": 1.0})
    assert choice.by_model["no-swap"]["p_true"] == pytest.approx(0.9)
    assert choice.by_model["half-swap"]["true_wins"] == 0.0  # a tie is not a win
    assert list(choice.table().index) == ["base", "no-swap", "half-swap"]
    assert choice.table().loc["no-swap", "p_other"] == pytest.approx(0.1)
    assert choice.summary().splitlines()[0] == ("     base: P(true colour) 0.750, P(other colour) 0.250, true colour "
                                                "preferred on 100% of 4 held-out prefixes")
    assert held_out_choice(_toy(sets, models), n=1).n_prefixes == 2


def test_unembeddings_fold_the_final_norm_gain_of_each_model():
    models = {"base": tiny_gemma2(n_layers=1, seed=0), "no-swap": tiny_gemma2(n_layers=1, seed=1)}
    with torch.no_grad():
        models["no-swap"].model.norm.weight.fill_(1.0)  # Gemma multiplies by 1 + weight: a gain of 2
    W_U = unembeddings(_toy({}, models), fold_final_norm=True)
    assert set(W_U) == {"base", "no-swap"}
    lm_head = models["no-swap"].lm_head.weight.detach().T
    torch.testing.assert_close(W_U["no-swap"], 2 * lm_head)
    torch.testing.assert_close(unembeddings(_toy({}, models), fold_final_norm=False)["no-swap"], lm_head)


def test_collect_harvests_two_toy_models_at_the_source_layer():
    tok = tiny_tokenizer()
    models = {"base": tiny_gemma2(n_layers=2, seed=0), "no-swap": tiny_gemma2(n_layers=2, seed=1)}
    source = SimpleNamespace(tokenizer=tok, layer=1, d_model=32, config=None)
    seqs = [[1, 10, 11, 12], [1, 13, 14]]
    acts = collect(_toy({}, models, source=source), "base", "no-swap", seqs)
    assert acts.harvest.acts.shape == (5, 2, 32)  # BOS dropped
    assert acts.harvest.token_ids.tolist() == [10, 11, 12, 13, 14]
    assert not torch.allclose(acts.harvest.acts[:, 0], acts.harvest.acts[:, 1])
    assert acts_report(acts, len(seqs), 1) == "5 tokens from 2 entries at layer 1"


def test_collect_streams_past_the_memory_limit_and_training_and_the_tied_triple_agree(tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    models = {"no-swap": tiny_gemma2(n_layers=2, seed=1), "half-swap": tiny_gemma2(n_layers=2, seed=2)}
    toy = _toy({}, models, source=SimpleNamespace(tokenizer=tok, layer=1, d_model=32, config=None))
    ids = {"blue": tok.convert_tokens_to_ids("blue"), "green": tok.convert_tokens_to_ids("red")}
    seqs = [s + [ids["blue" if i % 2 else "green"]] for i, s in enumerate(random_sequences(10, 3, 8, len(tok)))]
    whole = collect(toy, "no-swap", "half-swap", seqs)
    assert whole.in_memory
    monkeypatch.setattr(collect_module, "MEMORY_LIMIT_BYTES", 1)  # nothing fits: stream
    streamed = collect(toy, "no-swap", "half-swap", seqs, train_batch_size=16)
    assert not streamed.in_memory
    assert acts_report(streamed, 10, 1) == f"{whole.n_tokens} tokens from 10 entries at layer 1 (streamed)"
    settings = pick(TABLE, "smoke", n_latents=8, train_tokens=8 * 16, batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the buffer's new epochs are expected, and not shown
        tied, metrics = train(settings, tmp_path / "tied", streamed, "tied")
    assert metrics[-1]["step"] == 8 and tied.cfg.norm_factors == pytest.approx(streamed.norm_factors.tolist())
    g = torch.Generator().manual_seed(0)
    W_U = {"a": torch.randn(32, len(tok), generator=g), "b": torch.randn(32, len(tok), generator=g)}
    assert tied_colour_triple(tied, W_U, ("a", "b"), ids, streamed) == tied_colour_triple(tied, W_U, ("a", "b"), ids,
                                                                                            whole)


# ---------------------------------------------------------------------------------------------------------- training
def _acts(rows: torch.Tensor, token_ids: torch.Tensor | None = None) -> PairActivations:
    n = rows.shape[0]
    ids = torch.full((n,), 20) if token_ids is None else token_ids
    h = HarvestBatch(rows, ids, torch.zeros(n, dtype=torch.long), torch.arange(n))
    return PairActivations(h, torch.ones(2))


def test_train_uses_the_crosscoder_settings_and_reloads_a_finished_run(tmp_path):
    settings = pick(TABLE, "smoke", n_latents=24, train_tokens=10 * 64, batch_size=64, lr=1e-3)
    acts = _acts(random_rows(256, d_model=16))
    cc, metrics = train(settings, tmp_path / "std", acts, "standard")
    assert cc.cfg.architecture == "standard" and cc.cfg.n_latents == 24 and cc.cfg.d_model == 16
    assert metrics and metrics[-1]["step"] == settings.n_steps == 10
    again, again_metrics = train(settings, tmp_path / "std", acts, "standard")
    torch.testing.assert_close(again.W_dec, cc.W_dec)
    assert again_metrics == metrics
    tied, _ = train(settings, tmp_path / "tied", acts, "tied")
    assert tied.cfg.n_groups == 3 and tied.cfg.eta == settings.eta


def test_train_recommended_is_the_written_penalty_tied_crosscoder_on_the_same_settings(tmp_path):
    from tiedlib.crosscoders.crosscoder import RECOMMENDED_TIED_ETA, WrittenTiedCrosscoder, recommended_tied

    settings = pick(TABLE, "smoke", n_latents=12, train_tokens=6 * 32, batch_size=32, lr=1e-3)
    acts = _acts(random_rows(128, d_model=16))
    rec, metrics = train(settings, tmp_path / "rec", acts, "recommended")
    assert isinstance(rec, WrittenTiedCrosscoder) and rec.cfg.shared_penalty == "written"
    assert rec.cfg.eta == RECOMMENDED_TIED_ETA != settings.eta and rec.cfg.n_latents == 12 and rec.cfg.n_groups == 3
    assert rec.cfg.to_dict() | {"norm_factors": None} == recommended_tied(16, 12).cfg.to_dict()  # the same config
    assert metrics[-1]["step"] == settings.n_steps == 6
    again, _ = train(settings, tmp_path / "rec", acts, "recommended")  # reloaded as the same class
    assert isinstance(again, WrittenTiedCrosscoder)
    torch.testing.assert_close(again.W_dec, rec.W_dec)
    with pytest.raises(ValueError, match="architecture must be one of"):
        train(settings, tmp_path / "x", acts, "tied_max")


def test_final_metrics_and_fit_summary_read_the_last_step():
    metrics = [{"explained_variance": 0.1, "l0": 50.0}, {"explained_variance": 0.81234, "l0": 12.345, "mse": 1.0}]
    assert final_metrics(metrics) == {"explained_variance": 0.812, "l0": 12.345}
    assert final_metrics(metrics, keys=("l0", "missing"), digits=1) == {"l0": 12.3}
    assert final_metrics([]) == {}
    assert fit_summary(metrics) == "explained variance 0.812, L0 12.3"
    with pytest.raises(ValueError, match="no metrics"):
        fit_summary([])


# ------------------------------------------------------------------------------------------------- colour latents
def _W_U(colour_dir: int, other_dir: int, d: int = 8, vocab: int = 10) -> torch.Tensor:
    """Direction ``colour_dir`` reads as blue and green (logit 1 each), ``other_dir`` as token 5, direction 2 as 6."""
    W_U = torch.zeros(d, vocab)
    W_U[colour_dir, BLUE] = W_U[colour_dir, GREEN] = 1.0
    W_U[other_dir, 5] = 1.0
    W_U[2, 6] = 1.0
    return W_U


def _e(*pairs, d: int = 8) -> torch.Tensor:
    v = torch.zeros(d)
    for i, x in pairs:
        v[i] = x
    return v


def _standard_with_decoder(halves: list[tuple[torch.Tensor, torch.Tensor]]):
    model = make_model(d_model=8, n_latents=len(halves))
    with torch.no_grad():
        model.W_dec.copy_(torch.stack([torch.stack([b, c]) for b, c in halves]))
    return model


# Model "b" reads direction 1 as blue/green, model "c" direction 0 (so using the wrong W_U finds other latents).
W_U = {"b": _W_U(colour_dir=1, other_dir=0), "c": _W_U(colour_dir=0, other_dir=1)}
ZERO = torch.zeros(8)
HALVES = [
    (_e((0, 1.0)), ZERO),  # 0: b-exclusive, reads as token 5 in b
    (_e((1, 1.0), (0, 0.5)), ZERO),  # 1: b-exclusive, blue/green in b
    (ZERO, _e((0, 1.0), (2, 0.5))),  # 2: c-exclusive, blue/green in c
    (ZERO, _e((1, 1.0))),  # 3: c-exclusive, reads as token 5 in c
    (_e((0, 1.0)), _e((0, 1.0))),  # 4: shared, blue/green on its c half
    (_e((1, 1.0)), _e((2, 1.0))),  # 5: shared, reads as token 6 on its c half
]


def test_colour_latents_by_category_ranks_each_category_through_its_own_model():
    found = colour_latents_by_category(_standard_with_decoder(HALVES), W_U, ("b", "c"), IDS, top_k=3, shared=True)
    assert found.categories.base_exclusive.tolist() == [0, 1] and found.categories.chat_exclusive.tolist() == [2, 3]
    assert found.r.tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0, 0.5, 0.5])
    assert found.hits("base") == [1] and found.hits("chat") == [2] and found.hits("shared") == [4]
    assert (found.best("base"), found.best_rank("base")) == (1, 0)
    assert found.best_rank("chat") == 0
    # cos(e1 + 0.5 e0, e0 + 0.5 e2) = 0.5 / 1.25
    assert found.best_cosine() == pytest.approx(0.4)
    idx, cos = found.closest_shared()  # the chat half of 2 against the chat halves of 4 (e0) and 5 (e2)
    assert idx == 4 and cos == pytest.approx(1 / math.sqrt(1.25))
    assert found.partner_is_colour()
    assert found.category_summary() == "2 b-exclusive, 2 shared, 2 c-exclusive latents"
    assert found.hits_summary() == "blue/green latents: b-exclusive [1], c-exclusive [2], shared [4]"
    assert found.best_summary() == ("best candidates: b-exclusive 1 (worse colour at rank 0), c-exclusive 2 (rank 0); "
                                    "cosine of their decoder vectors 0.400")
    assert found.partner_summary() == ("best c-exclusive candidate 2; closest shared latent 4 at cosine 0.894 (a "
                                       "blue/green latent itself: True)")


def test_top_logit_panels_read_each_best_candidate_through_its_own_unembedding():
    found = colour_latents_by_category(_standard_with_decoder(HALVES), W_U, ("b", "c"), IDS)
    panels = found.top_logit_panels(W_U, _Tok(), k=3)
    assert [title for title, _ in panels] == ["b-excl. latent 1 (b W_U): passes", "c-excl. latent 2 (c W_U): passes"]
    for (_, tokens), third in zip(panels, ("t5", "t6"), strict=True):
        assert sorted(tokens[:2]) == [("t3", 1.0), ("t4", 1.0)]  # blue and green tie for the top
        assert tokens[2] == (third, 0.5)


def test_colour_latents_with_empty_categories_and_missing_parts():
    all_shared = [(_e((0, 1.0)), _e((0, 1.0))), (_e((1, 1.0)), _e((1, 1.0)))]
    found = colour_latents_by_category(_standard_with_decoder(all_shared), W_U, ("b", "c"), IDS)
    assert found.best("base") is None and found.best_rank("chat") == -1
    assert math.isnan(found.best_cosine())
    idx, cos = found.closest_shared()
    assert idx is None and math.isnan(cos) and not found.partner_is_colour()
    assert found.top_logit_panels(W_U, _Tok()) == []
    assert "shared" not in found.hits_summary()
    with pytest.raises(ValueError, match="shared=True"):
        found.hits("shared")
    with pytest.raises(ValueError, match=r"no unembedding for \['d'\]"):
        colour_latents_by_category(_standard_with_decoder(all_shared), W_U, ("b", "d"), IDS)


# ------------------------------------------------------------------------------------------------------- tied triple
def _tied_with_decoder(halves, fires_on_dim0: int):
    """A tied crosscoder whose shared group of index ``fires_on_dim0`` fires where base dimension 0 exceeds 0.5 and
    whose chat-only group of that index always fires; nothing else fires."""
    model = make_model(architecture="tied", d_model=8, n_latents=len(halves))
    with torch.no_grad():
        model.W_dec.copy_(torch.stack([torch.stack([b, c]) for b, c in halves]))
        model.W_enc.zero_()
        model.b_enc.fill_(-1.0)
        model.W_enc[0, 0, 0, fires_on_dim0] = 1.0
        model.b_enc[0, fires_on_dim0] = -0.5
        model.b_enc[2, fires_on_dim0] = 1.0
    return model


def _colour_acts() -> PairActivations:
    rows = torch.zeros(8, 2, 8)
    rows[:2, 0, 0] = 1.0  # the two colour tokens, where the shared group fires
    ids = torch.tensor([BLUE, GREEN, 20, 20, 21, 21, 22, 22])
    return _acts(rows, ids)


def test_tied_colour_triple_picks_the_index_blue_green_on_both_halves():
    halves = [(_e((2, 1.0)), _e((2, 1.0))),  # 0: token 6 on both halves
              (_e((1, 1.0)), _e((2, 1.0))),  # 1: blue/green on the b half only
              (_e((1, 1.0)), _e((0, 1.0))),  # 2: blue/green on both halves
              (_e((2, 1.0)), _e((0, 1.0)))]  # 3: blue/green on the c half only
    tied = _tied_with_decoder(halves, fires_on_dim0=2)
    triple = tied_colour_triple(tied, W_U, ("b", "c"), IDS, _colour_acts(), top_k=3)
    assert (triple.hits_base, triple.hits_chat, triple.both) == ([1, 2], [2, 3], [2])
    assert triple.triple == 2 and not triple.single_triple
    assert triple.firing["colour tokens"] == pytest.approx([1.0, 0.0, 1.0])
    assert triple.firing["all tokens"] == pytest.approx([0.25, 0.0, 1.0])
    assert triple.summary().splitlines() == [
        "indices whose b half is blue/green: [1, 2]; c half: [2, 3]; both: [2]",
        "triple 2: shared fires on 100.0% of colour tokens, base fires on 0.0% of colour tokens, chat fires on 100.0% "
        "of colour tokens",
    ]


def test_tied_colour_triple_falls_back_to_the_best_ranked_half():
    # No index is blue/green on both halves: the c half of index 1 ranks blue/green first (rank 0), the b half's best
    # candidate only at rank 1, so the triple is 1.
    halves = [(_e((1, 1.0), (2, 2.0)), _e((2, 1.0))), (_e((2, 1.0)), _e((0, 1.0)))]
    triple = tied_colour_triple(_tied_with_decoder(halves, 1), W_U, ("b", "c"), IDS, _colour_acts())
    assert triple.both == [] and triple.triple == 1
    # On a tie the b half wins.
    tie = [(_e((1, 1.0)), _e((2, 1.0))), (_e((2, 1.0)), _e((0, 1.0)))]
    assert tied_colour_triple(_tied_with_decoder(tie, 0), W_U, ("b", "c"), IDS, _colour_acts()).triple == 0
    with pytest.raises(ValueError, match="tied crosscoder"):
        tied_colour_triple(_standard_with_decoder(tie), W_U, ("b", "c"), IDS, _colour_acts())
    # Nothing passes on either half (index 0's c half has both colours at a negative logit): no triple is inspected,
    # and no firing is measured for a failing candidate.
    failing = [(_e((2, 1.0)), _e((0, -1.0))), (_e((0, 1.0)), _e((2, 1.0)))]
    none = tied_colour_triple(_tied_with_decoder(failing, 0), W_U, ("b", "c"), IDS, _colour_acts())
    assert (none.hits_base, none.hits_chat, none.triple, none.firing) == ([], [], None, None)
    assert none.n_passing == 0 and none.summary().splitlines()[1].startswith("no index passes the blue/green test")
    assert none.passing_text() == "0 indices pass (b half 0, c half 0, both 0)"


def test_single_triple_needs_the_same_one_index_on_both_halves():
    one = TiedColourTriple(("b", "c"), [2], [2], 2, {"colour tokens": [1, 0, 0], "all tokens": [1, 0, 0]})
    assert one.single_triple
    assert not replace(one, hits_chat=[2, 3]).single_triple
    assert not replace(one, hits_base=[1, 2], hits_chat=[1, 2]).single_triple


# ---------------------------------------------------------------------------------------------------------- summary
def test_summary_prints_every_result():
    settings = pick(TABLE, "smoke")
    choice = HeldOutChoice({"base": {"p_true": 0.5, "p_other": 0.25, "true_wins": 0.5},
                            "no-swap": {"p_true": 0.9, "p_other": 0.05, "true_wins": 1.0},
                            "half-swap": {"p_true": 0.45, "p_other": 0.41, "true_wins": 0.5}}, 4)
    found = colour_latents_by_category(_standard_with_decoder(HALVES), W_U, ("b", "c"), IDS, shared=True)
    triple = TiedColourTriple(("b", "c"), [1, 2], [2], 2, {"colour tokens": [1, 0, 0], "all tokens": [1, 0, 0]})
    lines = summary(settings, layer=1, n_entries=80, choice=choice, no_swap_half_swap=found, base_half_swap=found,
                    tied=triple, scale="smoke").splitlines()
    assert lines[0] == ("Scale: smoke (base model of the smoke pair, layer 1; 24 + 24 fine-tuning prefixes, "
                        "crosscoders on 80 entries repeated to 20,000 tokens, 128 latents).")
    assert lines[1] == ("Fine-tuning: P(true colour) on held-out prefixes: base 0.50, no-swap 0.90, half-swap 0.45 "
                        "(other colour 0.41).")
    assert "2 b-exclusive and 2 c-exclusive latents" in lines[2] and ": 1 and 1. Best candidates 1 and 2" in lines[2]
    assert "decoder cosine 0.400" in lines[2]
    assert "closest shared latent is at cosine 0.894 (write-up: 0.91), blue/green itself: True." in lines[3]
    assert lines[4] == ("Tied crosscoder on (b, c): blue/green on the b half at 2 indices, on the c half at 1, on both "
                        "at 1; one tied triple for blue/green: False.")


# ---------------------------------------------------------------------------------------------------------- figures
def test_figures_draw_every_latent_and_bar():
    r = torch.tensor([0.1, 0.2, 0.5, 0.5, 0.5, 0.9])
    fig = figures.relative_norm_histogram(r, model_names=("no-swap", "half-swap"), bins=10)
    heights = sum(p.get_height() for p in fig.axes[0].patches)
    assert heights == pytest.approx(6)
    assert "no-swap-exclusive" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    fig = figures.triple_firing_bars({"colour tokens": [0.5, 0.0, 0.25], "all tokens": [0.1, 0.2, 0.3]},
                                     model_names=("no-swap", "half-swap"))
    bars = sorted(round(p.get_height(), 3) for p in fig.axes[0].patches if p.get_width() > 0)
    assert bars == [0.0, 0.1, 0.2, 0.25, 0.3, 0.5]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["shared", "no-swap only", "half-swap only"]
    fig = figures.top_logits_panels([("a", [(" blue", 2.0), ("x", 1.0)])])
    assert [p.get_width() for p in fig.axes[0].patches] == [1.0, 2.0]
    plt.close("all")
