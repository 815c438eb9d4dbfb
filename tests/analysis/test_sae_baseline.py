"""SAE baseline: decoder-cosine matching, query selection, concept precision at k, and a short sae_lens training."""

from __future__ import annotations

import math

import pytest
import torch

from tiedlib.analysis import sae_baseline as sb
from tiedlib.config import CrosscoderConfig
from tiedlib.crosscoders.crosscoder import make_crosscoder

CONCEPTS = ["refusal", "code", "turn_marker"]


def test_decoder_neighbours_rank_by_cosine_not_norm():
    keys = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    queries = torch.tensor([[2.0, -0.1], [-1.0, -0.2]])
    nb = sb.decoder_neighbours(queries, keys, k=2)
    # (10, 1) has the largest norm and the largest dot product with query 0, but not the largest cosine
    assert nb.index.tolist() == [[0, 1], [3, 2]]
    assert nb.cosine[0, 0] == pytest.approx(2 / math.hypot(2, 0.1))
    assert (nb.cosine[:, 0] >= nb.cosine[:, 1]).all()
    with pytest.raises(ValueError, match="k must be"):
        sb.decoder_neighbours(queries, keys, k=5)
    with pytest.raises(ValueError, match="one d"):
        sb.decoder_neighbours(queries, torch.zeros(3, 4), k=1)


def test_select_queries_keeps_latents_detecting_an_allowed_concept():
    auc = torch.tensor([[0.95, 0.5, 0.6, float("nan")],   # refusal
                        [0.5, 0.92, 0.5, 0.5],            # code
                        [0.5, 0.5, 0.99, 0.5]])           # turn_marker (chat only: not allowed)
    latents, names = sb.select_queries(auc, CONCEPTS, ["refusal", "code"], threshold=0.9)
    assert latents.tolist() == [0, 1] and names == ["refusal", "code"]
    with pytest.raises(ValueError, match="unknown concept"):
        sb.select_queries(auc, CONCEPTS, ["colour"], 0.9)


def test_concept_matches_counts_hits_and_chance():
    key_auc = torch.tensor([[0.95, 0.2, 0.91, 0.5],    # refusal: keys 0 and 2 detect it
                            [0.5, 0.97, 0.5, 0.5],     # code: key 1
                            [0.5, 0.5, 0.5, 0.5]])
    retrieved = torch.tensor([[2, 1], [0, 1]])
    m = sb.concept_matches("sae", torch.tensor([7, 9]), ["refusal", "code"], retrieved, key_auc, CONCEPTS, 0.9)
    assert m.hits.tolist() == [[True, False], [False, True]]
    assert m.precision(1) == 0.5 and m.precision(2) == 0.5
    assert m.chance.tolist() == [0.5, 0.25]
    table = sb.precision_table([m], ks=(1, 2, 5))
    assert table.loc["sae", "queries"] == 2 and math.isnan(table.loc["sae", "precision@5"])
    assert table.loc["sae", "chance"] == pytest.approx(0.375)
    assert list(m.table()["concept"]) == ["refusal", "code"]
    empty = sb.concept_matches("none", torch.zeros(0, dtype=torch.long), [], torch.zeros(0, 1, dtype=torch.long),
                               key_auc, CONCEPTS, 0.9)
    assert math.isnan(empty.precision(1))


def test_tied_part_decoders_are_the_base_and_chat_rows():
    tied = make_crosscoder(CrosscoderConfig(d_model=8, n_latents=5, architecture="tied"))
    base, chat = sb.tied_part_decoders(tied)
    assert torch.equal(base, tied.W_dec[:, 0].detach()) and torch.equal(chat, tied.W_dec[:, 1].detach())
    with pytest.raises(ValueError, match="tied crosscoder"):
        sb.tied_part_decoders(make_crosscoder(CrosscoderConfig(d_model=8, n_latents=5, architecture="standard")))


def test_train_sae_learns_a_planted_dictionary():
    gen = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(6, 16, generator=gen), dim=-1) * 4
    codes = (torch.rand(1024, 6, generator=gen) < 0.15).float() * torch.rand(1024, 6, generator=gen)
    acts = codes @ atoms
    sae = sb.train_sae(acts, d_sae=12, l1_coefficient=0.5, n_steps=150, batch_size=128, lr=1e-2)
    fit = sb.sae_fit(sae, acts)
    assert fit["fvu"] < 0.05 and 0 < fit["l0"] < 6
    f = sb.sae_activations(sae, acts[:10], chunk_size=4)
    assert f.shape == (10, 12) and (f >= 0).all()
    # each planted atom has a decoder row close to it
    assert sb.decoder_neighbours(atoms, sae.W_dec.detach(), k=1).cosine.min() > 0.95
    with pytest.raises(ValueError, match="n_tokens >= batch_size"):
        sb.train_sae(acts[:10], d_sae=4, l1_coefficient=1.0, n_steps=1, batch_size=128)


def test_concepts_in_both_needs_a_positive_token_in_each_sample():
    web = torch.tensor([[True, False, False], [False, True, False]])
    chat = torch.tensor([[True, False, True], [False, False, False]])
    assert sb.concepts_in_both(web, chat, CONCEPTS) == ["refusal"]


def test_train_sae_takes_a_stream_of_batches_and_checks_their_shape():
    stream = (torch.randn(32, 8) for _ in range(1000))
    sae = sb.train_sae(stream, d_sae=4, l1_coefficient=1.0, n_steps=3, batch_size=32)
    assert tuple(sae.W_dec.shape) == (4, 8)
    with pytest.raises(ValueError, match="expected batches of shape"):
        sb.train_sae(iter([torch.randn(16, 8)]), d_sae=4, l1_coefficient=1.0, n_steps=3, batch_size=32)
