"""The paired activation cache: round trip, checksums, resumable and multi-process writing, manifest checks, the
shuffling reader (coverage, exact resume, bounded memory) and fan-out to several consumers."""

from __future__ import annotations

import io
import json
import multiprocessing
from pathlib import Path

import pytest
import torch

from tests.helpers import Interrupt, interrupt_on_call, peak_cpu_bytes
from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer, wrap
from tiedlib.activations import cache as cache_module
from tiedlib.activations import harvest as harvest_module
from tiedlib.activations.batches import DataExhaustedError
from tiedlib.activations.cache import (
    CacheCorruptError,
    CacheMismatchError,
    bytes_per_token,
    cache_size,
    finalize_cache,
    open_cache,
    write_cache,
)
from tiedlib.activations.cache_reader import CacheBatches, fan_out
from tiedlib.activations.harvest import HarvestBatch, estimate_norm_factors, harvest_all
from tiedlib.pairs import ModelPair

D = 32
LAYER = 1
N_SEQS = 20
SEQS_PER_SHARD = 4  # 5 shards; a multiple of MODEL_BATCH so shard batches line up with harvest_all's
MODEL_BATCH = 2


def make_pair(name: str = "test", tokenizer=None) -> ModelPair:
    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    base, chat = (wrap(tiny_gemma2(n_layers=2, d_model=D, seed=s), tok) for s in (0, 1))
    return ModelPair(name=name, base=base, chat=chat, tokenizer=tok, layer=LAYER, d_model=D)


def make_seqs() -> list[list[int]]:
    return random_sequences(N_SEQS, 2, 12, len(tiny_tokenizer()), seed=5)


@pytest.fixture(scope="module")
def pair():
    return make_pair()


@pytest.fixture(scope="module")
def seqs():
    return make_seqs()


def write(pair, seqs, path, **kw):
    args = dict(dataset="random test sequences", seqs_per_shard=SEQS_PER_SHARD, model_batch_size=MODEL_BATCH,
                dtype=torch.float32)  # fmt: skip
    return write_cache(pair, seqs, path, **(args | kw))


@pytest.fixture(scope="module")
def cache_dir(pair, seqs, tmp_path_factory):
    return write(pair, seqs, tmp_path_factory.mktemp("cache") / "c")


def read_all(path: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and every shard's bytes: what "bitwise equal caches" compares."""
    manifest = json.loads((path / "manifest.json").read_text())
    return manifest, {s["file"]: (path / s["file"]).read_bytes() for s in manifest["shards"]}


def take(reader, n: int) -> list[torch.Tensor]:
    """``n`` batches (a reader raises DataExhaustedError, never StopIteration, at its end)."""
    return [next(reader) for _ in range(n)]


def all_rows(cache):
    parts = [cache.load_shard(k) for k in range(len(cache.shards))]
    return [torch.cat([getattr(p, f) for p in parts]) for f in ("acts", "token_ids", "doc_index", "position")]


# ----------------------------------------------------------------------------------------------------
def test_bytes_per_token_and_cache_size():
    assert bytes_per_token(2304, torch.bfloat16) == 2 * 2304 * 2 + 12 == 9228  # the paper pair: ~9.2 KB a token
    assert bytes_per_token(2304, "float32") == 2 * 2304 * 4 + 12
    assert cache_size(10**6, 2304) == 9228 * 10**6
    with pytest.raises(ValueError, match="bfloat16 or torch.float32"):
        bytes_per_token(16, torch.float16)
    with pytest.raises(ValueError, match="d_model must be positive"):
        bytes_per_token(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_equals_a_direct_harvest(pair, seqs, cache_dir, tmp_path, dtype):
    path = cache_dir if dtype == torch.float32 else write(pair, seqs, tmp_path / "bf16", dtype=dtype)
    cache = open_cache(path, pair)
    ref = harvest_all(pair.base, pair.chat, seqs, LAYER, batch_size=MODEL_BATCH, progress=False)
    acts, ids, doc, pos = all_rows(cache)
    assert len(cache.shards) == 5 and cache.n_tokens == ref.acts.shape[0] == sum(len(s) - 1 for s in seqs)
    assert acts.dtype == dtype and ids.dtype == doc.dtype == pos.dtype == torch.int32
    assert torch.equal(acts, ref.acts.to(dtype))  # bitwise: same model batches, rounded once
    assert torch.equal(ids.long(), ref.token_ids) and torch.equal(doc.long(), ref.doc_index)
    assert torch.equal(pos.long(), ref.position) and bool((pos > 0).all())  # BOS dropped
    # Factors from the running statistics (float32 activations, BOS excluded) equal a direct estimate.
    torch.testing.assert_close(cache.norm_factors, estimate_norm_factors(ref, D), rtol=1e-6, atol=0)
    assert cache.nbytes == cache_size(cache.n_tokens, D, dtype)


def test_flipped_byte_is_a_checksum_error_naming_the_shard(cache_dir, tmp_path):
    import shutil

    path = Path(shutil.copytree(cache_dir, tmp_path / "c"))
    shard = path / "shard-000002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's data: the file still parses, only the hash can tell
    shard.write_bytes(bytes(data))
    cache = open_cache(path)
    cache.load_shard(1)  # the others are fine
    with pytest.raises(CacheCorruptError, match="shard-000002.safetensors .* is corrupt"):
        cache.load_shard(2)
    with pytest.raises(CacheCorruptError, match="shard-000002"):
        cache.verify()
    with pytest.raises(CacheCorruptError, match="shard-000002"):
        list(CacheBatches(cache, batch_size=4, window_shards=1))


@pytest.mark.parametrize("k", [1, 4, 7])  # trace calls: base model of shard 0, chat of shard 0/1, inside shard 1
def test_interrupted_write_resumes_to_the_same_cache(pair, seqs, cache_dir, tmp_path, monkeypatch, k):
    path = tmp_path / "c"
    with monkeypatch.context() as m:
        interrupt_on_call(m, harvest_module, "_trace_layer_input", k)
        with pytest.raises(Interrupt):
            write(pair, seqs, path)
    with pytest.raises(CacheCorruptError, match="not complete"):
        open_cache(path)
    write(pair, seqs, path)  # resume
    assert read_all(path) == read_all(cache_dir)


def test_half_written_and_unrecorded_shards_are_never_read(pair, seqs, cache_dir, tmp_path, monkeypatch):
    path = tmp_path / "c"
    real_record = cache_module._write_record
    calls = {"n": 0}

    def crash_before_second_record(root, record):
        calls["n"] += 1
        if calls["n"] == 2:  # shard 1 is renamed into place, its record never written
            raise Interrupt("killed between rename and record")
        real_record(root, record)

    with monkeypatch.context() as m:
        m.setattr(cache_module, "_write_record", crash_before_second_record)
        with pytest.raises(Interrupt):
            write(pair, seqs, path)
    assert (path / "shard-000001.safetensors").exists() and not (path / "records/shard-000001.json").exists()
    # A killed writer leaves garbage: an unrecorded shard and a half-written temporary file.
    (path / "shard-000001.safetensors").write_bytes(b"half a shard")
    (path / ".shard-000002.safetensors.12345.tmp").write_bytes(b"half a shard")
    with pytest.raises(CacheCorruptError, match="4 of 5 shards are not written"):
        finalize_cache(path)
    write(pair, seqs, path)
    assert read_all(path) == read_all(cache_dir)  # shard 1 redone, the temporary file never referenced


def test_mismatched_cache_is_refused_naming_the_field(pair, seqs, cache_dir, tmp_path):
    open_cache(cache_dir, pair, dataset="random test sequences")  # the matching pair opens
    with pytest.raises(CacheMismatchError, match="pair: cache has 'test', asked for 'other'"):
        open_cache(cache_dir, make_pair("other"))
    with pytest.raises(CacheMismatchError, match="layer: cache has 1, asked for 0"):
        open_cache(cache_dir, pair, layer=0)
    with pytest.raises(CacheMismatchError, match="tokenizer_sha256"):
        open_cache(cache_dir, tokenizer=tiny_tokenizer(extra_words=3))
    with pytest.raises(CacheMismatchError, match="dataset"):
        open_cache(cache_dir, dataset="another corpus")
    # Resuming a folder with other settings is refused before any harvesting.
    with pytest.raises(CacheMismatchError, match="dtype: cache has 'float32', asked for 'bfloat16'"):
        write(pair, seqs, cache_dir, dtype=torch.bfloat16)
    with pytest.raises(FileNotFoundError, match="no activation cache"):
        open_cache(tmp_path / "nothing")


def _write_range(path: str, shard_range: tuple[int, int]) -> None:
    """Body of one writer process (a fresh interpreter: it rebuilds the same seeded pair)."""
    write(make_pair(), make_seqs(), Path(path), shard_range=shard_range)


def test_shard_ranges_in_two_processes_merge_to_the_single_process_cache(cache_dir, tmp_path):
    path = tmp_path / "c"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_range, args=(str(path), r)) for r in ((0, 3), (3, 5))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0, 0]
    assert json.loads((path / "manifest.json").read_text())["complete"]  # the last process to finish finalised
    finalize_cache(path)  # running it again changes nothing
    assert read_all(path) == read_all(cache_dir)


# ----------------------------------------------------------------------------------------------------
def test_every_token_served_exactly_once_per_epoch(cache_dir):
    cache = open_cache(cache_dir)
    acts, _, doc, pos = all_rows(cache)
    index = {(d, p): i for i, (d, p) in enumerate(zip(doc.tolist(), pos.tolist(), strict=True))}
    reader = CacheBatches(cache, batch_size=8, window_shards=2, epochs=2, seed=3)
    per_epoch: dict[int, list] = {0: [], 1: []}
    with pytest.warns(UserWarning, match="starting epoch 2"):
        for _ in range(2 * reader.batches_per_epoch):
            batch = next(reader)
            assert batch.shape == (8, 2, D) and batch.dtype == torch.float32
            keys = [tuple(r) for r in reader.last_positions[:, 1:].tolist()]
            per_epoch[int(reader.last_positions[0, 0])] += keys
            rows = [index[key] for key in keys]
            assert torch.equal(batch, acts[rows] * cache.norm_factors[None, :, None])
    n = cache.n_tokens
    for keys in per_epoch.values():
        assert len(keys) == len(set(keys)) == n - n % 8  # no token twice; only the last partial batch left out
    assert per_epoch[0] != per_epoch[1]  # reshuffled each epoch
    docs = [d for d, _ in per_epoch[0]]
    assert docs != sorted(docs)  # shuffled, not in file order
    assert reader.max_resident_shards == 2
    with pytest.raises(DataExhaustedError, match="after 2 epoch"):
        next(reader)


# 132 tokens: 16 batches an epoch, windows of ~50 rows. Resume at the start, inside and across windows (batches 6, 7
# straddle one), at the end of an epoch (16) and after it (17, 40).
@pytest.mark.parametrize("k", [0, 1, 6, 7, 16, 17, 40])
def test_resume_is_bit_exact(cache_dir, k):
    make = lambda: CacheBatches(open_cache(cache_dir), batch_size=8, window_shards=2, epochs=3, seed=1)  # noqa: E731
    batches = make().batches_per_epoch
    with pytest.warns(UserWarning):
        reference = take(make(), 3 * batches)
        first = make()
        head = [next(first) for _ in range(k)]
        buf = io.BytesIO()
        torch.save(first.state_dict(), buf)
        buf.seek(0)
        resumed = make()
        resumed.load_state_dict(torch.load(buf, weights_only=True))
        tail = take(resumed, 3 * batches - k)
    with pytest.raises(DataExhaustedError):
        next(resumed)
    assert all(torch.equal(a, b) for a, b in zip(head + tail, reference, strict=True))
    other = CacheBatches(open_cache(cache_dir), batch_size=8, window_shards=2, seed=2)
    with pytest.raises(ValueError, match="seed=1, this reader has 2"):
        other.load_state_dict(first.state_dict())


def test_reading_keeps_only_the_window_resident(tmp_path, monkeypatch):
    """Reading a whole 8-shard cache holds one window of 2 shards (plus the shard being read and one batch), not the
    cache. The harvest is replaced by random rows of the right layout (only the reader's memory is measured)."""
    d, seq_len, per_shard, n_shards = 256, 64, 8, 8

    def fake_harvest(base, chat, seqs, spec, device):
        n = sum(len(s) - 1 for s in seqs)
        doc = torch.cat([torch.full((len(s) - 1,), i) for i, s in enumerate(seqs)])
        pos = torch.cat([torch.arange(1, len(s)) for s in seqs])
        return HarvestBatch(torch.randn(n, 2, spec.d_model), torch.full((n,), 7), doc, pos)

    tok = tiny_tokenizer()
    big = ModelPair("big", *(wrap(tiny_gemma2(n_layers=2, d_model=d, seed=s), tok) for s in (0, 1)), tok, 1, d)
    monkeypatch.setattr(cache_module, "_harvest_batch", fake_harvest)
    seqs = [[1] * seq_len for _ in range(per_shard * n_shards)]
    path = write_cache(big, seqs, tmp_path / "c", dataset="fake", seqs_per_shard=per_shard, dtype=torch.float32)
    cache = open_cache(path)
    shard_bytes = per_shard * (seq_len - 1) * 2 * d * 4
    reader = CacheBatches(cache, batch_size=128, window_shards=2, verify=False)
    peak = peak_cpu_bytes(lambda: [next(reader).shape for _ in range(reader.batches_per_epoch)])  # batches dropped
    assert reader.tokens_consumed == cache.n_tokens - cache.n_tokens % 128  # the whole cache was read
    assert reader.max_resident_shards == 2
    # Measured 3.26 shards: the 2-shard window, the shard being read into it, a batch (0.25 shard) and indices.
    assert peak <= 3.5 * shard_bytes, (peak, shard_bytes)
    assert peak < cache.nbytes / 2  # far from holding the cache


def test_fan_out_feeds_one_pass_to_every_consumer(cache_dir):
    reader = CacheBatches(open_cache(cache_dir), batch_size=8, seed=0)
    seen: list[list] = [[], []]
    out = fan_out(reader, [lambda b, s: seen[0].append(b) or s, lambda b, s: seen[1].append(b) or -s], n_steps=4,
                  start_step=10)  # fmt: skip
    assert out == [[10, 11, 12, 13], [-10, -11, -12, -13]]
    assert reader.tokens_consumed == 32  # the source was read once, not once per consumer
    assert all(a is b for a, b in zip(seen[0], seen[1], strict=True))
    with pytest.raises(ValueError, match="at least one consumer"):
        fan_out(reader, [], n_steps=1)
