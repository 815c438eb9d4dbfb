"""Glue used by the notebooks: harvest a pair's activations on token sequences, and train-or-load a run directory.

At the smoke and tiny scales every activation fits in memory, so notebooks harvest once with
:func:`collect_activations` and train on :class:`~tiedlib.batches.InMemoryBatches`. At paper scale the same
:func:`train_or_load` runs on :class:`~tiedlib.buffer.ActivationBuffer` instead (see ``tiedlib.cli``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from tiedlib.activations import HarvestBatch, estimate_norm_factors, harvest_all
from tiedlib.batches import InMemoryBatches
from tiedlib.checkpoints import load_crosscoder
from tiedlib.config import CrosscoderConfig, TrainConfig
from tiedlib.crosscoder import CONFIG_NAME, WEIGHTS_NAME, Crosscoder, make_crosscoder
from tiedlib.pairs import ModelPair
from tiedlib.training import list_checkpoints, read_metrics, resume, train


class PairActivations(NamedTuple):
    """Harvested activations with their provenance, raw and normalised."""

    harvest: HarvestBatch
    """Raw activations ``(n_tokens, 2, d_model)`` with token ids, document index and position."""
    norm_factors: torch.Tensor
    """``(2,)`` per-model factors (mean norm -> sqrt(d_model)), estimated on these tokens."""

    @property
    def normalized(self) -> torch.Tensor:
        return self.harvest.acts * self.norm_factors[None, :, None]

    def batches(self, batch_size: int, *, seed: int = 0) -> InMemoryBatches:
        """Shuffled normalised rows, repeated for as many epochs as training asks (``batch_size`` is capped at the
        number of rows); the factors travel with them into the crosscoder config."""
        rows = self.normalized
        return InMemoryBatches(
            rows, min(batch_size, rows.shape[0]), seed=seed, epochs=None, norm_factors=self.norm_factors
        )


def collect_activations(
    pair: ModelPair,
    sequences: Sequence[Sequence[int]],
    *,
    exclude_token_ids: Sequence[int] = (),
    batch_size: int = 16,
    norm_factors: torch.Tensor | None = None,
    progress: bool = True,
) -> PairActivations:
    """Harvest ``pair`` at ``pair.layer`` on ``sequences`` (BOS and padding dropped) and normalise.

    ``norm_factors`` defaults to an estimate on the harvested tokens themselves; pass the factors a crosscoder was
    trained with to analyse new data in the same units.
    """
    h = harvest_all(
        pair.base,
        pair.chat,
        sequences,
        pair.layer,
        batch_size=batch_size,
        exclude_token_ids=exclude_token_ids,
        progress=progress,
    )
    factors = norm_factors if norm_factors is not None else estimate_norm_factors(h, pair.d_model)
    return PairActivations(h, torch.as_tensor(factors, dtype=torch.float32))


def is_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a completed run (final weights at its top level)."""
    run_dir = Path(run_dir)
    return (run_dir / WEIGHTS_NAME).exists() and (run_dir / CONFIG_NAME).exists()


def train_or_load(
    run_dir: str | Path,
    crosscoder_cfg: CrosscoderConfig,
    train_cfg: TrainConfig,
    make_data: Callable[[], Iterator[torch.Tensor]],
    *,
    log: Callable[[dict], object] | None = None,
) -> tuple[Crosscoder, list[dict]]:
    """Load the finished run in ``run_dir`` if its config matches, resume it if it was interrupted, else train it.

    Returns the crosscoder and its logged metrics. A finished run whose crosscoder config differs from
    ``crosscoder_cfg`` is never replaced: the error says which fields differ, so the caller picks another folder.
    """
    run_dir = Path(run_dir)
    if is_finished(run_dir):
        model = load_crosscoder(run_dir)
        _check_same(model.cfg, crosscoder_cfg, run_dir)
        return model, read_metrics(run_dir)
    if list_checkpoints(run_dir):
        model = resume(run_dir, make_data(), log=log)
        return model, read_metrics(run_dir)
    # Seed the initialisation too (train() seeds only the optimisation), so a run folder is reproducible
    # whatever the caller did with the global RNG before.
    torch.manual_seed(train_cfg.seed)
    model = make_crosscoder(crosscoder_cfg)
    model = train(train_cfg, model, make_data(), out_dir=run_dir, log=log)
    return model, read_metrics(run_dir)


def _check_same(found: CrosscoderConfig, wanted: CrosscoderConfig, run_dir: Path) -> None:
    a, b = found.to_dict(), wanted.to_dict()
    diff = sorted(k for k in b if k != "norm_factors" and a.get(k) != b[k])
    if diff:
        details = ", ".join(f"{k}: saved {a.get(k)!r} vs requested {b[k]!r}" for k in diff)
        raise ValueError(f"{run_dir} holds a finished run with a different config ({details}); use another run_dir")
