import json
import os
import shutil
import signal

import pytest
import torch

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
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    cc = tmp_path / "b" / "crosscoder"
    shutil.rmtree(cc / "checkpoints" / "step_0000008")
    for name in ("model.safetensors", "config.json", "trainer_state.pt", "train_config.json"):
        (cc / name).unlink()
    assert main(["resume", str(tmp_path / "b")]) == 0
    resumed = load_crosscoder(cc)
    for name, p in full.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name
    # an existing run folder is refused without --overwrite
    assert main(["train", *flags, "--out-dir", str(tmp_path / "a")]) == 2
    assert "not empty" in capsys.readouterr().err


class _SignalAt:
    """Wraps a data source and sends this process SIGTERM when batch number ``at`` (1-based) is requested."""

    def __init__(self, data, at: int):
        self.data, self.at, self.requested = data, at, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.requested += 1
        if self.requested == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.data)

    def __getattr__(self, name):  # state_dict, load_state_dict, norm_factors
        return getattr(self.data, name)


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
    monkeypatch.setattr(cli, "make_buffer", lambda *a: _SignalAt(real_buffer(*a), at=9))  # during step 9 of 10
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
