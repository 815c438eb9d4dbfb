"""Data-parallel training (DDP, gloo on CPU, 2 processes): the same weights as one process on the same global batches,
checkpoints written once, resume across a change of world size (2 -> 1 and 1 -> 2), and a SIGTERM on one rank stops
every rank after the same step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers import SigtermAt, make_model, make_train_cfg
from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer, wrap
from tiedlib import load_crosscoder
from tiedlib.activations.cache import open_cache, write_cache
from tiedlib.activations.cache_reader import CacheBatches
from tiedlib.pairs import ModelPair
from tiedlib.training import TrainingInterrupted, distributed, read_metrics, resume, train

D, BATCH, STEPS = 16, 32, 8


def _cfg():
    return make_train_cfg(n_steps=STEPS, lr=1e-2, log_every=4, checkpoint_every=4, checkpoint_minutes=0,
                          keep_checkpoints=0, progress=False)  # fmt: skip


def _model():
    torch.manual_seed(3)
    return make_model(d_model=D, n_latents=24, architecture="tied")


def _data(cache: Path, rank: int = 0, world_size: int = 1) -> CacheBatches:
    return CacheBatches(open_cache(cache), BATCH, seed=1, window_shards=2, rank=rank, world_size=world_size)


def _truncate(src: Path, dst: Path, step: int) -> Path:
    """A copy of run directory ``src`` as if it had been killed right after its checkpoint at ``step``."""
    shutil.copytree(src, dst)
    for ckpt in (dst / "checkpoints").iterdir():
        if int(ckpt.name.split("_")[1]) > step:
            shutil.rmtree(ckpt)
    for f in dst.iterdir():
        if f.is_file() and f.name != "metrics.jsonl":
            f.unlink()
    return dst


def _worker(rank: int, world_size: int, root: str) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool (as DataLoader workers do)
    root_p = Path(root)
    dist.init_process_group("gloo", init_method=f"file://{root_p / 'store'}", rank=rank, world_size=world_size)
    try:
        group = distributed.current()
        assert group is not None and group.rank == rank
        train(_cfg(), _model(), _data(root_p / "cache", rank, world_size), out_dir=root_p / "two")
        resume(root_p / "one_cut", _data(root_p / "cache", rank, world_size))
        with pytest.raises(ValueError, match="each process's share"):
            train(_cfg(), _model(), _data(root_p / "cache"), out_dir=None)
        # SIGTERM on rank 1 only, during step 3: every rank stops after step 3, rank 0 writes that checkpoint
        data = _data(root_p / "cache", rank, world_size)
        expected = "SIGTERM at step 3" if rank == 1 else "a stop signal on another rank at step 3"
        with pytest.raises(TrainingInterrupted, match=expected):
            train(_cfg(), _model(), SigtermAt(data, 3) if rank == 1 else data, out_dir=root_p / "stopped")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    tok = tiny_tokenizer()
    base, chat = (wrap(tiny_gemma2(n_layers=2, d_model=D, seed=s), tok) for s in (0, 1))
    pair = ModelPair(name="test", base=base, chat=chat, tokenizer=tok, layer=1, d_model=D)
    seqs = random_sequences(40, 6, 12, len(tok), seed=2)
    return write_cache(pair, seqs, tmp_path_factory.mktemp("dist") / "cache", dataset="random", seqs_per_shard=8,
                       model_batch_size=8, dtype=torch.float32)  # fmt: skip


def _assert_close(a: Path, b: Path) -> None:
    wa, wb = load_crosscoder(a).state_dict(), load_crosscoder(b).state_dict()
    for name, p in wa.items():
        torch.testing.assert_close(p, wb[name], rtol=1e-5, atol=1e-6, msg=name)


def test_two_processes_equal_one_and_resume_across_world_sizes(cache, tmp_path):
    shutil.copytree(cache, tmp_path / "cache")
    assert open_cache(tmp_path / "cache").n_tokens >= STEPS * BATCH
    one = tmp_path / "one"
    train(_cfg(), _model(), _data(tmp_path / "cache"), out_dir=one)  # one process, no process group
    _truncate(one, tmp_path / "one_cut", 4)

    # fork: the children inherit the imported modules (a spawned child spends seconds importing torch and tiedlib)
    mp.start_processes(_worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork")

    _assert_close(tmp_path / "two", one)  # 2 ranks x 16 rows == 1 rank x 32 rows
    assert not torch.equal(load_crosscoder(one).W_dec, _model().W_dec)  # it trained
    assert [m["step"] for m in read_metrics(tmp_path / "two")] == [4, 8]  # logged once, by rank 0
    _assert_close(tmp_path / "one_cut", one)  # checkpointed on 1 rank, finished on 2
    resume(_truncate(tmp_path / "two", tmp_path / "two_cut", 4), _data(tmp_path / "cache"))
    _assert_close(tmp_path / "two_cut", one)  # checkpointed on 2 ranks, finished on 1
    assert [p.name for p in (tmp_path / "stopped" / "checkpoints").iterdir()] == ["step_0000003"]
    resume(tmp_path / "stopped", _data(tmp_path / "cache"))  # stopped by a signal on 2 ranks, finished on 1
    _assert_close(tmp_path / "stopped", one)


def test_a_rank_reads_its_slice_of_the_same_global_batches(cache):
    whole = _data(cache)
    halves = [_data(cache, r, 2) for r in range(2)]
    for _ in range(3):
        torch.testing.assert_close(next(whole), torch.cat([next(h) for h in halves]), rtol=0, atol=0)
    states = [h.state_dict() for h in halves]
    assert (states[0]["epoch"], states[0]["served"]) == (states[1]["epoch"], states[1]["served"]) == (0, 3 * BATCH)
    with pytest.raises(ValueError, match="not divisible by world_size 3"):
        _data(cache, 0, 3)
    with pytest.raises(ValueError, match="rank 2 of world_size 2"):
        _data(cache, 2, 2)
