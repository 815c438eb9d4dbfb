"""A pair's activations on whole samples, and the lazy training data the notebooks hand to the trainer.

At the smoke and tiny scales every activation fits in memory, so notebooks harvest once with
:func:`collect_activations` and train on :class:`~tiedlib.activations.batches.InMemoryBatches`. At paper scale
:func:`training_data` serves an :class:`~tiedlib.activations.buffer.ActivationBuffer` instead (see ``tiedlib.cli``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from tiedlib.activations.batches import InMemoryBatches
from tiedlib.activations.harvest import HarvestBatch, estimate_norm_factors, harvest_all
from tiedlib.pairs import ModelPair


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


def training_data(
    pair: ModelPair,
    sequences: Sequence[Sequence[int]],
    *,
    batch_size: int,
    model_batch_size: int = 32,
    exclude_token_ids: Sequence[int] = (),
    in_memory: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> Callable[[], Iterator[Tensor]]:
    """A lazy ``make_data()`` for :func:`tiedlib.training.train_or_load` (nothing is harvested until it is called, so
    loading a finished run costs no forward passes). Batches are normalised; their ``norm_factors`` go into the
    crosscoder config.

    ``in_memory``: harvest once and serve shuffled normalised rows (:class:`InMemoryBatches`, epochs repeat);
    otherwise an :class:`~tiedlib.activations.ActivationBuffer` harvests fresh tokens on every refresh (paper scale).
    """
    cache: dict[str, Any] = {}

    def make_rows() -> Iterator[Tensor]:
        if "acts" not in cache:
            cache["acts"] = collect_activations(pair, sequences, exclude_token_ids=exclude_token_ids,
                                                batch_size=model_batch_size, progress=progress)  # fmt: skip
        return cache["acts"].batches(batch_size, seed=seed)

    def make_buffer() -> Iterator[Tensor]:
        from tiedlib.activations.buffer import ActivationBuffer

        return ActivationBuffer(pair.base, pair.chat, sequences, pair.layer, batch_size=batch_size,
                                buffer_tokens=128 * batch_size, model_batch_size=model_batch_size, seed=seed,
                                on_exhausted="new_epoch", exclude_token_ids=exclude_token_ids)  # fmt: skip

    return make_rows if in_memory else make_buffer
