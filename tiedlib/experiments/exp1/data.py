"""Experiment 1's data: the training mix (harvested lazily for both crosscoders) and the held-out web/chat samples.

Everything branches on the pair only (lab or not), never on the scale: the lab pairs draw labelled documents from
:mod:`tiedlib.lab`, the paper pair streams the public Pile/LMSys mix (:mod:`tiedlib.pairs`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from tiedlib.activations.collect import PairActivations, collect_activations, training_data
from tiedlib.analysis.contexts import TokenSample, concat_samples, eval_sample
from tiedlib.environment import quiet_notebook_logs
from tiedlib.experiments.exp1.presets import Exp1Settings
from tiedlib.pairs import is_lab, template_ids, training_sequences


def quiet_logs() -> None:
    """Silence what would clutter the book: the in-memory batches' "starting epoch" warning (small scales repeat
    their training rows over several epochs; :meth:`TrainingData.summary` prints how many) and Hugging Face's
    weight-loading progress bars. Process-wide, like the notebook cell it replaces."""
    quiet_notebook_logs()


@dataclass
class TrainingData:
    """The training mix of both crosscoders (the tied one and the standard baseline train on the same data)."""

    pair: Any
    """The :class:`tiedlib.pairs.ModelPair` (only ``name``, ``layer``, ``d_model`` and ``fingerprint`` are read here;
    the crosscoders' run folders record the fingerprint, so they are never loaded for another pair)."""
    settings: Exp1Settings
    sequences: Sequence[Sequence[int]]
    """Token ids of every training sequence, BOS first."""
    make_data: Callable[[], Iterator[Tensor]]
    """Lazy ``make_data()`` for :func:`tiedlib.training.train_or_load`: yields normalised ``(batch, 2, d_model)``
    rows; the activations are harvested on the first call only and shared by every later call."""
    exclude_token_ids: list[int]
    """Token ids dropped from training and analysis (chat-template tokens if the settings ask for it, else none)."""
    activations: Callable[[], PairActivations] | None = None
    """Lab pairs: the harvested training activations (harvested on the first call, shared with ``make_data``), which
    the seed runs reshuffle with their own seeds; None for the paper pair (a refreshing buffer, never all in memory)."""

    @property
    def n_tokens(self) -> int:
        """Training tokens (every sequence's BOS is dropped at harvest time)."""
        return sum(len(s) - 1 for s in self.sequences)

    @property
    def passes(self) -> float:
        """How many times the tied crosscoder's ``n_steps x batch_size`` rows go over the training tokens."""
        if self.n_tokens <= 0:
            raise ValueError(f"no training tokens in {len(self.sequences)} sequence(s) (each needs more than a BOS)")
        return self.settings.n_steps * self.settings.batch_size / self.n_tokens

    def summary(self) -> str:
        """One line: the pair, its layer and width, and the size of the training data."""
        p = self.pair
        return (f"pair {p.name}: layer {p.layer}, d_model {p.d_model}; {len(self.sequences)} training sequences, "
                f"about {self.n_tokens:,} tokens; {self.passes:.1f} passes")  # fmt: skip


def prepare_training(pair: Any, settings: Exp1Settings) -> TrainingData:
    """The training sequences of ``pair`` (``settings.train_docs`` of them, ``settings.web_fraction`` web) and the
    lazy data source both crosscoders train on (in memory for lab pairs, a refreshing buffer for the paper pair)."""
    exclude = template_ids(pair) if settings.exclude_template_tokens else []
    seqs = training_sequences(pair, settings.train_docs, web_fraction=settings.web_fraction, seq_len=settings.seq_len)
    if not is_lab(pair):
        make_data = training_data(pair, seqs, batch_size=settings.batch_size, exclude_token_ids=exclude,
                                  model_batch_size=settings.model_batch_size, in_memory=False)  # fmt: skip
        return TrainingData(pair, settings, seqs, make_data, exclude)
    # In memory: harvested once, on the first call; batches shuffled with seed 0 as training_data(seed=0) serves them.
    activations = functools.cache(functools.partial(collect_activations, pair, seqs, exclude_token_ids=exclude,
                                                    batch_size=settings.model_batch_size, progress=False))  # fmt: skip
    return TrainingData(pair, settings, seqs, lambda: activations().batches(settings.batch_size, seed=0), exclude,
                        activations)  # fmt: skip


@dataclass
class HeldOutSamples:
    """Held-out web (Pile-like) and chat (LMSys-like) samples, and the two together."""

    web: TokenSample
    chat: TokenSample
    mix: TokenSample
    """``web`` then ``chat`` concatenated (named ``"web + chat"``)."""

    @classmethod
    def from_sources(cls, web: TokenSample, chat: TokenSample) -> HeldOutSamples:
        """Both samples plus their concatenation."""
        return cls(web, chat, concat_samples([web, chat], "web + chat"))

    @property
    def by_source(self) -> dict[str, TokenSample]:
        """``{"web": ..., "chat": ...}``: the datasets the contexts and ground-truth tables show side by side."""
        return {"web": self.web, "chat": self.chat}

    @property
    def all(self) -> dict[str, TokenSample]:
        """``{"web", "chat", "web + chat"}``: the columns of the held-out metrics table."""
        return {**self.by_source, "web + chat": self.mix}


def heldout_samples(pair: Any, settings: Exp1Settings, exclude_token_ids: Sequence[int] = ()) -> HeldOutSamples:
    """Harvest ``settings.eval_docs`` held-out documents of each source (web first, then chat)."""
    kw = dict(exclude_token_ids=exclude_token_ids, seq_len=settings.seq_len, model_batch_size=settings.model_batch_size)
    web = eval_sample(pair, "web", settings.eval_docs, **kw)
    chat = eval_sample(pair, "chat", settings.eval_docs, **kw)
    return HeldOutSamples.from_sources(web, chat)
