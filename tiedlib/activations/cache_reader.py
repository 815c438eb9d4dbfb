"""Shuffled, normalised batches from an :class:`~tiedlib.activations.cache.ActivationCache`, with bounded memory
and exact resume; and :func:`fan_out`, which feeds one pass over the data to several crosscoders.

Shuffling (per epoch ``e``): the shard order is a permutation drawn from a generator seeded with ``(seed, e)``; the
shards are taken ``window_shards`` at a time in that order, and the rows of each window are permuted by a generator
seeded with ``(seed, e, window)``. The epoch is the concatenation of the permuted windows, cut into batches of
``batch_size`` rows; a batch may straddle two windows. Every row of the cache is served exactly once per epoch,
except the last ``n_tokens % batch_size`` rows of the epoch's order, which are dropped.

Memory: only the current window is resident: ``window_shards`` shards of rows in the cache's dtype (bf16 rows stay
bf16 until a batch is gathered), plus one shard being read while the window is filled and one batch. The previous
window is released before the next one is read.

Exact resume: the whole position is ``(epoch, rows served in the epoch)``; everything else (orders, windows) is
recomputed from the seed, so :meth:`CacheBatches.state_dict` is a few integers and a resumed reader serves bitwise
the same batches.

Data parallel (``rank``, ``world_size``): every rank computes the same global order and the same global batches of
``batch_size`` rows, and serves only its slice of each, rows ``[rank * b, (rank + 1) * b)`` for
``b = batch_size / world_size``. The global batches, and the position in :meth:`CacheBatches.state_dict`, do not
depend on the world size, so a run checkpointed on N ranks resumes exactly on M ranks. Each rank loads the windows
its slices touch (every window, in practice): the I/O and host memory per rank are those of one reader, and the
page cache shares the reads of ranks on one node.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tiedlib.activations.batches import DataExhaustedError
from tiedlib.activations.cache import ActivationCache, open_cache


def _generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from a hash of integer keys.

    Hashed because the Mersenne Twister seeded with adjacent integers can draw the same small permutation (seeds
    ``s`` and ``s + 1`` gave the same order of 5 shards).
    """
    digest = hashlib.sha256(json.dumps([int(k) for k in keys]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class CacheBatches:
    """Iterator of shuffled ``(batch_size, 2, d_model)`` float32 batches read from a cache, normalised.

    Args:
        cache: an opened cache, or the folder of one (opened without compatibility checks: prefer
            :func:`tiedlib.activations.cache.open_cache` with the pair).
        batch_size: rows per batch.
        seed: shuffling seed (shard order and rows within a window).
        window_shards: shards resident at once; rows are shuffled within a window (more shards: better mixing, more
            memory).
        epochs: passes over the cache to serve (``None``: unlimited, with a warning at each new epoch). After the last
            one ``next`` raises :class:`DataExhaustedError`.
        device: where served batches live.
        normalise: multiply by the cache's ``norm_factors`` (default), or serve raw activations.
        verify: check each shard's sha256 the first time this reader loads it.
        rank, world_size: serve only slice ``rank`` of ``world_size`` equal slices of each global batch (data
            parallel; ``batch_size`` is the global batch and must be divisible by ``world_size``).

    Attributes:
        last_positions: ``(local_batch, 3)`` int64 ``[epoch, doc_index, position]`` of the last served batch (CPU).
        last_token_ids: ``(local_batch,)`` int64 token ids of the last served batch (CPU).
        local_batch: rows a batch holds on this rank (``batch_size // world_size``).
        norm_factors: the ``(2,)`` factors applied (ones when ``normalise=False``).
        max_resident_shards: the most shards held at once so far (for memory checks).
    """

    def __init__(
        self,
        cache: ActivationCache | str,
        batch_size: int,
        *,
        seed: int = 0,
        window_shards: int = 2,
        epochs: int | None = 1,
        device: str | torch.device = "cpu",
        normalise: bool = True,
        verify: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cache = cache if isinstance(cache, ActivationCache) else open_cache(cache)
        if batch_size <= 0 or window_shards <= 0:
            raise ValueError(f"batch_size and window_shards must be positive, got {batch_size}, {window_shards}")
        if epochs is not None and epochs <= 0:
            raise ValueError(f"epochs must be positive or None, got {epochs}")
        if self.cache.n_tokens < batch_size:
            raise ValueError(f"the cache holds {self.cache.n_tokens} tokens, fewer than one batch of {batch_size}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of world_size {world_size}")
        if batch_size % world_size:
            raise ValueError(f"the global batch_size {batch_size} is not divisible by world_size {world_size}: every "
                             "rank needs an equal slice (change the batch size or the number of processes)")
        self.batch_size, self.seed, self.window_shards, self.epochs = batch_size, seed, window_shards, epochs
        self.rank, self.world_size = rank, world_size
        self.local_batch = batch_size // world_size
        self.device = torch.device(device)
        self.verify = verify
        self.norm_factors = self.cache.norm_factors.clone() if normalise else torch.ones(2)
        self._factors = self.norm_factors.to(self.device)[None, :, None]
        self._sizes = torch.tensor([s["n_tokens"] for s in self.cache.shards], dtype=torch.long)
        self._verified: set[int] = set()
        self._epoch, self._served = 0, 0  # the whole position: epoch and rows served in it
        self._plan_epoch = -1
        self._window_index = -1
        self._window: tuple[Tensor, Tensor, Tensor] | None = None  # acts, [doc, position, token id], permutation
        self.max_resident_shards = 0
        self.last_positions: Int[Tensor, "batch 3"] = torch.empty(0, 3, dtype=torch.long)
        self.last_token_ids: Int[Tensor, " batch"] = torch.empty(0, dtype=torch.long)

    # ------------------------------------------------------------------------------------------------
    @property
    def batches_per_epoch(self) -> int:
        return self.cache.n_tokens // self.batch_size

    @property
    def tokens_consumed(self) -> int:
        return self._epoch * self.batches_per_epoch * self.batch_size + self._served

    def _plan(self, epoch: int) -> None:
        """Shard order and window boundaries (cumulative row offsets) of ``epoch``."""
        if self._plan_epoch == epoch:
            return
        order = torch.randperm(len(self._sizes), generator=_generator(self.seed, epoch))
        self._windows = [order[i : i + self.window_shards].tolist() for i in range(0, len(order), self.window_shards)]
        sizes = torch.tensor([int(self._sizes[w].sum()) for w in self._windows])
        self._window_ends = sizes.cumsum(0)
        self._plan_epoch, self._window_index, self._window = epoch, -1, None

    def _load_window(self, w: int) -> None:
        """Make window ``w`` of the current epoch resident (permuted), releasing the previous one first."""
        self._window, self._window_index = None, -1  # release before reading: never two windows at once
        shards = self._windows[w]
        n_rows = int(self._sizes[shards].sum())
        acts = torch.empty(n_rows, 2, self.cache.d_model, dtype=self.cache.dtype)
        meta = torch.empty(n_rows, 3, dtype=torch.long)  # doc, position, token id
        at = 0
        for k in shards:
            rows = self.cache.load_shard(k, verify=self.verify and k not in self._verified)
            self._verified.add(k)
            n = rows.acts.shape[0]
            acts[at : at + n] = rows.acts
            meta[at : at + n] = torch.stack([rows.doc_index, rows.position, rows.token_ids], dim=1)
            at += n
            del rows
        self.max_resident_shards = max(self.max_resident_shards, len(shards))
        # Shuffling permutes indices; a batch gathers its rows (no permuted copy of the window is ever made).
        perm = torch.randperm(n_rows, generator=_generator(self.seed, self._epoch, w))
        self._window, self._window_index = (acts, meta, perm), w

    def _gather(self, at: int, n: int) -> tuple[Tensor, Tensor]:
        """Rows ``at .. at + n`` of the resident window's shuffled order (copies: rows and ``[doc, pos, id]``)."""
        win_acts, win_meta, perm = self._window  # type: ignore[misc]
        idx = perm[at : at + n]
        return win_acts[idx], win_meta[idx]

    def __iter__(self) -> CacheBatches:
        return self

    def __next__(self) -> Float[Tensor, "batch n_models d_model"]:
        """The next shuffled, normalised ``(local_batch, 2, d_model)`` float32 batch on ``device`` (this rank's slice
        of the global batch; the whole batch when ``world_size == 1``).

        Raises:
            DataExhaustedError: the last of ``epochs`` epochs is spent.
            CacheCorruptError: a shard does not match its recorded sha256.
        """
        if self._served + self.batch_size > self.batches_per_epoch * self.batch_size:
            if self.epochs is not None and self._epoch + 1 >= self.epochs:
                raise DataExhaustedError(f"activation cache exhausted after {self._epoch + 1} epoch(s) "
                                         f"({self.tokens_consumed} tokens served); pass more epochs (or None) or "
                                         "cache more tokens")  # fmt: skip
            self._epoch, self._served = self._epoch + 1, 0
            warnings.warn(f"CacheBatches: starting epoch {self._epoch + 1}; cached tokens are being reused",
                          stacklevel=2)  # fmt: skip
        self._plan(self._epoch)
        acts, meta = [], []
        lo = self._served + self.rank * self.local_batch
        hi = lo + self.local_batch
        while lo < hi:
            w = int(torch.searchsorted(self._window_ends, lo, right=True))
            if w != self._window_index:
                self._load_window(w)
            start = 0 if w == 0 else int(self._window_ends[w - 1])
            take = min(hi, int(self._window_ends[w])) - lo
            a, m = self._gather(lo - start, take)  # no reference to the window outlives this call
            acts.append(a)
            meta.append(m)
            lo += take
        rows = acts[0] if len(acts) == 1 else torch.cat(acts)
        m = meta[0] if len(meta) == 1 else torch.cat(meta)
        self._served += self.batch_size
        self.last_positions = torch.cat([torch.full((m.shape[0], 1), self._epoch), m[:, :2]], dim=1)
        self.last_token_ids = m[:, 2].clone()
        # Cross to the device in the storage dtype (bf16: half the bytes), then widen and scale.
        return rows.to(self.device, non_blocking=True).float() * self._factors

    # ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The reader's position (``epoch``, ``served`` rows in it) and the settings it depends on."""
        return {"epoch": self._epoch, "served": self._served, "seed": self.seed, "batch_size": self.batch_size,
                "window_shards": self.window_shards, "n_tokens": self.cache.n_tokens,
                "shard_sha256": [s["sha256"] for s in self.cache.shards],
                "norm_factors": self.norm_factors.clone()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next batches equal those of an uninterrupted run.

        Raises:
            ValueError: the state was saved with another seed, batch size, window or cache (names the field).
        """
        mine = self.state_dict()
        for key in ("seed", "batch_size", "window_shards", "n_tokens", "shard_sha256"):
            if state[key] != mine[key]:
                what = "other shards" if key == "shard_sha256" else f"{key}={state[key]}, this reader has {mine[key]}"
                raise ValueError(f"cache reader state was saved with {what}")
        self._epoch, self._served = int(state["epoch"]), int(state["served"])
        self._plan_epoch, self._window_index, self._window = -1, -1, None


def fan_out(
    source: Iterator[Tensor],
    consumers: Sequence[Callable[[Tensor, int], Any]],
    n_steps: int,
    *,
    start_step: int = 0,
) -> list[list[Any]]:
    """Feed each batch of ``source`` to every consumer: several crosscoders trained from one pass over the cache.

    A consumer is called as ``consumer(batch, step)``, e.g. ``lambda b, s: train_step(model_i, opt_i, b, s)`` with
    one model and optimizer per eta, variant or seed. The batch is read (and normalised, and moved to the device)
    once, and every consumer sees the same tensor; a consumer must not modify it in place. A ``train_many`` in
    :mod:`tiedlib.training` can take a :class:`CacheBatches` and call this with one ``train_step`` per model.

    Args:
        source: any batch iterator (:class:`CacheBatches`, ``ActivationBuffer``, ``InMemoryBatches``).
        consumers: callables taking ``(batch, step)``.
        n_steps: batches to read.
        start_step: step number of the first batch (for resumed runs).

    Returns:
        Per consumer, the list of its return values, one per step.
    """
    if not consumers:
        raise ValueError("fan_out needs at least one consumer")
    out: list[list[Any]] = [[] for _ in consumers]
    for step in range(start_step, start_step + n_steps):
        batch = next(source)
        for i, consume in enumerate(consumers):
            out[i].append(consume(batch, step))
    return out
