"""Train once, load afterwards: the notebooks' entry points to :func:`~tiedlib.training.loop.train`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from tiedlib.config import CrosscoderConfig, TrainConfig
from tiedlib.crosscoders.checkpoints import load_crosscoder
from tiedlib.crosscoders.crosscoder import Crosscoder, make_crosscoder
from tiedlib.training.loop import resume, train
from tiedlib.training.rundir import check_source, is_finished, list_checkpoints, read_metrics, write_source

EPOCH_WARNINGS = ("InMemoryBatches: starting epoch", "ActivationBuffer: all .* sequences consumed; starting epoch")
"""Warnings (regular expressions) of a data source starting a new epoch over its rows: expected, not news, when a
notebook repeats a small sample for as many steps as it trains."""


def train_or_load(
    run_dir: str | Path,
    crosscoder_cfg: CrosscoderConfig,
    train_cfg: TrainConfig,
    make_data: Callable[[], Iterator[torch.Tensor]],
    *,
    log: Callable[[dict], object] | None = None,
    source: str | None = None,
) -> tuple[Crosscoder, list[dict]]:
    """Load the finished run in ``run_dir`` if its config matches, resume it if it was interrupted, else train it.

    Returns the crosscoder and its logged metrics. A finished run whose crosscoder config differs from
    ``crosscoder_cfg`` is never replaced: the error says which fields differ, so the caller picks another folder.

    ``source`` names where the activations come from (``pair.fingerprint``,
    :attr:`tiedlib.pairs.ModelPair.fingerprint`): a new run records it in ``run_dir`` when it starts
    (:func:`~tiedlib.training.rundir.write_source`), and a finished or interrupted run recorded with another source
    is refused rather than loaded or continued, since run folders are usually named by settings that name the pair
    only as ``"tiny"``. A run folder without a record (older runs) is used with a warning. ``None`` checks nothing.

    Raises:
        ValueError: a finished run with another crosscoder config, or a run trained on another ``source``.
    """
    run_dir = Path(run_dir)
    if is_finished(run_dir):
        model = load_crosscoder(run_dir)
        _check_same(model.cfg, crosscoder_cfg, run_dir)
        check_source(run_dir, source)
        return model, read_metrics(run_dir)
    if list_checkpoints(run_dir):
        check_source(run_dir, source)
        model = resume(run_dir, make_data(), log=log)
        return model, read_metrics(run_dir)
    # Seed the initialisation too (train() seeds only the optimisation), so a run folder is reproducible
    # whatever the caller did with the global RNG before.
    torch.manual_seed(train_cfg.seed)
    model = make_crosscoder(crosscoder_cfg)
    if source is not None:  # recorded before training, so an interrupted run is checked on resume too
        run_dir.mkdir(parents=True, exist_ok=True)
        write_source(run_dir, source)
    model = train(train_cfg, model, make_data(), out_dir=run_dir, log=log)
    return model, read_metrics(run_dir)


def _check_same(found: CrosscoderConfig, wanted: CrosscoderConfig, run_dir: Path) -> None:
    a, b = found.to_dict(), wanted.to_dict()
    diff = sorted(k for k in b if k != "norm_factors" and a.get(k) != b[k])
    if diff:
        details = ", ".join(f"{k}: saved {a.get(k)!r} vs requested {b[k]!r}" for k in diff)
        raise ValueError(f"{run_dir} holds a finished run with a different config ({details}); use another run_dir")


def train_crosscoder(
    run_dir: str | Path, acts: Any, *, architecture: str, n_latents: int, n_steps: int, batch_size: int, lr: float,
    l1_coeff: float, eta: float = 2.0, seed: int = 0, device: str = "cpu", source: str | None = None,
) -> tuple[Any, list[dict]]:
    """Train (or load, if ``run_dir`` holds the finished run) a crosscoder on harvested activations, with a progress
    bar (tqdm.auto: a widget in a notebook, text on a terminal).

    ``acts`` is a :class:`~tiedlib.activations.collect.PairActivations` or a
    :class:`~tiedlib.activations.collect.StreamedActivations` (anything with ``d_model`` and ``batches``); rows are
    reused in new epochs as often as ``n_steps`` needs (the write-up repeats its 80k prefixes up to 60M tokens), and
    the "starting epoch" warnings that this repetition raises are not shown. ``source`` is the pair the activations
    came from (``pair.fingerprint``), recorded and checked as in :func:`train_or_load`. Returns the crosscoder and its
    logged metrics.
    """
    cc_cfg = CrosscoderConfig(d_model=acts.d_model, n_latents=n_latents, architecture=architecture, eta=eta)
    train_cfg = TrainConfig(n_steps=n_steps, lr=lr, l1_coeff=l1_coeff, seed=seed, device=device, progress=True,
                            log_every=max(1, n_steps // 20))
    with warnings.catch_warnings():
        for message in EPOCH_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        return train_or_load(run_dir, cc_cfg, train_cfg, lambda: acts.batches(batch_size, seed=seed), source=source)
