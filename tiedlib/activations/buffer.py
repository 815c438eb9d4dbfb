"""A refreshing, shuffling buffer of paired, normalised activations, with exact resume.

Every refill reads *fresh* sequences from where the previous one stopped (a token-level read pointer), so
no activation is served twice within an epoch. The public crosscoder buffer sliced
``tokens[ptr : min(ptr + model_batch, num_batches)]``, which is empty once the pointer passes
``num_batches``: it silently served the same ~524k activations for the whole run (REFERENCE.md,
"Known defects"). ``tests/test_buffer.py`` counts distinct token positions to prove this one does not.

When the data runs out the buffer either raises :class:`DataExhaustedError` (``on_exhausted="stop"``, the
default: a trainer asking for more tokens than exist is a configuration error and should fail loudly rather
than end quietly, and a plain ``StopIteration`` escaping a training loop is easy to misread) or starts a new
epoch over the same sequences with a warning (``on_exhausted="new_epoch"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tiedlib.activations.batches import DataExhaustedError  # one error type for every data source
from tiedlib.activations.harvest import _as_ids, _harvest_batch, _make_spec, estimate_norm_factors, harvest


class ActivationBuffer:
    """Iterator of shuffled, normalised ``(batch_size, 2, d_model)`` float32 activation batches.

    Each fill harvests about ``buffer_tokens`` fresh tokens (a multiple of ``batch_size``), shuffles them with
    a seeded generator and serves them batch by batch; the next fill continues from the exact token where
    this one stopped (a partly consumed sequence is re-run and its already served tokens skipped).

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
        device: where the buffer and served batches live (default: the models' device).
        norm_sample_sequences: sequences used to estimate ``norm_factors``.
        progress: tqdm bar while estimating the factors.

    Attributes:
        tokens_consumed: tokens served so far (all epochs).
        last_positions: ``(batch_size, 3)`` long tensor ``[epoch, doc_index, position]`` of the tokens in the
            last served batch (CPU), to audit which token positions were consumed.
        norm_factors: the ``(2,)`` factors applied to every served batch.
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
    ) -> None:
        if len(sequences) == 0:
            raise ValueError("empty dataset: no sequences to fill the activation buffer from")
        if on_exhausted not in ("stop", "new_epoch"):
            raise ValueError(f"on_exhausted must be 'stop' or 'new_epoch', got {on_exhausted!r}")
        if min(batch_size, buffer_tokens, model_batch_size) <= 0:
            raise ValueError("batch_size, buffer_tokens and model_batch_size must be positive")
        self.base, self.chat, self.sequences, self.layer = base, chat, sequences, layer
        self.batch_size, self.model_batch_size = batch_size, model_batch_size
        self.buffer_tokens = max(batch_size, buffer_tokens // batch_size * batch_size)
        self.on_exhausted = on_exhausted
        self.device = device
        exclude = tuple(exclude_token_ids)
        self._spec = _make_spec(base, chat, layer, drop_bos=True, exclude_token_ids=exclude, pad_id=None)
        if norm_factors is None:
            sample = [sequences[i] for i in range(min(norm_sample_sequences, len(sequences)))]
            norm_factors = estimate_norm_factors(
                harvest(base, chat, sample, layer, batch_size=model_batch_size, exclude_token_ids=exclude,
                        progress=progress, device=device),
                self._spec.d_model,
            )  # fmt: skip
        self.norm_factors = torch.as_tensor(norm_factors, dtype=torch.float32).reshape(2)

        self._generator = torch.Generator().manual_seed(seed)
        # Read pointer for the next fill: (sequence index, kept tokens of that sequence already served), epoch.
        self._seq, self._skip, self._epoch = 0, 0, 0
        self.tokens_consumed = 0
        self._acts: Tensor | None = None
        self._meta: Tensor | None = None
        self._served = 0  # batches served from the current fill
        self._pending_skip = 0  # batches to skip after the next fill (set by load_state_dict)
        self._epoch_tokens = 0  # tokens read in this epoch: an epoch of zero kept tokens would loop forever
        self._fill_start: dict[str, Any] = self._pointer_state()
        self.last_positions: Int[Tensor, "batch 3"] = torch.empty(0, 3, dtype=torch.long)

    # ------------------------------------------------------------------------------------------------
    def _pointer_state(self) -> dict[str, Any]:
        return {
            "seq": self._seq,
            "skip": self._skip,
            "epoch": self._epoch,
            "rng_state": self._generator.get_state(),
            "tokens_consumed": self.tokens_consumed,
        }

    def _new_epoch_or_stop(self) -> bool:
        """At the end of the data: start a new epoch (True) or report exhaustion (False)."""
        if self.on_exhausted == "stop":
            return False
        if self._epoch_tokens == 0:
            raise ValueError("every sequence yields zero kept tokens: nothing to train on")
        self._epoch += 1
        self._seq, self._skip, self._epoch_tokens = 0, 0, 0
        warnings.warn(
            f"ActivationBuffer: all {len(self.sequences)} sequences consumed; starting epoch {self._epoch} "
            f"(activations are now reused)",
            stacklevel=3,
        )
        return True

    def _fill(self) -> None:
        """Harvest the next ``buffer_tokens`` fresh tokens, normalise and shuffle them."""
        self._fill_start = self._pointer_state()
        n = len(self.sequences)
        need, got = self.buffer_tokens, 0
        acts, meta = [], []
        while got < need:
            if self._seq >= n and not self._new_epoch_or_stop():
                break
            start, stop = self._seq, min(self._seq + self.model_batch_size, n)
            seqs = [_as_ids(self.sequences[i]) for i in range(start, stop)]
            hb = _harvest_batch(self.base, self.chat, seqs, self._spec, self.device)
            doc = hb.doc_index + start
            # Output is ordered by sequence then position, so the first `skip` rows are exactly the tokens of
            # sequence `start` that the previous fill already served.
            sl = slice(self._skip, None)
            a, d, p = hb.acts[sl], doc[sl], hb.position[sl]
            take = min(need - got, a.shape[0])
            if take < a.shape[0]:
                nxt = int(d[take])
                self._skip = int((d[:take] == nxt).sum()) + (self._skip if nxt == start else 0)
                self._seq = nxt
            else:
                self._seq, self._skip = stop, 0
            acts.append(a[:take])
            meta.append(torch.stack([torch.full_like(d[:take], self._epoch), d[:take], p[:take]], dim=1))
            got += take
            self._epoch_tokens += take
        n_batches = got // self.batch_size
        if got % self.batch_size:
            warnings.warn(
                f"ActivationBuffer: the data ran out; the last {got % self.batch_size} tokens (less than one "
                f"batch) are dropped",
                stacklevel=3,
            )
        if n_batches == 0:
            self._acts = self._meta = None
            raise DataExhaustedError(
                f"ActivationBuffer: all {n} sequences consumed after {self.tokens_consumed} tokens "
                f"(on_exhausted='stop'); request fewer tokens or pass on_exhausted='new_epoch'"
            )
        all_acts = torch.cat(acts)
        factors = self.norm_factors.to(all_acts.device)
        perm = torch.randperm(all_acts.shape[0], generator=self._generator)[: n_batches * self.batch_size]
        self._acts = all_acts[perm.to(all_acts.device)] * factors[None, :, None]
        self._meta = torch.cat(meta)[perm]
        self._served = 0

    def __iter__(self) -> ActivationBuffer:
        return self

    def __next__(self) -> Float[Tensor, "batch n_models d_model"]:
        """The next shuffled, normalised ``(batch_size, 2, d_model)`` batch.

        Raises:
            DataExhaustedError: ``on_exhausted="stop"`` and no full batch of fresh tokens is left.
        """
        # A loop, not an if: a state saved right after a fill's last batch resumes into a spent fill.
        while self._acts is None or (self._served + 1) * self.batch_size > self._acts.shape[0]:
            self._fill()
            self._served, self._pending_skip = self._pending_skip, 0
        assert self._acts is not None and self._meta is not None
        sl = slice(self._served * self.batch_size, (self._served + 1) * self.batch_size)
        self._served += 1
        self.tokens_consumed += self.batch_size
        self.last_positions = self._meta[sl]
        return self._acts[sl]

    # ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Resumable state: the read pointer and generator state at the start of the current fill, and the
        number of batches served from it (the buffer contents are recomputed on load, not stored).

        Returns:
            A dict of tensors, ints and strings, loadable with ``torch.load(..., weights_only=True)``.
        """
        start = self._fill_start
        served = self._served if self._acts is not None else self._pending_skip
        return {
            "fill_seq": int(start["seq"]),
            "fill_skip": int(start["skip"]),
            "fill_epoch": int(start["epoch"]),
            "rng_state": start["rng_state"].clone(),
            "tokens_consumed_at_fill": int(start["tokens_consumed"]),
            "served_in_fill": int(served),
            "norm_factors": self.norm_factors.clone(),
            "batch_size": self.batch_size,
            "buffer_tokens": self.buffer_tokens,
            "n_sequences": len(self.sequences),
            "on_exhausted": self.on_exhausted,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next batches equal those of an uninterrupted run.

        Raises:
            ValueError: the state was saved with another ``batch_size``, ``buffer_tokens`` or dataset length.
        """
        for key, mine in (("batch_size", self.batch_size), ("buffer_tokens", self.buffer_tokens),
                          ("n_sequences", len(self.sequences))):  # fmt: skip
            if int(state[key]) != mine:
                raise ValueError(f"buffer state has {key}={state[key]}, this buffer has {mine}")
        self._seq, self._skip, self._epoch = state["fill_seq"], state["fill_skip"], state["fill_epoch"]
        self._generator.set_state(state["rng_state"])
        self.norm_factors = state["norm_factors"].clone().float()
        self._pending_skip = int(state["served_in_fill"])
        self.tokens_consumed = int(state["tokens_consumed_at_fill"]) + self._pending_skip * self.batch_size
        self._acts = self._meta = None
        self._served = 0
        self._epoch_tokens = 1  # unknown after a resume; the epoch was not empty if it was saved mid-way
        self._fill_start = self._pointer_state()
        self._fill_start["tokens_consumed"] = int(state["tokens_consumed_at_fill"])
