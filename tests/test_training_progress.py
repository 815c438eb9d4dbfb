"""Notebook training shows a progress bar at every scale: :func:`tiedlib.training.train_crosscoder` (Experiments 2 and
4) trains with tqdm.auto on, which renders as a widget in an executed notebook and as text on a terminal (captured
here from stderr)."""

import torch

from tests.helpers import random_rows
from tiedlib.activations.collect import PairActivations
from tiedlib.activations.harvest import HarvestBatch
from tiedlib.training.cached import train_crosscoder


def test_train_crosscoder_shows_a_bar_to_the_last_step(tmp_path, capsys):
    rows = random_rows(64, d_model=8)
    idx = torch.arange(64)
    acts = PairActivations(HarvestBatch(rows, idx, idx, idx), torch.ones(2))
    train_crosscoder(tmp_path / "run", acts, architecture="tied", n_latents=4, n_steps=7, batch_size=16, lr=1e-3,
                     l1_coeff=1.0)  # fmt: skip
    err = capsys.readouterr().err
    assert "train" in err and "7/7" in err and "100%" in err, err
    # A finished run is loaded, not trained: no bar then.
    train_crosscoder(tmp_path / "run", acts, architecture="tied", n_latents=4, n_steps=7, batch_size=16, lr=1e-3,
                     l1_coeff=1.0)  # fmt: skip
    assert "7/7" not in capsys.readouterr().err
