"""The refreshing buffer: fresh tokens on every refill, exhaustion, epochs, normalisation, exact resume."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer, wrap
from tiedlib.activations.buffer import ActivationBuffer, DataExhaustedError
from tiedlib.activations.harvest import estimate_norm_factors, harvest_all

D = 32
LAYER = 1


@pytest.fixture(scope="module")
def pair():
    tok = tiny_tokenizer()
    return (
        wrap(tiny_gemma2(n_layers=2, d_model=D, seed=0), tok),
        wrap(tiny_gemma2(n_layers=2, d_model=D, seed=1), tok),
        tok,
    )


@pytest.fixture(scope="module")
def seqs(pair):
    return random_sequences(20, 2, 12, len(pair[2]), seed=5)


def make_buffer(pair, seqs, **kw):
    base, chat, _ = pair
    args = dict(batch_size=8, buffer_tokens=24, model_batch_size=3, seed=0)
    return ActivationBuffer(base, chat, seqs, LAYER, **(args | kw))


def test_every_refill_reads_fresh_tokens_until_exhausted(pair, seqs):
    buf = make_buffer(pair, seqs)
    n_kept = sum(len(s) - 1 for s in seqs)  # BOS dropped
    seen: set[tuple[int, int]] = set()
    served = []
    with pytest.warns(UserWarning, match="less than one batch"):
        with pytest.raises(DataExhaustedError, match=f"all {len(seqs)} sequences consumed"):
            while True:
                batch = next(buf)
                assert batch.shape == (8, 2, D) and batch.dtype == torch.float32
                seen.update(map(tuple, buf.last_positions[:, 1:].tolist()))
                served.append((batch, buf.last_positions.clone()))
                # No reuse: distinct positions consumed == tokens requested, at every step.
                assert len(seen) == buf.tokens_consumed == 8 * len(served)
    assert len(served) * 8 == n_kept - n_kept % 8  # everything but a final partial batch was served
    assert len(served) > 3 * 3  # i.e. many refills (3 batches per fill), not one reused fill
    # Served values are the harvested activations of those very positions, normalised.
    ref = harvest_all(pair[0], pair[1], seqs, LAYER, progress=False)
    index = {(d, p): i for i, (d, p) in enumerate(zip(ref.doc_index.tolist(), ref.position.tolist(), strict=True))}
    for batch, pos in served:
        rows = [index[(d, p)] for d, p in pos[:, 1:].tolist()]
        torch.testing.assert_close(batch, ref.acts[rows] * buf.norm_factors[None, :, None], atol=1e-5, rtol=1e-4)
    with pytest.raises(DataExhaustedError):  # stays exhausted
        next(buf)


def test_batches_are_shuffled(pair, seqs):
    a = make_buffer(pair, seqs, buffer_tokens=64)
    next(a)
    docs = a.last_positions[:, 1].tolist()
    assert docs != sorted(docs)
    b = make_buffer(pair, seqs, buffer_tokens=64, seed=1)
    next(b)
    assert not torch.equal(a.last_positions, b.last_positions)


def test_new_epoch_warns_and_continues(pair, seqs):
    buf = make_buffer(pair, seqs[:4], on_exhausted="new_epoch")
    n_kept = sum(len(s) - 1 for s in seqs[:4])
    n_batches = math.ceil(3 * n_kept / 8)
    with pytest.warns(UserWarning, match="starting epoch"):
        positions = []
        for _ in range(n_batches):
            next(buf)
            positions.append(buf.last_positions)
    pos = torch.cat(positions)
    assert pos[:, 0].max() >= 2  # went through several epochs
    first_epoch = pos[pos[:, 0] == 0]
    # Within an epoch no position repeats and, except at the wrap point, every position is read.
    assert len(set(map(tuple, first_epoch.tolist()))) == first_epoch.shape[0] == n_kept


def test_norm_factors_estimated_without_bos(pair, seqs):
    base, chat, _ = pair
    buf = make_buffer(pair, seqs, norm_sample_sequences=10)
    ref = harvest_all(base, chat, seqs[:10], LAYER, progress=False)  # BOS dropped
    torch.testing.assert_close(buf.norm_factors, estimate_norm_factors(ref, D))
    with_bos = harvest_all(base, chat, seqs[:10], LAYER, drop_bos=False, progress=False)
    assert not torch.allclose(buf.norm_factors, estimate_norm_factors(with_bos, D), rtol=1e-3)
    # Over all the data (estimated on all of it), the served batches have mean norm sqrt(d_model).
    full = make_buffer(pair, seqs, norm_sample_sequences=len(seqs), buffer_tokens=1000)
    with pytest.warns(UserWarning, match="less than one batch"):  # 1000 > the data: one fill, tail dropped
        batches = torch.cat([next(full) for _ in range(sum(len(s) - 1 for s in seqs) // 8)])
    torch.testing.assert_close(batches.norm(dim=-1).mean(0), torch.full((2,), math.sqrt(D)), rtol=0.02, atol=0)


def test_given_norm_factors_and_tensor_sequences(pair):
    base, chat, tok = pair
    seqs = torch.tensor(random_sequences(6, 9, 9, len(tok)))  # a 2-D tensor works as a sequence list
    buf = make_buffer(pair, seqs, norm_factors=torch.tensor([2.0, 0.5]))
    batch = next(buf)
    ref = harvest_all(base, chat, seqs, LAYER, progress=False)
    i = [int(((ref.doc_index == d) & (ref.position == p)).nonzero()) for d, p in buf.last_positions[:, 1:].tolist()]
    torch.testing.assert_close(batch, ref.acts[i] * torch.tensor([2.0, 0.5])[None, :, None])


def test_excluded_tokens_never_served(pair, seqs):
    excluded = {7, 8, 9, 10}
    buf = make_buffer(pair, seqs, exclude_token_ids=excluded)
    served_docs_pos = []
    with pytest.warns(UserWarning), pytest.raises(DataExhaustedError):
        while True:
            next(buf)
            served_docs_pos += buf.last_positions[:, 1:].tolist()
    assert served_docs_pos and all(seqs[d][p] not in excluded for d, p in served_docs_pos)


@pytest.mark.parametrize("stop_after", [0, 2, 3, 7])  # before any fill, mid-fill, at a fill boundary, later
def test_exact_resume(pair, seqs, stop_after):
    n_total = 10
    reference = [next(b) for b in [make_buffer(pair, seqs, norm_factors=torch.ones(2))] for _ in range(n_total)]
    first = make_buffer(pair, seqs, norm_factors=torch.ones(2))
    head = [next(first) for _ in range(stop_after)]
    blob = io.BytesIO()
    torch.save(first.state_dict(), blob)
    blob.seek(0)
    state = torch.load(blob, weights_only=True)  # only plain types and tensors
    resumed = make_buffer(pair, seqs, seed=123)  # different seed and factors: both come from the state
    resumed.load_state_dict(state)
    assert resumed.tokens_consumed == 8 * stop_after
    tail = [next(resumed) for _ in range(n_total - stop_after)]
    for got, want in zip(head + tail, reference, strict=True):
        assert torch.equal(got, want)
    assert resumed.tokens_consumed == 8 * n_total


def test_errors(pair, seqs):
    base, chat, _ = pair
    with pytest.raises(ValueError, match="empty dataset"):
        ActivationBuffer(base, chat, [], LAYER, batch_size=8, buffer_tokens=24, model_batch_size=2)
    with pytest.raises(ValueError, match="on_exhausted"):
        make_buffer(pair, seqs, on_exhausted="loop")
    state = make_buffer(pair, seqs, norm_factors=torch.ones(2)).state_dict()
    with pytest.raises(ValueError, match="batch_size=8"):
        make_buffer(pair, seqs, batch_size=4, norm_factors=torch.ones(2)).load_state_dict(state)
    with pytest.raises(ValueError, match="n_sequences"):
        make_buffer(pair, seqs[:5], norm_factors=torch.ones(2)).load_state_dict(state)
