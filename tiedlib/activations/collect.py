"""A pair's activations on whole samples, in memory when they fit and streamed when they do not.

:func:`collect_activations` decides by one rule (:func:`plan_collect`): a sample whose harvest, plus the normalised
copy that training or analysis makes of it, fits in :data:`MEMORY_LIMIT_BYTES` is harvested once into memory
(:class:`PairActivations`); a larger one (Experiment 2's 80k colour prefixes of Gemma-2-2b: up to 1.5 TB) is
*streamed* (:class:`StreamedActivations`): training reads it through an
:class:`~tiedlib.activations.buffer.ActivationBuffer` no bigger than the same limit, and analysis passes harvest it
again chunk by chunk. Both kinds answer the same questions (``n_tokens``, ``d_model``, ``norm_factors``,
``batches``, ``chunks``, ``select``), so the experiments never branch on the scale.

:func:`training_data` is the lazy ``make_data()`` the notebooks hand to the trainer, built on the same two kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib.activations.batches import InMemoryBatches
from tiedlib.activations.buffer import ActivationBuffer
from tiedlib.activations.harvest import HarvestBatch, as_ids, estimate_norm_factors, harvest
from tiedlib.pairs import ModelPair

MEMORY_LIMIT_BYTES = 8 * 2**30
"""The most bytes of activations one collect path holds (8 GiB): an in-memory harvest with its normalised copy, or a
streamed sample's training buffer. Experiments' paper presets are checked against it in
``tests/experiments/test_paper_memory.py``."""
BUFFER_BATCHES = 128
"""A streamed sample's training buffer holds this many batches (the public replication's buffer multiple) unless
:data:`MEMORY_LIMIT_BYTES` allows fewer."""
NORM_SAMPLE_SEQUENCES = 2048
"""A streamed sample's normalisation factors are estimated on this many sequences, evenly spaced over the sample."""
ANALYSIS_CHUNK = 4096
"""Rows per chunk of :meth:`PairActivations.chunks`."""
_INDEX_BYTES = 3 * 8  # token id, document index and position of a harvested row, int64 each


def harvest_bytes_per_token(d_model: int) -> int:
    """Bytes one harvested token takes in memory: float32 activations of both models and three int64 indices."""
    return 2 * d_model * 4 + _INDEX_BYTES


def buffer_tokens_for(batch_size: int, d_model: int, limit_bytes: int | None = None) -> int:
    """Tokens of a streamed sample's training buffer: :data:`BUFFER_BATCHES` batches, fewer when that would pass
    ``limit_bytes`` (default :data:`MEMORY_LIMIT_BYTES`; :meth:`ActivationBuffer.bytes_needed`, float32), at least
    one batch; a multiple of ``batch_size``."""
    limit_bytes = MEMORY_LIMIT_BYTES if limit_bytes is None else limit_bytes
    if min(batch_size, d_model, limit_bytes) < 1:
        raise ValueError(f"batch_size, d_model and limit_bytes must be positive, got {batch_size}, {d_model}, "
                         f"{limit_bytes}")  # fmt: skip
    fits = limit_bytes // ActivationBuffer.bytes_needed(1, d_model)
    return max(1, min(BUFFER_BATCHES, fits // batch_size)) * batch_size


class CollectPlan(NamedTuple):
    """How :func:`collect_activations` handles a sample, and the bytes of activations it then holds."""

    n_tokens: int
    d_model: int
    in_memory: bool
    held_bytes: int
    """In memory: the harvest (:func:`harvest_bytes_per_token` a token) plus one normalised float32 copy (what
    :meth:`PairActivations.batches` trains on). Streamed: the training buffer of ``batch_size`` batches."""


def plan_collect(n_tokens: int, d_model: int, *, batch_size: int, limit_bytes: int | None = None
                 ) -> CollectPlan:  # fmt: skip
    """The rule: in memory exactly when the harvest and its normalised copy fit in ``limit_bytes``, else streamed
    through a buffer of :func:`buffer_tokens_for` tokens.

    Args:
        n_tokens: kept tokens of the sample (:func:`count_kept_tokens`, or an upper bound).
        d_model: residual width.
        batch_size: training batch size (sizes the buffer of a streamed sample).
        limit_bytes: the bound (default :data:`MEMORY_LIMIT_BYTES`).
    """
    limit_bytes = MEMORY_LIMIT_BYTES if limit_bytes is None else limit_bytes
    if n_tokens < 0 or min(d_model, batch_size) < 1:
        raise ValueError(f"need n_tokens >= 0 and positive d_model and batch_size, got {n_tokens}, {d_model}, "
                         f"{batch_size}")  # fmt: skip
    in_memory_bytes = n_tokens * (harvest_bytes_per_token(d_model) + 2 * d_model * 4)
    if in_memory_bytes <= limit_bytes:
        return CollectPlan(n_tokens, d_model, True, in_memory_bytes)
    buffer = ActivationBuffer.bytes_needed(buffer_tokens_for(batch_size, d_model, limit_bytes), d_model)
    return CollectPlan(n_tokens, d_model, False, buffer)


def count_kept_tokens(sequences: Sequence[Sequence[int]], *, bos_id: int | None,
                      exclude_token_ids: Sequence[int] = ()) -> int:  # fmt: skip
    """Tokens a harvest of ``sequences`` keeps, without running a model: every token except BOS (``bos_id``, at any
    position) and ``exclude_token_ids`` (padding is added by the harvest itself, so it is never counted)."""
    drop = {int(t) for t in exclude_token_ids} | ({int(bos_id)} if bos_id is not None else set())
    total = 0
    for s in sequences:
        ids = as_ids(s)
        total += len(ids) - sum(ids.count(t) for t in drop)
    return total


def _normalise(h: HarvestBatch, factors: Tensor) -> HarvestBatch:
    return h._replace(acts=h.acts * factors.to(h.acts.device)[None, :, None])


class PairActivations(NamedTuple):
    """Harvested activations held in memory with their provenance, raw, and the factors that normalise them."""

    harvest: HarvestBatch
    """Raw activations ``(n_tokens, 2, d_model)`` with token ids, document index and position."""
    norm_factors: torch.Tensor
    """``(2,)`` per-model factors (mean norm -> sqrt(d_model)), estimated on these tokens."""

    @property
    def in_memory(self) -> bool:
        return True

    @property
    def n_tokens(self) -> int:
        return int(self.harvest.acts.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.harvest.acts.shape[-1])

    @property
    def normalized(self) -> Float[Tensor, "n_tokens 2 d_model"]:
        """A normalised copy of every row."""
        return self.harvest.acts * self.norm_factors.to(self.harvest.acts.device)[None, :, None]

    def batches(self, batch_size: int, *, seed: int = 0) -> InMemoryBatches:
        """Shuffled normalised rows, repeated for as many epochs as training asks (``batch_size`` is capped at the
        number of rows); the factors travel with them into the crosscoder config."""
        rows = self.normalized
        return InMemoryBatches(
            rows, min(batch_size, rows.shape[0]), seed=seed, epochs=None, norm_factors=self.norm_factors
        )

    def chunks(self, chunk_size: int = ANALYSIS_CHUNK) -> Iterator[HarvestBatch]:
        """The rows in order, normalised, ``chunk_size`` at a time, with their provenance (one normalised chunk in
        memory at a time)."""
        h = self.harvest
        for s in range(0, self.n_tokens, chunk_size):
            part = HarvestBatch(*(getattr(h, f)[s : s + chunk_size] for f in HarvestBatch._fields))
            yield _normalise(part, self.norm_factors)

    def select(self, keep: Callable[[HarvestBatch], Bool[Tensor, " n"]]) -> PairActivations:
        """The rows for which ``keep`` (given a raw :class:`HarvestBatch`, reading its provenance) is true, in order,
        with the same factors."""
        mask = keep(self.harvest)
        h = self.harvest
        return PairActivations(HarvestBatch(h.acts[mask.to(h.acts.device)], *(getattr(h, f)[mask.cpu()]
                                                                            for f in HarvestBatch._fields[1:])),
                               self.norm_factors)  # fmt: skip


class StreamedActivations:
    """A sample too big to hold: its activations are harvested again for every pass, never held at once.

    Training batches come from an :class:`ActivationBuffer` of :func:`buffer_tokens_for` tokens (new epochs over the
    same sequences as training asks), analysis passes from :meth:`chunks` (one model batch at a time). The
    normalisation factors are estimated once, on :data:`NORM_SAMPLE_SEQUENCES` sequences evenly spaced over the
    sample (so a sample ordered by class, like the colour sets, is estimated on every class), unless given.
    """

    in_memory = False

    def __init__(self, pair: ModelPair, sequences: Sequence[Sequence[int]], *, exclude_token_ids: Sequence[int] = (),
                 model_batch_size: int = 16, norm_factors: Tensor | None = None, n_tokens: int | None = None,
                 limit_bytes: int | None = None, progress: bool = False) -> None:  # fmt: skip
        if len(sequences) == 0:
            raise ValueError("empty dataset: no sequences to stream")
        self.pair, self.sequences = pair, sequences
        self.exclude_token_ids = tuple(int(t) for t in exclude_token_ids)
        self.limit_bytes = MEMORY_LIMIT_BYTES if limit_bytes is None else limit_bytes
        self.model_batch_size, self.progress = model_batch_size, progress
        self._factors = None if norm_factors is None else torch.as_tensor(norm_factors, dtype=torch.float32)
        self._n_tokens = n_tokens

    @property
    def d_model(self) -> int:
        return int(self.pair.d_model)

    @property
    def n_tokens(self) -> int:
        """Kept tokens of one pass (counted from the token ids, no forward pass)."""
        if self._n_tokens is None:
            self._n_tokens = count_kept_tokens(self.sequences, bos_id=self.pair.tokenizer.bos_token_id,
                                               exclude_token_ids=self.exclude_token_ids)  # fmt: skip
        return self._n_tokens

    @cached_property
    def norm_factors(self) -> Float[Tensor, " 2"]:
        """``(2,)`` factors: as given, else estimated on the evenly spaced sample (computed on first use)."""
        if self._factors is not None:
            return self._factors
        n = len(self.sequences)
        picks = torch.linspace(0, n - 1, min(n, NORM_SAMPLE_SEQUENCES)).round().long().unique().tolist()
        sample = [self.sequences[i] for i in picks]
        return estimate_norm_factors(self._harvest(sample), self.d_model).float()

    @property
    def harvest(self) -> HarvestBatch:
        raise AttributeError("streamed activations are not held in memory (the sample is over MEMORY_LIMIT_BYTES): "
                             "use n_tokens, chunks() or select() instead of .harvest")  # fmt: skip

    def _harvest(self, sequences: Sequence[Sequence[int]]) -> Iterator[HarvestBatch]:
        p = self.pair
        return harvest(p.base, p.chat, sequences, p.layer, batch_size=self.model_batch_size,
                       exclude_token_ids=self.exclude_token_ids, progress=self.progress)  # fmt: skip

    def batches(self, batch_size: int, *, seed: int = 0) -> ActivationBuffer:
        """Shuffled normalised batches from a refreshing buffer, new epochs over the sample as training asks; the
        buffer carries the factors into the crosscoder config and is resumable like the in-memory batches."""
        p = self.pair
        return ActivationBuffer(p.base, p.chat, self.sequences, p.layer, batch_size=batch_size,
                                buffer_tokens=buffer_tokens_for(batch_size, self.d_model, self.limit_bytes),
                                model_batch_size=self.model_batch_size, norm_factors=self.norm_factors,
                                on_exhausted="new_epoch", seed=seed,
                                exclude_token_ids=self.exclude_token_ids)  # fmt: skip

    def chunks(self, chunk_size: int | None = None) -> Iterator[HarvestBatch]:
        """One pass over the sample in order, normalised, one model batch at a time (``chunk_size`` is ignored: a
        chunk is what one forward pass keeps). Each call runs the forward passes again."""
        factors = self.norm_factors
        for h in self._harvest(self.sequences):
            yield _normalise(h, factors)

    def select(self, keep: Callable[[HarvestBatch], Bool[Tensor, " n"]]) -> PairActivations:
        """One pass keeping, in memory, the rows for which ``keep`` (given each raw model batch) is true, with the
        same factors (e.g. the colour tokens of the colour toy: one row per prefix).

        Raises:
            ValueError: no row was kept.
        """
        parts = []
        for h in self._harvest(self.sequences):
            mask = keep(h)
            parts.append(HarvestBatch(h.acts[mask.to(h.acts.device)],
                                      *(getattr(h, f)[mask.cpu()] for f in HarvestBatch._fields[1:])))  # fmt: skip
        kept = HarvestBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in HarvestBatch._fields))
        if kept.acts.shape[0] == 0:
            raise ValueError(f"select kept no row of the {len(self.sequences)} streamed sequences")
        return PairActivations(kept, self.norm_factors)


Activations = PairActivations | StreamedActivations
"""What :func:`collect_activations` returns; both kinds have ``in_memory``, ``n_tokens``, ``d_model``,
``norm_factors``, ``batches``, ``chunks`` and ``select``."""


def _harvest_in_memory(pair: ModelPair, sequences: Sequence[Sequence[int]], n_tokens: int,
                       **kwargs: Any) -> HarvestBatch:  # fmt: skip
    """Harvest into tensors preallocated for ``n_tokens`` rows (no list of parts concatenated into a second copy)."""
    out: list[Tensor] | None = None
    got = 0
    for h in harvest(pair.base, pair.chat, sequences, pair.layer, **kwargs):
        if out is None:
            out = [torch.empty((n_tokens, *getattr(h, f).shape[1:]), dtype=getattr(h, f).dtype,
                               device=getattr(h, f).device) for f in HarvestBatch._fields]  # fmt: skip
        n = h.acts.shape[0]
        if got + n > n_tokens:
            raise ValueError(f"the harvest kept more than the {n_tokens} tokens counted from the token ids")
        for dst, f in zip(out, HarvestBatch._fields, strict=True):
            dst[got : got + n] = getattr(h, f)
        got += n
    if out is None or got != n_tokens:
        raise ValueError(f"the harvest kept {got} tokens where {n_tokens} were counted from the token ids")
    return HarvestBatch(*out)


def collect_activations(
    pair: ModelPair,
    sequences: Sequence[Sequence[int]],
    *,
    exclude_token_ids: Sequence[int] = (),
    batch_size: int = 16,
    norm_factors: torch.Tensor | None = None,
    progress: bool | None = None,
    in_memory: bool | None = None,
    train_batch_size: int = 4096,
    limit_bytes: int | None = None,
) -> Activations:
    """Activations of ``pair`` at ``pair.layer`` on ``sequences`` (BOS and padding dropped), in memory or streamed.

    Args:
        pair: the model pair.
        sequences: token ids, BOS first.
        exclude_token_ids: token ids dropped as well (e.g. chat-template tokens).
        batch_size: sequences per forward pass.
        norm_factors: the factors a crosscoder was trained with, to analyse new data in the same units (default: an
            estimate on these tokens; on an evenly spaced sample of them when streamed).
        progress: tqdm bar while harvesting (``None``: only for a streamed sample, whose passes are long).
        in_memory: ``None`` (default) applies :func:`plan_collect`; ``True`` always holds the harvest (e.g. for
            top-k contexts that index rows), ``False`` always streams.
        train_batch_size: the training batch size the plan sizes a streamed buffer for.
        limit_bytes: the plan's bound (default :data:`MEMORY_LIMIT_BYTES`).

    Returns:
        :class:`PairActivations` (in memory) or :class:`StreamedActivations`.
    """
    if len(sequences) == 0:
        raise ValueError("empty dataset: no sequences to harvest")
    limit_bytes = MEMORY_LIMIT_BYTES if limit_bytes is None else limit_bytes
    n_tokens = None  # counted only when needed: a streamed sample named as such may be long (paper: 256M tokens)
    if in_memory is not False:
        n_tokens = count_kept_tokens(sequences, bos_id=pair.tokenizer.bos_token_id,
                                     exclude_token_ids=exclude_token_ids)  # fmt: skip
    if in_memory is None:
        in_memory = plan_collect(n_tokens, pair.d_model, batch_size=train_batch_size, limit_bytes=limit_bytes).in_memory
    if not in_memory:
        return StreamedActivations(pair, sequences, exclude_token_ids=exclude_token_ids, model_batch_size=batch_size,
                                   norm_factors=norm_factors, n_tokens=n_tokens, limit_bytes=limit_bytes,
                                   progress=progress is not False)  # fmt: skip
    h = _harvest_in_memory(pair, sequences, n_tokens, batch_size=batch_size, exclude_token_ids=exclude_token_ids,
                           progress=bool(progress))  # fmt: skip
    factors = norm_factors if norm_factors is not None else estimate_norm_factors(h, pair.d_model)
    return PairActivations(h, torch.as_tensor(factors, dtype=torch.float32))


def training_data(
    pair: ModelPair,
    sequences: Sequence[Sequence[int]],
    *,
    batch_size: int,
    model_batch_size: int = 32,
    exclude_token_ids: Sequence[int] = (),
    in_memory: bool | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Callable[[], Iterator[Tensor]]:
    """A lazy ``make_data()`` for :func:`tiedlib.training.train_or_load` (nothing is harvested until it is called, so
    loading a finished run costs no forward passes). Batches are normalised; their ``norm_factors`` go into the
    crosscoder config.

    ``in_memory``: ``True`` harvests once and serves shuffled normalised rows (:class:`InMemoryBatches`, epochs
    repeat); ``False`` streams them through an :class:`ActivationBuffer` that harvests fresh tokens on every refill
    (paper scale); ``None`` decides by :func:`plan_collect`. Later calls reuse the first call's activations.
    """
    cache: dict[str, Activations] = {}

    def make_data() -> Iterator[Tensor]:
        if "acts" not in cache:
            cache["acts"] = collect_activations(pair, sequences, exclude_token_ids=exclude_token_ids,
                                                batch_size=model_batch_size, progress=progress, in_memory=in_memory,
                                                train_batch_size=batch_size)  # fmt: skip
        return cache["acts"].batches(batch_size, seed=seed)

    return make_data
