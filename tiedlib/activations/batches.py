"""Resumable iterators over activation rows that live in memory.

The trainer accepts any iterator of ``(batch, 2, d_model)`` tensors. When the iterator also has ``state_dict()`` and
``load_state_dict()`` (this module's :class:`InMemoryBatches`, and :class:`tiedlib.activations.ActivationBuffer`),
checkpoints store its position and a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import warnings

import torch
from jaxtyping import Float
from torch import Tensor


class DataExhaustedError(RuntimeError):
    """Raised when a data source has no more fresh rows and was configured not to start a new epoch.

    Deliberately not ``StopIteration``: a training loop must not mistake running out of data for a normal end.
    """


class InMemoryBatches:
    """Shuffled mini-batches drawn without replacement from a tensor of activation rows.

    Args:
        rows: ``(n_rows, 2, d_model)`` activations (already normalised if the crosscoder expects that).
        batch_size: rows per batch; the last incomplete batch of an epoch is dropped.
        seed: seeds this iterator's own generator (independent of the global torch RNG).
        epochs: how many passes over ``rows`` to serve; ``None`` for unlimited. After the last epoch, ``next``
            raises :class:`DataExhaustedError` naming how many rows were served. Each new epoch emits a warning.
        norm_factors: the per-model factors the rows were scaled by, if any (the trainer copies them into the
            crosscoder config so the checkpoint records them).
    """

    def __init__(
        self,
        rows: Float[Tensor, "n_rows n_models d_model"],
        batch_size: int,
        *,
        seed: int = 0,
        epochs: int | None = 1,
        norm_factors: Tensor | None = None,
    ) -> None:
        if rows.ndim != 3 or rows.shape[1] != 2:
            raise ValueError(f"rows must have shape (n_rows, 2, d_model), got {tuple(rows.shape)}")
        if rows.shape[0] < batch_size:
            raise ValueError(f"need at least batch_size={batch_size} rows, got {rows.shape[0]}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if epochs is not None and epochs <= 0:
            raise ValueError(f"epochs must be positive or None, got {epochs}")
        if not torch.isfinite(rows).all():
            raise ValueError("rows contain NaN or infinite values")
        self.rows = rows
        self.batch_size = batch_size
        self.seed = seed
        self.epochs = epochs
        self.norm_factors = norm_factors
        self._epoch = 0
        self._index = 0  # batches served in this epoch
        self._perm = self._permutation(0)

    @property
    def batches_per_epoch(self) -> int:
        return self.rows.shape[0] // self.batch_size

    def _permutation(self, epoch: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.rows.shape[0], generator=gen)

    def __iter__(self) -> "InMemoryBatches":
        return self

    def __next__(self) -> Tensor:
        if self._index >= self.batches_per_epoch:
            if self.epochs is not None and self._epoch + 1 >= self.epochs:
                served = self.batches_per_epoch * self.batch_size * (self._epoch + 1)
                raise DataExhaustedError(
                    f"in-memory data exhausted after {self._epoch + 1} epoch(s) ({served} rows served); "
                    "pass epochs=None (or more epochs) to reuse rows, or provide more data"
                )
            self._epoch += 1
            self._index = 0
            self._perm = self._permutation(self._epoch)
            warnings.warn(f"InMemoryBatches: starting epoch {self._epoch + 1}; rows are being reused", stacklevel=2)
        idx = self._perm[self._index * self.batch_size : (self._index + 1) * self.batch_size]
        self._index += 1
        return self.rows[idx]

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "index": self._index, "seed": self.seed, "n_rows": int(self.rows.shape[0])}

    def load_state_dict(self, state: dict) -> None:
        if state["n_rows"] != self.rows.shape[0] or state["seed"] != self.seed:
            raise ValueError(
                f"data state is for {state['n_rows']} rows with seed {state['seed']}, "
                f"but this iterator has {self.rows.shape[0]} rows with seed {self.seed}"
            )
        self._epoch, self._index = int(state["epoch"]), int(state["index"])
        self._perm = self._permutation(self._epoch)
