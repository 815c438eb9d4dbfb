import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import SigtermAt
from tiedlib import load_crosscoder
from tiedlib.cli import build_parser, config_from_args, main


def test_flags_come_from_the_config_dataclasses(tmp_path):
    args = build_parser().parse_args(
        ["train", "--architecture", "tied", "--eta", "1.5", "--n-steps", "7", "--lr", "0.001", "--no-progress",
         "--pair", "smoke", "--batch-size", "32"]
    )
    cfg = config_from_args(args)
    assert (cfg.crosscoder.architecture, cfg.crosscoder.eta) == ("tied", 1.5)
    assert (cfg.train.n_steps, cfg.train.lr, cfg.train.progress) == (7, 0.001, False)
    assert (cfg.pair, cfg.batch_size) == ("smoke", 32)
    # a saved run.json is a starting point that flags override
    path = tmp_path / "run.json"
    cfg.save_json(path)
    again = config_from_args(build_parser().parse_args(["train", "--config", str(path), "--eta", "3"]))
    assert again.crosscoder.eta == 3 and again.train.n_steps == 7
    with pytest.raises(ValueError, match="eta must be > 0"):
        config_from_args(build_parser().parse_args(["train", "--eta", "0"]))


def test_train_then_resume_through_the_nnsight_buffer_is_exact(tmp_path, capsys):
    flags = ["--pair", "smoke", "--architecture", "tied", "--n-latents", "16", "--n-steps", "8",
             "--batch-size", "32", "--buffer-tokens", "96", "--model-batch-size", "4", "--lr", "0.001",
             "--log-every", "4", "--checkpoint-every", "4", "--no-progress"]
    assert main(["train", *flags, "--out-dir", str(tmp_path / "a")]) == 0
    full = load_crosscoder(tmp_path / "a" / "crosscoder")
    assert full.cfg.norm_factors is not None and full.cfg.d_model > 0
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["crosscoder"]["architecture"] == "tied"
    # the same run interrupted after step 4: drop everything later, then resume from the run folder
    _resume_a_copy_cut_after_step_4(tmp_path, full)
    # an existing run folder is refused without --overwrite
    assert main(["train", *flags, "--out-dir", str(tmp_path / "a")]) == 2
    assert "not empty" in capsys.readouterr().err


def _resume_a_copy_cut_after_step_4(tmp_path, full) -> None:
    """Copy the finished run ``tmp_path/a`` to ``b``, drop everything after the step-4 checkpoint, resume ``b`` with
    the CLI and check it ends bitwise equal to ``full``."""
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    cc = tmp_path / "b" / "crosscoder"
    shutil.rmtree(cc / "checkpoints" / "step_0000008")
    for name in ("model.safetensors", "config.json", "trainer_state.pt", "train_config.json"):
        (cc / name).unlink()
    assert main(["resume", str(tmp_path / "b")]) == 0
    resumed = load_crosscoder(cc)
    for name, p in full.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name


def _rows_with_inner_bos(seq_len: int):
    """Token rows as a stream may give them: every other row two lab documents joined (so BOS also appears inside
    the row) and cut to ``seq_len``, the others one document shorter than ``seq_len``."""
    from tiedlib import lab

    docs = [d.input_ids for d in lab.crosscoder_mix(lab.LabConfig.smoke(), 400, split="train")]
    pairs = zip(docs[::2], docs[1::2], strict=False)
    return iter([(a + b)[:seq_len] if i % 2 == 0 else a[:seq_len] for i, (a, b) in enumerate(pairs)])


def test_sigterm_near_the_end_then_resume_reads_the_saved_tokens_and_finishes_exactly(tmp_path, capsys, monkeypatch):
    import tiedlib.cli as cli
    import tiedlib.pairs.corpora as corpora

    flags = ["--pair", "smoke", "--dataset", "mix", "--seq-len", "48", "--n-latents", "16", "--n-steps", "10",
             "--batch-size", "32", "--buffer-tokens", "96", "--model-batch-size", "4", "--lr", "0.001",
             "--log-every", "5", "--checkpoint-every", "4", "--no-progress"]
    monkeypatch.setattr(corpora, "mixed_stream", lambda *a, **k: _rows_with_inner_bos(48))
    # the run takes rows until they hold 320 harvestable tokens (counting 47 a row ran out in the last step)
    assert main(["train", *flags, "--out-dir", str(tmp_path / "a")]) == 0
    full = load_crosscoder(tmp_path / "a" / "crosscoder")

    real_buffer = cli.make_buffer
    monkeypatch.setattr(cli, "make_buffer", lambda *a: SigtermAt(real_buffer(*a), at=9))  # during step 9 of 10
    assert main(["train", *flags, "--out-dir", str(tmp_path / "b")]) == 143
    err = capsys.readouterr().err
    assert f"python -m tiedlib.cli resume {tmp_path / 'b'}" in err
    assert str(tmp_path / "b" / "crosscoder" / "checkpoints" / "step_0000009") in err

    def restream(*_a, **_k):
        raise AssertionError("resume streamed the dataset again instead of reading tokens.safetensors")

    monkeypatch.setattr(cli, "make_buffer", real_buffer)
    monkeypatch.setattr(corpora, "mixed_stream", restream)
    assert main(["resume", str(tmp_path / "b")]) == 0  # one step left: the last fill is rebuilt from the file
    resumed = load_crosscoder(tmp_path / "b" / "crosscoder")
    for name, p in full.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again(tmp_path, capsys):
    from tiedlib.cli import build_parser, config_from_args

    flags = ["train", "--pair", "smoke", "--n-latents", "16", "--n-steps", "3", "--batch-size", "32",
             "--buffer-tokens", "96", "--model-batch-size", "4", "--no-progress", "--out-dir", str(tmp_path / "r")]
    (tmp_path / "r").mkdir()
    config_from_args(build_parser().parse_args(flags)).save_json(tmp_path / "r" / "run.json")  # what train wrote
    assert main(["resume", str(tmp_path / "r"), "--dry-run"]) == 0
    assert "no checkpoint yet" in capsys.readouterr().out
    assert main(["resume", str(tmp_path / "r")]) == 0
    assert load_crosscoder(tmp_path / "r" / "crosscoder").cfg.n_latents == 16
    assert main(["resume", str(tmp_path / "r")]) == 0
    assert "finished already" in capsys.readouterr().out


def test_make_buffer_never_serves_chat_template_tokens(monkeypatch):
    import tiedlib.activations.buffer as buffer_module
    from tiedlib.cli import make_buffer
    from tiedlib.pairs import load_pair, template_ids

    seen = {}
    monkeypatch.setattr(buffer_module, "ActivationBuffer", lambda *a, **kw: seen.update(kw))
    cfg = config_from_args(build_parser().parse_args(["train", "--pair", "smoke", "--no-progress"]))
    pair = load_pair("smoke")
    make_buffer(cfg, pair, [[1, 2, 3]])
    assert list(seen["exclude_token_ids"]) == template_ids(pair) and len(template_ids(pair)) > 0


CACHE_FLAGS = ["--pair", "smoke", "--n-steps", "8", "--batch-size", "32", "--seqs-per-shard", "16",
               "--model-batch-size", "16", "--cache-dtype", "float32", "--no-progress"]  # 4 shards, 1 forward each
TRAIN_FLAGS = ["--pair", "smoke", "--architecture", "tied", "--n-latents", "16", "--n-steps", "8", "--batch-size",
               "32", "--lr", "0.001", "--log-every", "4", "--checkpoint-every", "4", "--cache-window-shards", "2",
               "--no-progress"]


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory) -> str:
    cache = str(tmp_path_factory.mktemp("cli_cache") / "cache")
    assert main(["cache", cache, *CACHE_FLAGS]) == 0
    return cache


def test_cache_in_shard_ranges_then_train_from_it_and_resume_exactly(tmp_path, capsys, smoke_cache, monkeypatch):
    from tiedlib.activations.cache import open_cache

    cache = str(tmp_path / "cache")
    assert main(["cache", cache, *CACHE_FLAGS, "--shard-range", "0:0"]) == 0  # tokenise only
    assert "tokens saved in" in capsys.readouterr().out and (tmp_path / "cache" / "tokens.safetensors").exists()
    assert main(["cache", cache, *CACHE_FLAGS, "--rank", "1", "--world-size", "2"]) == 0  # rank 1's share: 2, 3
    assert "wrote shards 2..3; 2 of 4 shards done" in capsys.readouterr().out
    assert main(["cache", cache, *CACHE_FLAGS, "--shard-range", "0:2"]) == 0  # the rest; its writer finalises
    assert "cache complete" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest == json.loads((Path(smoke_cache) / "manifest.json").read_text())  # as written in one go
    opened = open_cache(cache)
    assert opened.n_tokens >= 8 * 32 and opened.pair == "smoke"
    assert main(["finalize", cache]) == 0

    def no_models(cfg):
        raise AssertionError("a run from a cache without --eval-every must not load the model pair")

    monkeypatch.setattr("tiedlib.cli._load_pair", no_models)
    assert main(["train", "--cache", cache, *TRAIN_FLAGS, "--out-dir", str(tmp_path / "a")]) == 0
    full = load_crosscoder(tmp_path / "a" / "crosscoder")
    assert full.cfg.norm_factors == opened.norm_factors.tolist()  # the cache's factors
    assert not (tmp_path / "a" / "tokens.safetensors").exists()  # no models, no token file
    _resume_a_copy_cut_after_step_4(tmp_path, full)


@pytest.mark.parametrize("flags, message", [
    (["--pair", "tiny"], "pair: cache has 'smoke', asked for 'tiny'"),
    (["--pair", "smoke", "--layer", "0"], "layer: cache has 1, asked for 0"),
    (["--pair", "smoke", "--n-steps", "80"], "the run needs 2,560 tokens"),
])  # fmt: skip
def test_train_refuses_a_cache_of_another_pair_or_layer_or_too_small(flags, message, tmp_path, capsys, smoke_cache):
    cache = smoke_cache
    for extra in (["--dry-run"], []):
        assert main(["train", "--cache", cache, "--n-latents", "16", "--batch-size", "32", *flags,
                     "--out-dir", str(tmp_path / "r"), *extra]) == 2  # fmt: skip
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["train", "--cache", str(tmp_path / "none"), *TRAIN_FLAGS, "--out-dir", str(tmp_path / "r")]) == 2
    assert "no activation cache at" in capsys.readouterr().err


def _as_torchrun_rank(rank: int, world_size: int, port: int, commands: list[list[str]]) -> None:
    """A forked child that runs CLI commands as process ``rank`` of ``torchrun --nproc-per-node world_size``."""
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    for args in commands:
        assert main(args) == 0, args


def test_two_torchrun_processes_train_and_resume_from_the_cache_like_one(tmp_path, smoke_cache):
    import socket

    import torch.multiprocessing as mp

    train = ["train", "--cache", smoke_cache, *TRAIN_FLAGS]
    assert main([*train, "--out-dir", str(tmp_path / "one")]) == 0
    shutil.copytree(tmp_path / "one", tmp_path / "cut")  # killed after step 4, resumed on two processes
    shutil.rmtree(tmp_path / "cut" / "crosscoder" / "checkpoints" / "step_0000008")
    for name in ("model.safetensors", "config.json", "trainer_state.pt", "train_config.json"):
        (tmp_path / "cut" / "crosscoder" / name).unlink()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    commands = [[*train, "--out-dir", str(tmp_path / "two")], ["resume", str(tmp_path / "cut")]]
    mp.start_processes(_as_torchrun_rank, args=(2, port, commands), nprocs=2, start_method="fork")
    one = load_crosscoder(tmp_path / "one" / "crosscoder").state_dict()
    for run in ("two", "cut"):
        other = load_crosscoder(tmp_path / run / "crosscoder").state_dict()
        for name, p in one.items():
            torch.testing.assert_close(other[name], p, rtol=1e-5, atol=1e-6, msg=f"{run}: {name}")
    assert json.loads((tmp_path / "two" / "run.json").read_text())["cache"] == smoke_cache


def test_torchrun_without_a_cache_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--pair", "smoke", "--out-dir", str(tmp_path / "r"), "--dry-run"]) == 2
    assert "pass --cache CACHE_DIR" in capsys.readouterr().err


def test_train_logs_the_spliced_loss_every_eval_every_steps(tmp_path, capsys):
    import math

    from tiedlib.training import read_metrics

    flags = ["--pair", "smoke", "--n-latents", "16", "--n-steps", "6", "--batch-size", "32", "--buffer-tokens",
             "96", "--model-batch-size", "4", "--no-progress", "--eval-every", "4", "--eval-sequences", "4",
             "--out-dir", str(tmp_path / "e")]
    assert main(["train", *flags, "--dry-run"]) == 0
    assert "spliced next-token loss of both models on 4 held-out sequences every 4 steps" in capsys.readouterr().out
    assert main(["train", *flags]) == 0
    evals = read_metrics(tmp_path / "e" / "crosscoder", kind="eval")
    assert [m["step"] for m in evals] == [4, 6]
    for m in evals:
        assert set(m) == {"step", "eval/base_ce_recovered", "eval/base_kl", "eval/chat_ce_recovered", "eval/chat_kl"}
        assert all(math.isfinite(v) for v in m.values()) and m["eval/chat_kl"] >= 0
    assert len(read_metrics(tmp_path / "e" / "crosscoder")) >= 1  # the training lines are still there
    with pytest.raises(ValueError, match="eval_sequences"):
        config_from_args(build_parser().parse_args(["train", "--eval-sequences", "1"]))
