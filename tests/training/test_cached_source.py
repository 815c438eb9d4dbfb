"""A run folder records the pair its activations came from, and is never loaded or resumed for another pair
(:func:`tiedlib.training.train_or_load` with ``source=``; :attr:`tiedlib.pairs.ModelPair.fingerprint`)."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import replace

import pytest
import torch

from tests.helpers import random_rows
from tiedlib.config import CrosscoderConfig, TrainConfig
from tiedlib.lab import LabConfig
from tiedlib.pairs import ModelPair, pair_fingerprint, pair_source
from tiedlib.training.cached import train_or_load
from tiedlib.training.rundir import SOURCE_NAME, list_checkpoints, read_source

D = 8
CC = CrosscoderConfig(d_model=D, n_latents=4, architecture="standard")
STEPS = 6


def _make_data():
    rows = random_rows(96, d_model=D)
    return iter(rows.split(16))


def _train(run_dir, source, **train_kw):
    cfg = TrainConfig(n_steps=STEPS, lr=1e-3, l1_coeff=1.0, log_every=1, **train_kw)
    return train_or_load(run_dir, CC, cfg, _make_data, source=source)


def test_a_finished_run_loads_for_its_own_source_only(tmp_path):
    run = tmp_path / "run"
    model, _ = _train(run, "pair A")
    assert read_source(run) == "pair A"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same source loads silently
        again, _ = _train(run, "pair A")
    assert torch.equal(again.W_dec, model.W_dec)
    with pytest.raises(ValueError, match=r"trained on pair 'pair A', this call asks for pair 'pair B'") as err:
        _train(run, "pair B")
    assert str(run) in str(err.value)


def test_a_run_without_a_record_loads_with_a_warning(tmp_path):
    run = tmp_path / "run"
    model, _ = _train(run, None)  # an older run: no record
    assert not (run / SOURCE_NAME).exists()
    with pytest.warns(UserWarning, match="cannot be checked that it was trained on pair 'pair A'"):
        again, _ = _train(run, "pair A")
    assert torch.equal(again.W_dec, model.W_dec)


def test_an_interrupted_run_resumes_for_its_own_source_only(tmp_path):
    run = tmp_path / "run"
    _train(run, "pair A", checkpoint_every=3)
    # Make it an interrupted run: drop the final files, keep the step-3 checkpoint (and the record).
    for f in run.iterdir():
        if f.is_file() and f.name != SOURCE_NAME:
            f.unlink()
    steps = list_checkpoints(run)
    assert [p.name for p in steps] == ["step_0000003", "step_0000006"]
    shutil.rmtree(steps[-1])
    with pytest.raises(ValueError, match="trained on pair 'pair A', this call asks for pair 'pair B'"):
        _train(run, "pair B", checkpoint_every=3)
    assert not (run / "model.safetensors").exists()  # refused before any training
    _train(run, "pair A", checkpoint_every=3)
    assert (run / "model.safetensors").exists() and read_source(run) == "pair A"


def test_fingerprints_tell_lab_seeds_layers_and_dtypes_apart():
    cfg = LabConfig.smoke()
    other_seed = replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + 1))
    pair = ModelPair("smoke", None, None, None, layer=1, d_model=64, config=cfg)
    assert pair.fingerprint == pair_fingerprint("smoke", 1, config=cfg)
    assert pair.fingerprint != pair_fingerprint("smoke", 1, config=other_seed)
    assert pair.fingerprint != pair_fingerprint("smoke", 0, config=cfg)
    assert pair.fingerprint != pair_fingerprint("no-swap/half-swap", 1, config=cfg)  # the colour toy's fine-tunes
    hub = {"base": "google/gemma-2-2b", "chat": "google/gemma-2-2b-it"}
    bf16 = pair_fingerprint("gemma-2-2b", 14, config=hub, dtype=torch.bfloat16)
    assert bf16 == "gemma-2-2b|base=google/gemma-2-2b|chat=google/gemma-2-2b-it|layer=14|dtype=bfloat16"
    assert bf16 != pair_fingerprint("gemma-2-2b", 14, config=hub, dtype="float32")
    assert bf16 != pair_fingerprint("gemma-2-2b", 14, config={**hub, "revision": "abc"}, dtype=torch.bfloat16)


def test_pair_source_is_the_fingerprint_load_pair_gives(monkeypatch):
    from tiedlib.lab.config import SEED_ENV

    monkeypatch.delenv(SEED_ENV, raising=False)
    smoke = LabConfig.smoke()
    assert pair_source("smoke") == pair_fingerprint("smoke", smoke.model.default_layer, config=smoke)
    monkeypatch.setenv(SEED_ENV, "7")  # another lab seed: another pair behind the same name
    assert pair_source("smoke") != pair_fingerprint("smoke", smoke.model.default_layer, config=smoke)
    assert pair_source("gemma-2-2b", device="cpu").endswith("|layer=14|dtype=float32")
    with pytest.raises(ValueError, match="unknown model pair"):
        pair_source("nope")
