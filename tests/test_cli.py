import json
import shutil

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
