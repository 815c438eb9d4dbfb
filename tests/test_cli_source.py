"""The command line records the pair a run's activations come from (``source.json``) and refuses to resume the run on
another pair of the same name, or to train from a cache of another lab build; checked without loading any model."""

from __future__ import annotations

import json

from tiedlib.cli import RUN_FILE, build_parser, config_from_args, main
from tiedlib.lab.config import SEED_ENV
from tiedlib.pairs import pair_source
from tiedlib.training.rundir import read_source, write_source

TRAIN = ["train", "--pair", "smoke", "--n-latents", "16", "--n-steps", "3", "--batch-size", "32", "--no-progress"]


def _fake_cache(path, source: str | None) -> str:
    """A finalised cache manifest for the smoke pair at layer 1 (no shards: only the manifest is read here)."""
    path.mkdir()
    manifest = {"complete": True, "pair": "smoke", "layer": 1, "d_model": 64, "dtype": "float32", "n_tokens": 10**6,
                "shards": [], "norm_factors": [1.0, 1.0]}  # fmt: skip
    if source is not None:
        manifest["source"] = source
    (path / "manifest.json").write_text(json.dumps(manifest))
    return str(path)


def _run_folder(path, flags: list[str], source: str | None) -> str:
    """A run folder as ``train`` leaves it before its first checkpoint: run.json and the source record."""
    path.mkdir()
    config_from_args(build_parser().parse_args([*TRAIN, *flags, "--out-dir", str(path)])).save_json(path / RUN_FILE)
    if source is not None:
        write_source(path, source)
    return str(path)


def test_resume_refuses_a_run_of_another_lab_build(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(SEED_ENV, raising=False)
    trained_on = pair_source("smoke")
    run = _run_folder(tmp_path / "r", [], trained_on)
    monkeypatch.setenv(SEED_ENV, "7")  # "smoke" now names another lab pair
    assert main(["resume", run, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"was trained on pair {trained_on!r}, this call asks for pair {pair_source('smoke')!r}" in err, err
    monkeypatch.delenv(SEED_ENV)
    assert main(["resume", run, "--dry-run"]) == 0


def test_a_cache_of_another_lab_build_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(SEED_ENV, raising=False)
    stale = _fake_cache(tmp_path / "stale", "smoke|lab=0000000000000000|layer=1")
    assert main([*TRAIN, "--cache", stale, "--out-dir", str(tmp_path / "a"), "--dry-run"]) == 2
    assert "source: cache has 'smoke|lab=0000000000000000|layer=1'" in capsys.readouterr().err
    # The cache was rebuilt (same folder name) from the current lab pair: the run trained on the old one is refused.
    cache = _fake_cache(tmp_path / "cache", pair_source("smoke"))
    run = _run_folder(tmp_path / "r", ["--cache", cache], "smoke|lab=0000000000000000|layer=1")
    assert main(["resume", run, "--dry-run"]) == 2
    assert "was trained on pair 'smoke|lab=0000000000000000|layer=1'" in capsys.readouterr().err
    # An older cache without a record is not compared; the run's source is then the pair asked for.
    old = _fake_cache(tmp_path / "old", None)
    from tiedlib.cli import run_source

    cfg = config_from_args(build_parser().parse_args([*TRAIN, "--cache", old, "--out-dir", str(tmp_path / "b")]))
    assert run_source(cfg) == pair_source("smoke")
    assert read_source(run) == "smoke|lab=0000000000000000|layer=1"
