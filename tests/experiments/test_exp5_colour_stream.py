"""Notebook 05's colour toy past the memory limit (the paper scale): its activations are streamed, its crosscoders
train from a bounded buffer, and the triple check reads the same rows as in memory. A tiny random pair stands in for
the fine-tunes; the limit is lowered so that nothing fits."""

from dataclasses import replace
from types import SimpleNamespace

import torch

from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer
from tiedlib.activations import collect as collect_module
from tiedlib.experiments import exp5
from tiedlib.experiments.exp5.colour_toy import colour_train_config
from tiedlib.pairs.colours import COLOUR_TOY, ColourToy

SMOKE = exp5.TABLE["smoke"]


def _toy() -> ColourToy:
    tok = tiny_tokenizer()
    ids = {"blue": tok.convert_tokens_to_ids("blue"), "green": tok.convert_tokens_to_ids("red")}
    prefixes = random_sequences(12, 3, 8, len(tok), seed=4)
    sets = {"blue": prefixes[:6], "green": prefixes[6:]}
    models = {"no-swap": tiny_gemma2(n_layers=2, seed=1), "half-swap": tiny_gemma2(n_layers=2, seed=2)}
    cfg = replace(COLOUR_TOY["smoke"], n_finetune_per_colour=1, n_crosscoder_per_colour=6)
    source = SimpleNamespace(tokenizer=tok, layer=1, d_model=32, config=None)
    return ColourToy(source=source, models=models, info={}, sets=sets, colour_ids=ids, pad_id=0, cfg=cfg)


def test_colour_toy_streams_and_its_triple_check_matches_the_in_memory_one(tmp_path, monkeypatch):
    toy = _toy()
    seqs, whole = exp5.colour_activations(toy)
    assert whole.in_memory and len(seqs) == 12
    monkeypatch.setattr(collect_module, "MEMORY_LIMIT_BYTES", 1)  # nothing fits: stream
    same_seqs, streamed = exp5.colour_activations(toy, train_batch_size=16)
    assert same_seqs == seqs and not streamed.in_memory and streamed.n_tokens == whole.n_tokens
    settings = replace(SMOKE, colour_n_latents=8, colour_train_tokens=6 * 16, colour_batch_size=16)
    run = exp5.train_colour_crosscoders(seqs, streamed, settings, tmp_path, {"tied": "tied"})
    assert run.summary() == f"{whole.n_tokens:,} tokens from 12 prefixes (streamed); 6 steps, 8 triples"
    assert run.models["tied"].cfg.norm_factors == streamed.norm_factors.tolist()
    g = torch.Generator().manual_seed(0)
    W_U = {m: torch.randn(32, len(toy.source.tokenizer), generator=g) for m in ("no-swap", "half-swap")}
    from_stream = exp5.find_colour_triples(run, W_U, toy.colour_ids, settings)
    in_memory = exp5.find_colour_triples(replace(run, acts=whole), W_U, toy.colour_ids, settings)
    assert from_stream.result == in_memory.result and from_stream.fire == in_memory.fire
    assert set(from_stream.fire["tied"]) == {"blue token", "before blue", "green token", "before green"}


def test_colour_crosscoders_train_with_a_progress_bar():
    assert colour_train_config(SMOKE).progress
