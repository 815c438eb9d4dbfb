"""Experiment 3's lab SAEs record the pair they were trained on and are not reloaded for another lab pair."""

import json
from dataclasses import asdict

import pytest
import torch

from tiedlib.config import pick
from tiedlib.experiments.exp3.presets import TABLE
from tiedlib.experiments.exp3.run import _train_or_load
from tiedlib.training.rundir import write_source


def test_an_sae_of_another_lab_pair_is_refused(tmp_path):
    settings = pick(TABLE, "smoke")
    keys = ("pair", "n_mix_docs", "web_fraction", "d_sae_multiple", "l1_coefficient", "train_samples",
            "sae_batch_size", "sae_lr", "seed")
    folder = tmp_path / "sae_base"
    folder.mkdir()
    (folder / "tiedlib_settings.json").write_text(json.dumps({**{k: asdict(settings)[k] for k in keys}, "layer": 0}))
    write_source(folder, "smoke|lab=aaaa|layer=0")
    with pytest.raises(ValueError, match=r"trained on pair 'smoke\|lab=aaaa\|layer=0', this call asks for pair "):
        _train_or_load(settings, torch.zeros(4, 8), folder, 0, source="smoke|lab=bbbb|layer=0")
