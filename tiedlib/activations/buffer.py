"""A refreshing, shuffling buffer of paired, normalised activations, with exact resume and bounded memory.

Every refill reads *fresh* sequences from where the previous one stopped (a token-level read pointer), so
no activation is served twice within an epoch. The public crosscoder buffer sliced
``tokens[ptr : min(ptr + model_batch, num_batches)]``, which is empty once the pointer passes
``num_batches``: it silently served the same ~524k activations for the whole run (REFERENCE.md,
"Known defects"). ``tests/activations/test_buffer.py`` counts distinct token positions to prove this one does not.

Memory: the activation store is allocated once, ``(buffer_tokens, 2, d_model)`` in ``dtype`` (float32 or
bfloat16) on ``buffer_device`` (CPU, pinned when CUDA is available, or the GPU), and every refill writes each
harvested model batch straight into it, already normalised. Shuffling permutes *indices*: a served batch gathers
its ``batch_size`` rows and is returned as float32 on ``device``. A refill therefore needs the store plus one
model batch of activations, never a concatenated, permuted or scaled copy of the whole buffer.

Exact resume: a refill is a transaction. It reads from a copy of the read pointer and generator state and
commits them only once the new fill is complete, so an interrupt anywhere inside it (Ctrl-C, SIGTERM, an
exception in a forward pass) leaves :meth:`ActivationBuffer.state_dict` describing the last *complete* fill and
how many of its batches were served; a resumed buffer, or this one called again, redoes the interrupted refill.

When the data runs out the buffer either raises :class:`DataExhaustedError` (``on_exhausted="stop"``, the
default: a trainer asking for more tokens than exist is a configuration error and should fail loudly rather
than end quietly, and a plain ``StopIteration`` escaping a training loop is easy to misread) or starts a new
epoch over the same sequences with a warning (``on_exhausted="new_epoch"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tiedlib.activations.batches import DataExhaustedError  # one error type for every data source
from tiedlib.activations.harvest import _harvest_batch, _make_spec, as_ids, estimate_norm_factors, harvest, model_device

_META_BYTES = 3 * 8 + 8  # per token: [epoch, doc, position] int64 plus one int64 of the shuffling permutation
_STORE_DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class _Pointer:
    """Where a fill starts reading: sequence index, kept tokens of it already served, epoch, tokens read in that
    epoch, the shuffling generator's state and the tokens served before this fill."""

    seq: int
    skip: int
    epoch: int
    epoch_tokens: int
    rng_state: Tensor
    tokens_consumed: int


@dataclass(frozen=True)
class _Cursor:
    """The buffer's whole position, replaced in one assignment so that an interrupt never leaves it half updated."""

    start: _Pointer
    """Where the current fill began reading."""
    end: _Pointer | None
    """Where the next fill reads (``None``: unknown until the current fill is rebuilt after a resume)."""
    served: int
    """Batches served from the current fill."""
    n_rows: int
    """Rows of the current fill, a multiple of ``batch_size`` (``-1``: unknown until it is rebuilt)."""
    in_store: bool
    """Whether the store holds the current fill (not before the first fill, after a resume or during a refill)."""


class ActivationBuffer:
    """Iterator of shuffled, normalised ``(batch_size, 2, d_model)`` float32 activation batches.

    Each fill harvests about ``buffer_tokens`` fresh tokens (a multiple of ``batch_size``) into the preallocated
    store, shuffles their order with a seeded generator and serves them batch by batch; the next fill continues
    from the exact token where this one stopped (a partly consumed sequence is re-run and its already served tokens
    skipped).

    Args:
        base, chat: nnsight-wrapped causal LMs sharing one tokenizer.
        sequences: token-id sequences with ``len`` and indexing (lists, a 2-D tensor, a ``datasets.Dataset``
            with an ``input_ids`` column, :class:`tiedlib.pairs.corpora.TokenSequences`).
        layer: decoder layer whose input is read.
        batch_size: tokens per served batch.
        buffer_tokens: tokens per fill (rounded down to a multiple of ``batch_size``, at least one batch).
        model_batch_size: sequences per forward pass.
        norm_factors: ``(2,)`` factors; if ``None`` they are estimated (BOS and padding excluded) from the
            first ``norm_sample_sequences`` sequences. This sample is not counted as consumed.
        on_exhausted: ``"stop"`` (raise :class:`DataExhaustedError`) or ``"new_epoch"`` (warn and start over).
        seed: seed of the shuffling generator.
        exclude_token_ids: token ids never served (e.g. chat-template tokens).
        device: where served batches live (default: the base model's device).
        norm_sample_sequences: sequences used to estimate ``norm_factors``.
        progress: tqdm bar while estimating the factors.
        dtype: storage dtype of the buffer, ``torch.float32`` (default) or ``torch.bfloat16`` (half the memory;
            rows are rounded once when stored). Served batches are float32 either way.
        buffer_device: where the store lives (default: ``device``). A CPU store is pinned when CUDA is
            available, so batches copy to the GPU without a staging copy.

    Attributes:
        tokens_consumed: tokens served so far (all epochs).
        last_positions: ``(batch_size, 3)`` long tensor ``[epoch, doc_index, position]`` of the tokens in the
            last served batch (CPU), to audit which token positions were consumed.
        norm_factors: the ``(2,)`` factors applied to every served batch.
        nbytes: bytes the buffer holds (see :meth:`bytes_needed`).
    """

    def __init__(
        self,
        base: Any,
        chat: Any,
        sequences: Sequence[Sequence[int]],
        layer: int,
        *,
        batch_size: int,
        buffer_tokens: int,
        model_batch_size: int,
        norm_factors: Float[Tensor, " n_models"] | None = None,
        on_exhausted: Literal["stop", "new_epoch"] = "stop",
        seed: int = 0,
        exclude_token_ids: Iterable[int] = (),
        device: str | torch.device | None = None,
        norm_sample_sequences: int = 256,
        progress: bool = False,
        dtype: torch.dtype = torch.float32,
        buffer_device: str | torch.device | None = None,
    ) -> None:
        if len(sequences) == 0:
            raise ValueError("empty dataset: no sequences to fill the activation buffer from")
        if on_exhausted not in ("stop", "new_epoch"):
            raise ValueError(f"on_exhausted must be 'stop' or 'new_epoch', got {on_exhausted!r}")
        if min(batch_size, buffer_tokens, model_batch_size) <= 0:
            raise ValueError("batch_size, buffer_tokens and model_batch_size must be positive")
        if dtype not in _STORE_DTYPES:
            raise ValueError(f"buffer dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.base, self.chat, self.sequences, self.layer = base, chat, sequences, layer
        self.batch_size, self.model_batch_size = batch_size, model_batch_size
        self.buffer_tokens = max(batch_size, buffer_tokens // batch_size * batch_size)
        self.on_exhausted = on_exhausted
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else model_device(base)
        self.buffer_device = torch.device(buffer_device) if buffer_device is not None else self.device
        exclude = tuple(exclude_token_ids)
        self._spec = _make_spec(base, chat, layer, drop_bos=True, exclude_token_ids=exclude, pad_id=None)
        if norm_factors is None:
            sample = [sequences[i] for i in range(min(norm_sample_sequences, len(sequences)))]
            norm_factors = estimate_norm_factors(
                harvest(base, chat, sample, layer, batch_size=model_batch_size, exclude_token_ids=exclude,
                        progress=progress),
                self._spec.d_model,
            )  # fmt: skip
        self.norm_factors = torch.as_tensor(norm_factors, dtype=torch.float32).reshape(2).cpu()

        # Allocated once; refills write into it in place.
        d_model = self._spec.d_model
        pin = self.buffer_device.type == "cpu" and torch.cuda.is_available()
        self._store = torch.empty(self.buffer_tokens, 2, d_model, dtype=dtype, device=self.buffer_device,
                                  pin_memory=pin)  # fmt: skip
        # A pinned CPU store gathers each batch into pinned memory too, so that its copy to the GPU is direct.
        self._staging = torch.empty(batch_size, 2, d_model, dtype=dtype, pin_memory=True) if pin else None
        self._meta = torch.empty(self.buffer_tokens, 3, dtype=torch.long)
        self._perm = torch.empty(0, dtype=torch.long)  # order of the current fill's rows (CPU) ...
        self._perm_store = self._perm  # ... and the same on the store's device
        first = _Pointer(0, 0, 0, 0, torch.Generator().manual_seed(seed).get_state(), 0)
        self._cursor = _Cursor(start=first, end=first, served=0, n_rows=0, in_store=False)
        self.last_positions: Int[Tensor, "batch 3"] = torch.empty(0, 3, dtype=torch.long)

    # ------------------------------------------------------------------------------------------------
    @staticmethod
    def bytes_needed(buffer_tokens: int, d_model: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes an :class:`ActivationBuffer` of ``buffer_tokens`` tokens holds.

        That is the ``(buffer_tokens, 2, d_model)`` activation store in ``dtype`` (on ``buffer_device``) plus 32
        bytes a token of positions and shuffling order (on the CPU). A refill adds one model batch of float32
        activations on top of it, and serving adds one ``(batch_size, 2, d_model)`` batch.

        Raises:
            ValueError: ``dtype`` is neither float32 nor bfloat16.
        """
        if dtype not in _STORE_DTYPES:
            raise ValueError(f"buffer dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        return buffer_tokens * (2 * d_model * dtype.itemsize + _META_BYTES)

    @property
    def nbytes(self) -> int:
        """Bytes this buffer holds (:meth:`bytes_needed` of its rounded ``buffer_tokens``)."""
        return self.bytes_needed(self.buffer_tokens, self._spec.d_model, self.dtype)

    @property
    def tokens_consumed(self) -> int:
        c = self._cursor
        return c.start.tokens_consumed + c.served * self.batch_size

    def _fill(self, start: _Pointer, served: int, expect_rows: int = -1) -> None:
        """Harvest ``buffer_tokens`` fresh tokens from ``start`` into the store (normalised) and shuffle their order.

        The cursor moves to this fill (with ``served`` batches already served) only once it is complete; until then
        it still describes the previous fill, so an interrupt or an error leaves a resumable state. A rebuilt fill
        must have the ``expect_rows`` rows it had when saved (``-1``: not checked).
        """
        n, need, got = len(self.sequences), self.buffer_tokens, 0
        seq, skip, epoch, epoch_tokens = start.seq, start.skip, start.epoch, start.epoch_tokens
        self._cursor = replace(self._cursor, in_store=False)  # the store is overwritten from here on
        factors = self.norm_factors.to(self.device)[None, :, None]
        while got < need:
            if seq >= n:
                if self.on_exhausted == "stop":
                    break
                if epoch_tokens == 0:
                    raise ValueError("every sequence yields zero kept tokens: nothing to train on")
                epoch, seq, skip, epoch_tokens = epoch + 1, 0, 0, 0
                warnings.warn(f"ActivationBuffer: all {n} sequences consumed; starting epoch {epoch} (activations "
                              f"are now reused)", stacklevel=3)  # fmt: skip
            first, stop = seq, min(seq + self.model_batch_size, n)
            hb = _harvest_batch(self.base, self.chat, [as_ids(self.sequences[i]) for i in range(first, stop)],
                                self._spec, self.device)  # fmt: skip
            # Output is ordered by sequence then position, so the first `skip` rows are exactly the tokens of
            # sequence `first` that an earlier fill already served.
            take = min(need - got, hb.acts.shape[0] - skip)
            rows, doc = slice(skip, skip + take), hb.doc_index + first
            if skip + take < hb.acts.shape[0]:
                nxt = int(doc[skip + take])
                skip, seq = int((doc[rows] == nxt).sum()) + (skip if nxt == first else 0), nxt
            else:
                seq, skip = stop, 0
            # Normalised one model batch at a time and written in place (copy_ casts to the store's dtype).
            self._store[got : got + take].copy_(hb.acts[rows] * factors)
            self._meta[got : got + take, 0] = epoch
            self._meta[got : got + take, 1] = doc[rows]
            self._meta[got : got + take, 2] = hb.position[rows]
            got, epoch_tokens = got + take, epoch_tokens + take
        n_rows = got // self.batch_size * self.batch_size
        if got > n_rows:
            warnings.warn(f"ActivationBuffer: the data ran out; the last {got - n_rows} tokens (less than one "
                          f"batch) are dropped", stacklevel=3)  # fmt: skip
        if n_rows == 0:
            raise DataExhaustedError(
                f"ActivationBuffer: all {n} sequences consumed after {start.tokens_consumed} tokens "
                f"(on_exhausted='stop'); request fewer tokens or pass on_exhausted='new_epoch'"
            )
        if expect_rows >= 0 and n_rows != expect_rows:
            raise ValueError(f"rebuilding the fill of a saved buffer state gave {n_rows} rows where the saved run "
                             f"had {expect_rows}: the sequences, models or excluded tokens differ")  # fmt: skip
        gen = torch.Generator()
        gen.set_state(start.rng_state)
        perm = torch.randperm(got, generator=gen)[:n_rows]
        self._perm, self._perm_store = perm, perm.to(self.buffer_device)
        end = _Pointer(seq, skip, epoch, epoch_tokens, gen.get_state(), start.tokens_consumed + n_rows)
        self._cursor = _Cursor(start=start, end=end, served=served, n_rows=n_rows, in_store=True)  # commit

    def __iter__(self) -> ActivationBuffer:
        return self

    def __next__(self) -> Float[Tensor, "batch n_models d_model"]:
        """The next shuffled, normalised ``(batch_size, 2, d_model)`` float32 batch on ``device``.

        Raises:
            DataExhaustedError: ``on_exhausted="stop"`` and no full batch of fresh tokens is left.
        """
        c = self._cursor
        # A loop, not an if: a state saved right after a fill's last batch resumes into a spent fill.
        while not (c.in_store and (c.served + 1) * self.batch_size <= c.n_rows):
            if c.end is not None and 0 <= c.n_rows < (c.served + 1) * self.batch_size:
                self._fill(c.end, served=0)  # the current fill is spent: read on
            else:
                self._fill(c.start, served=c.served, expect_rows=c.n_rows)  # rebuild the fill of a saved state
            c = self._cursor
        sl = slice(c.served * self.batch_size, (c.served + 1) * self.batch_size)
        if self._staging is not None:
            batch = torch.index_select(self._store, 0, self._perm_store[sl], out=self._staging)
        else:
            batch = self._store[self._perm_store[sl]]
        batch = batch.to(self.device).float()  # bf16 crosses to the GPU at half the bytes, then widens
        self.last_positions = self._meta[self._perm[sl]]
        self._cursor = replace(c, served=c.served + 1)
        return batch

    # ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Resumable state: the read pointer and generator state at the start of the current fill, the number of
        batches served from it and, once known, where the next fill reads (the contents are recomputed on load,
        not stored; a fill that was spent when saving is not recomputed).

        Returns:
            A dict of tensors, ints and strings, loadable with ``torch.load(..., weights_only=True)``.
        """
        c = self._cursor
        state = {
            **_pointer_dict(c.start, "fill_"),
            "served_in_fill": c.served,
            "fill_rows": c.n_rows,
            "norm_factors": self.norm_factors.clone(),
            "batch_size": self.batch_size,
            "buffer_tokens": self.buffer_tokens,
            "n_sequences": len(self.sequences),
            "on_exhausted": self.on_exhausted,
        }
        if c.end is not None:
            state.update(_pointer_dict(c.end, "next_"))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next batches equal those of an uninterrupted run.

        Raises:
            ValueError: the state was saved with another ``batch_size``, ``buffer_tokens`` or dataset length.
        """
        for key, mine in (("batch_size", self.batch_size), ("buffer_tokens", self.buffer_tokens),
                          ("n_sequences", len(self.sequences))):  # fmt: skip
            if int(state[key]) != mine:
                raise ValueError(f"buffer state has {key}={state[key]}, this buffer has {mine}")
        self.norm_factors = state["norm_factors"].clone().float().cpu()
        start = _pointer_from(state, "fill_")
        end = _pointer_from(state, "next_") if "next_seq" in state else None
        self._cursor = _Cursor(start=start, end=end, served=int(state["served_in_fill"]),
                               n_rows=int(state.get("fill_rows", -1)), in_store=False)  # fmt: skip


def _pointer_dict(p: _Pointer, prefix: str) -> dict[str, Any]:
    out = {f"{prefix}{k}": int(getattr(p, k)) for k in ("seq", "skip", "epoch", "epoch_tokens")}
    # Key names of the first stored format, kept so that older checkpoints still load.
    key_rng, key_tokens = (("rng_state", "tokens_consumed_at_fill") if prefix == "fill_"
                           else (f"{prefix}rng_state", f"{prefix}tokens_consumed"))  # fmt: skip
    return out | {key_rng: p.rng_state.clone(), key_tokens: int(p.tokens_consumed)}


def _pointer_from(state: dict[str, Any], prefix: str) -> _Pointer:
    key_rng, key_tokens = (("rng_state", "tokens_consumed_at_fill") if prefix == "fill_"
                           else (f"{prefix}rng_state", f"{prefix}tokens_consumed"))  # fmt: skip
    return _Pointer(
        seq=int(state[f"{prefix}seq"]),
        skip=int(state[f"{prefix}skip"]),
        epoch=int(state[f"{prefix}epoch"]),
        # Unknown in the first format; only used to detect an epoch of zero kept tokens, which it was not.
        epoch_tokens=int(state.get(f"{prefix}epoch_tokens", 1)),
        rng_state=state[key_rng].clone(),
        tokens_consumed=int(state[key_tokens]),
    )
