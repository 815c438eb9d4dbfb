"""The colour toy shared by Experiments 2 and 5, built on the smoke lab pair."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tiedlib.config import pick
from tiedlib.pairs import load_pair
from tiedlib.pairs.colours import COLOUR_TOY, COLOURS, ColourToyConfig, build_colour_toy


def test_colour_toy_fine_tunes_once_and_pairs_its_models(smoke_path, tmp_path):
    cfg = replace(pick(COLOUR_TOY, "smoke"), n_finetune_per_colour=8, n_crosscoder_per_colour=12)
    source = load_pair("smoke")
    toy = build_colour_toy(source, cfg, cache_dir=tmp_path)
    assert set(toy.models) == {"base", "no-swap", "half-swap"}
    assert not any(info["cached"] for info in toy.info.values())
    # The fine-tunes moved away from the base model, and differ from each other.
    base_w = dict(source.base_hf.named_parameters())
    changed = {m: max(float((p - base_w[n]).abs().max()) for n, p in toy.models[m].named_parameters())
               for m in ("no-swap", "half-swap")}
    assert min(changed.values()) > 0
    seqs = toy.crosscoder_sequences()
    assert len(seqs) == 2 * cfg.n_crosscoder_per_colour
    assert [s[-1] for s in seqs] == [toy.colour_ids[c] for c in COLOURS for _ in range(cfg.n_crosscoder_per_colour)]
    held = toy.held_out(3)
    assert all(held[c] == toy.sets[c][8:11] and len(held[c]) == 3 for c in COLOURS)
    pair = toy.pair("no-swap", "half-swap")
    assert pair.layer == source.layer and pair.chat_hf is toy.models["half-swap"]
    with pytest.raises(ValueError, match="unknown colour-toy model"):
        toy.pair("base", "full-swap")
    again = build_colour_toy(source, cfg, cache_dir=tmp_path)
    assert all(info["cached"] for info in again.info.values())
    for a, b in zip(toy.models["half-swap"].parameters(), again.models["half-swap"].parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_colour_toy_config_validates():
    with pytest.raises(ValueError, match="colour_source"):
        ColourToyConfig(pair="smoke", colour_source="web", n_finetune_per_colour=1, n_crosscoder_per_colour=1,
                        max_prefix_tokens=8, finetune_lr=1e-3, finetune_epochs=1, finetune_batch_size=1)
