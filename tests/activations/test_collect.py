import pytest
import torch

from tests.helpers import make_model
from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer, wrap
from tiedlib.activations import collect
from tiedlib.activations.buffer import ActivationBuffer
from tiedlib.activations.collect import (
    PairActivations,
    StreamedActivations,
    buffer_tokens_for,
    collect_activations,
    count_kept_tokens,
    harvest_bytes_per_token,
    plan_collect,
    training_data,
)
from tiedlib.activations.harvest import HarvestBatch, harvest_all
from tiedlib.analysis.firing import firing_counts
from tiedlib.pairs import ModelPair


def test_pair_activations_batches_serve_normalised_rows_with_their_factors():
    acts = torch.randn(10, 2, 4)
    idx = torch.arange(10)
    pa = PairActivations(HarvestBatch(acts, idx, idx, idx), torch.tensor([2.0, 0.5]))
    data = pa.batches(64, seed=1)  # capped at the 10 rows available
    batch = next(data)
    assert batch.shape == (10, 2, 4)
    expected = torch.sort((acts * torch.tensor([2.0, 0.5])[None, :, None])[:, 0, 0]).values
    torch.testing.assert_close(torch.sort(batch[:, 0, 0]).values, expected)
    assert torch.equal(data.norm_factors, torch.tensor([2.0, 0.5]))
    next(data)  # epochs repeat instead of running out


# ---- in memory or streamed: the rule, and the two kinds answering alike ---------------------------------------------
D_MODEL, LAYER = 32, 1


@pytest.fixture(scope="module")
def pair():
    tok = tiny_tokenizer()
    base, chat = tiny_gemma2(n_layers=2, d_model=D_MODEL, seed=0), tiny_gemma2(n_layers=2, d_model=D_MODEL, seed=1)
    return ModelPair(name="t", base=wrap(base, tok), chat=wrap(chat, tok), tokenizer=tok, layer=LAYER, d_model=D_MODEL)


@pytest.fixture(scope="module")
def seqs(pair):
    out = random_sequences(12, 3, 9, len(pair.tokenizer), seed=3)
    out[4] = out[4][:2] + [1] + out[4][2:]  # a BOS inside a packed row is dropped too
    out[7] = out[7] + [9, 9]  # token 9 is excluded below
    return out


def test_count_kept_tokens_matches_what_the_harvest_keeps(pair, seqs):
    h = harvest_all(pair.base, pair.chat, seqs, LAYER, exclude_token_ids=[9], progress=False)
    assert count_kept_tokens(seqs, bos_id=1, exclude_token_ids=[9]) == h.acts.shape[0]
    assert count_kept_tokens(seqs, bos_id=None) == sum(map(len, seqs))


def test_plan_holds_in_memory_only_what_fits_and_bounds_the_buffer():
    per_token = harvest_bytes_per_token(8) + 2 * 8 * 4  # the harvest and its normalised copy
    assert harvest_bytes_per_token(8) == 2 * 8 * 4 + 24
    assert plan_collect(100, 8, batch_size=16, limit_bytes=100 * per_token) == (100, 8, True, 100 * per_token)
    over = plan_collect(101, 8, batch_size=16, limit_bytes=100 * per_token)
    assert not over.in_memory and over.held_bytes <= 100 * per_token
    assert over.held_bytes == ActivationBuffer.bytes_needed(buffer_tokens_for(16, 8, 100 * per_token), 8)
    # The buffer: BUFFER_BATCHES batches when they fit, fewer when not, never under one batch.
    assert buffer_tokens_for(16, 8, limit_bytes=2**40) == collect.BUFFER_BATCHES * 16
    assert buffer_tokens_for(16, 8, limit_bytes=ActivationBuffer.bytes_needed(50, 8)) == 48
    assert buffer_tokens_for(16, 8, limit_bytes=1) == 16
    with pytest.raises(ValueError, match="positive"):
        plan_collect(10, 0, batch_size=16)


def test_collect_streams_past_the_limit_and_both_kinds_answer_alike(pair, seqs, monkeypatch):
    whole = collect_activations(pair, seqs, exclude_token_ids=[9], batch_size=5, progress=False)
    assert whole.in_memory and whole.n_tokens == whole.harvest.acts.shape[0] and whole.d_model == D_MODEL
    monkeypatch.setattr(collect, "MEMORY_LIMIT_BYTES", whole.n_tokens * harvest_bytes_per_token(D_MODEL))
    streamed = collect_activations(pair, seqs, exclude_token_ids=[9], batch_size=5, progress=False)
    assert isinstance(streamed, StreamedActivations) and not streamed.in_memory
    assert (streamed.n_tokens, streamed.d_model) == (whole.n_tokens, D_MODEL)
    # 12 sequences: the evenly spaced sample for the factors is all of them, so both kinds share the factors.
    torch.testing.assert_close(streamed.norm_factors, whole.norm_factors)
    parts = list(streamed.chunks())
    assert len(parts) == 3  # one per model batch of 5 sequences
    torch.testing.assert_close(torch.cat([p.acts for p in parts]), whole.normalized)
    assert torch.equal(torch.cat([p.doc_index for p in parts]), whole.harvest.doc_index)
    torch.testing.assert_close(torch.cat([p.acts for p in whole.chunks(chunk_size=7)]), whole.normalized)
    last = [lambda h: h.position == 2, lambda h: h.doc_index >= 10]
    for keep in last:
        a, b = whole.select(keep), streamed.select(keep)
        torch.testing.assert_close(b.harvest.acts, a.harvest.acts)
        assert torch.equal(b.harvest.token_ids, a.harvest.token_ids) and torch.equal(b.norm_factors, a.norm_factors)
    with pytest.raises(AttributeError, match="not held in memory"):
        streamed.harvest  # noqa: B018
    with pytest.raises(ValueError, match="kept no row"):
        streamed.select(lambda h: h.position < 0)
    # Training reads a bounded, resumable buffer that carries the factors; it starts new epochs instead of ending.
    data = streamed.batches(8, seed=0)
    assert isinstance(data, ActivationBuffer) and data.buffer_tokens == buffer_tokens_for(8, D_MODEL)
    assert data.nbytes <= collect.MEMORY_LIMIT_BYTES and torch.equal(data.norm_factors, streamed.norm_factors)
    with pytest.warns(UserWarning, match="starting epoch"):
        rows = torch.cat([next(data) for _ in range(2 * whole.n_tokens // 8 + 1)])
    assert rows.shape[1:] == (2, D_MODEL)
    # An analysis pass over either kind gives the same counts.
    model = make_model(d_model=D_MODEL, n_latents=8)
    a = firing_counts(model, [p.acts for p in whole.chunks()], normalized=True)
    b = firing_counts(model, [p.acts for p in streamed.chunks()], normalized=True)
    assert torch.equal(a.counts, b.counts) and a.n_tokens == b.n_tokens == whole.n_tokens


def test_training_data_decides_by_the_rule_and_reuses_its_harvest(pair, seqs, monkeypatch):
    make = training_data(pair, seqs, batch_size=8, model_batch_size=4)
    first = make()
    assert first.__class__.__name__ == "InMemoryBatches" and make().norm_factors is first.norm_factors
    monkeypatch.setattr(collect, "MEMORY_LIMIT_BYTES", 1)
    buffered = training_data(pair, seqs, batch_size=8, model_batch_size=4)()
    assert isinstance(buffered, ActivationBuffer) and buffered.buffer_tokens == 8
    assert isinstance(training_data(pair, seqs, batch_size=8, in_memory=False)(), ActivationBuffer)
