"""The refreshing buffer: fresh tokens on every refill, exhaustion, epochs, normalisation, exact resume."""

from __future__ import annotations

import io
import math
import warnings

import pytest
import torch

from tests.helpers import Interrupt, count_calls, interrupt_on_call, peak_cpu_bytes
from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer, wrap
from tiedlib.activations import harvest as harvest_module
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


def _roundtrip(state: dict) -> dict:
    blob = io.BytesIO()
    torch.save(state, blob)
    blob.seek(0)
    return torch.load(blob, weights_only=True)


@pytest.mark.parametrize("on_exhausted", ["stop", "new_epoch"])
def test_exact_resume_from_an_interrupt_at_every_refill_phase(pair, seqs, monkeypatch, on_exhausted):
    """Interrupt a run at every model call (odd calls: before a harvest batch; even calls: inside one, after the base
    model ran) and at every shuffle, in the first, later and last fills, across an epoch boundary. A resume from the
    saved state, and the interrupted buffer itself, continue with exactly the batches of an uninterrupted run."""
    data = seqs[:6] if on_exhausted == "new_epoch" else seqs  # 6 short sequences: the run crosses epochs
    kw = dict(norm_factors=torch.ones(2), on_exhausted=on_exhausted)
    n_total = 7  # three fills of three batches: the first, a later one, and one cut short
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # epoch warnings
        calls: dict[str, int] = {}
        with monkeypatch.context() as m:
            for owner, name in ((harvest_module, "_trace_layer_input"), (torch, "randperm")):
                count_calls(m, owner, name, calls)
            buf = make_buffer(pair, data, **kw)
            reference, epochs = [], []
            for _ in range(n_total):
                reference.append(next(buf))
                epochs.append(int(buf.last_positions[:, 0].max()))
        # Three fills, of two or more harvest batches each.
        assert calls["_trace_layer_input"] >= 8 and calls["randperm"] == 3
        assert (max(epochs) > 0) == (on_exhausted == "new_epoch")
        points = [(harvest_module, "_trace_layer_input", k) for k in range(1, calls["_trace_layer_input"] + 1)]
        points += [(torch, "randperm", k) for k in range(1, calls["randperm"] + 1)]
        for owner, name, k in points:
            with monkeypatch.context() as m:
                buf = make_buffer(pair, data, **kw)
                interrupt_on_call(m, owner, name, k)
                head = []
                with pytest.raises(Interrupt):
                    while True:
                        head.append(next(buf))
                state = _roundtrip(buf.state_dict())
            resumed = make_buffer(pair, data, norm_factors=torch.ones(2), on_exhausted=on_exhausted, seed=9)
            resumed.load_state_dict(state)
            # The resumed buffer, and the interrupted one called again (a notebook cell run again), both continue.
            for b in (resumed, buf):
                assert b.tokens_consumed == 8 * len(head), (name, k)
                tail = [next(b) for _ in range(n_total - len(head))]
                for i, (got, want) in enumerate(zip(head + tail, reference, strict=True)):
                    assert torch.equal(got, want), (name, k, i, b is buf)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_refill_memory_stays_within_the_preallocated_buffer(monkeypatch, dtype):
    """A refill writes into the preallocated buffer: its peak is the buffer plus one harvest batch, not the
    3-5 buffer-sized copies of a concatenate + permute + scale refill. The harvest is replaced by random rows of
    the right layout (this test measures the buffer's own copies; harvesting is tested above)."""
    from tiedlib.activations import buffer as buffer_module
    from tiedlib.activations.harvest import HarvestBatch

    d, seq_len, model_batch, buffer_tokens = 256, 64, 4, 4096
    tok = tiny_tokenizer()
    base, chat = (wrap(tiny_gemma2(n_layers=2, d_model=d, seed=s), tok) for s in (0, 1))

    def fake_harvest(base, chat, seqs, spec, device):
        n = sum(len(s) - 1 for s in seqs)  # BOS dropped
        doc = torch.cat([torch.full((len(s) - 1,), i) for i, s in enumerate(seqs)])
        pos = torch.cat([torch.arange(1, len(s)) for s in seqs])
        return HarvestBatch(torch.randn(n, 2, spec.d_model), torch.zeros(n, dtype=torch.long), doc, pos)

    monkeypatch.setattr(buffer_module, "_harvest_batch", fake_harvest)
    seqs = [[1] * seq_len for _ in range(3 * buffer_tokens // (seq_len - 1))]
    kw = dict(batch_size=256, buffer_tokens=buffer_tokens, model_batch_size=model_batch, norm_factors=torch.ones(2),
              dtype=dtype)  # fmt: skip
    expected = buffer_tokens * 2 * d * dtype.itemsize  # the activations alone
    harvest_batch = model_batch * seq_len * 2 * d * 4  # one float32 harvest batch
    assert expected >= 8 * harvest_batch  # sizes where the buffer dominates

    holder = {}
    first = peak_cpu_bytes(lambda: holder.update(buf=ActivationBuffer(base, chat, seqs, 1, **kw), x=None)
                            or holder.update(x=next(holder["buf"])))  # fmt: skip
    buf = holder["buf"]
    assert ActivationBuffer.bytes_needed(buffer_tokens, d, dtype) == buf.nbytes >= expected
    assert buf.nbytes <= 1.05 * expected  # position metadata and the permutation are small next to the rows
    for _ in range(buffer_tokens // 256 - 1):
        next(buf)  # spend the first fill
    second = peak_cpu_bytes(lambda: next(buf))  # a whole refill
    assert first <= buf.nbytes + 3 * harvest_batch, (first, buf.nbytes)
    assert second <= 3 * harvest_batch, (second, buf.nbytes)  # the buffer itself is reused, not reallocated
    batch = next(buf)
    assert batch.dtype == torch.float32 and batch.shape == (256, 2, d)
