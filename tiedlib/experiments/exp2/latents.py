"""Crosscoders on two models of the colour toy, and their blue/green latents by exclusivity category.

A *blue/green latent* has both ``" blue"`` and ``" green"`` among the top ``top_k`` positive logit-lens logits of its
decoder vector, read through its own model's unembedding (the write-up's criterion, Experiment 2).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tiedlib.activations.collect import Activations, collect_activations
from tiedlib.analysis.cosines import Categories, exclusivity_categories, max_cosine
from tiedlib.analysis.logit_lens import ColourLatents, colour_latents, logit_lens, top_tokens
from tiedlib.config import BASE, CHAT
from tiedlib.crosscoders.crosscoder import recommended_tied_config
from tiedlib.pairs.colours import ColourToy
from tiedlib.training import TrainConfig, train_crosscoder, train_or_load
from tiedlib.training.cached import EPOCH_WARNINGS

from .presets import Exp2Settings


def collect(toy: ColourToy, base: str, chat: str, sequences: Sequence[Sequence[int]], *,
            train_batch_size: int = 4096) -> Activations:  # fmt: skip
    """Activations of the toy models ``base`` and ``chat`` (e.g. ``"no-swap"``, ``"half-swap"``) on ``sequences``,
    at the source pair's layer, normalised on these tokens.

    Held in memory when they fit :data:`tiedlib.activations.collect.MEMORY_LIMIT_BYTES` (smoke, tiny), streamed
    otherwise (paper: 80k prefixes of Gemma-2-2b; training then reads a bounded buffer sized for
    ``train_batch_size``, and every analysis pass harvests again). A streamed harvest shows a progress bar.
    """
    return collect_activations(toy.pair(base, chat), sequences, progress=None, train_batch_size=train_batch_size)


def acts_report(acts: Activations, n_entries: int, layer: int) -> str:
    """``"<tokens> tokens from <n_entries> entries at layer <layer>"``, plus ``" (streamed)"`` when they are not held
    in memory."""
    return (f"{acts.n_tokens:,} tokens from {n_entries} entries at layer {layer}"
            + ("" if acts.in_memory else " (streamed)"))


ARCHITECTURES = ("standard", "tied", "recommended")
"""What :func:`train` trains: a standard crosscoder, the write-up's tied one (eta ``settings.eta``), or the project's
recommended tied configuration (:func:`tiedlib.crosscoders.crosscoder.recommended_tied`)."""


def train(settings: Exp2Settings, run_dir: str | Path, acts: Activations, architecture: str, *,
          source: str | None = None) -> tuple[Any, list[dict]]:  # fmt: skip
    """Train (or load, when ``run_dir`` holds the finished run) a crosscoder on ``acts`` with the crosscoder settings
    of ``settings``: ``"standard"`` or ``"tied"`` (the write-up's, :func:`tiedlib.training.train_crosscoder`), or
    ``"recommended"``: the write-up's tied crosscoder trained with the written-disagreement penalty at eta
    :data:`~tiedlib.crosscoders.crosscoder.RECOMMENDED_TIED_ETA` (``shared_penalty="written"``, the configuration of
    :func:`~tiedlib.crosscoders.crosscoder.recommended_tied`), with the same data, steps, batch size, learning rate,
    L1 coefficient and seed. ``source``: the fingerprint of the toy pair ``acts`` came from
    (``toy.pair(base, chat).fingerprint``), recorded and checked in ``run_dir``
    (:func:`tiedlib.training.train_or_load`); None checks nothing."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if architecture != "recommended":
        return train_crosscoder(run_dir, acts, architecture=architecture, n_latents=settings.n_latents,
                                n_steps=settings.n_steps, batch_size=settings.batch_size, lr=settings.lr,
                                l1_coeff=settings.l1_coeff, eta=settings.eta, seed=settings.seed,
                                device=settings.device, source=source)  # fmt: skip
    cc_cfg = recommended_tied_config(acts.d_model, settings.n_latents)
    # The same training settings as train_crosscoder gives the other two.
    train_cfg = TrainConfig(n_steps=settings.n_steps, lr=settings.lr, l1_coeff=settings.l1_coeff, seed=settings.seed,
                            device=settings.device, progress=True, log_every=max(1, settings.n_steps // 20))
    with warnings.catch_warnings():
        for message in EPOCH_WARNINGS:  # the data is repeated on purpose (as train_crosscoder does)
            warnings.filterwarnings("ignore", message=message)
        return train_or_load(run_dir, cc_cfg, train_cfg, lambda: acts.batches(settings.batch_size, seed=settings.seed),
                             source=source)


def final_metrics(metrics: Sequence[dict], keys: Sequence[str] = ("explained_variance", "l0"),
                  digits: int = 3) -> dict[str, float]:  # fmt: skip
    """The last logged value of each of ``keys`` present there, rounded to ``digits`` (empty when nothing was
    logged, e.g. for a released checkpoint)."""
    last = metrics[-1] if metrics else {}
    return {k: round(last[k], digits) for k in keys if k in last}


def fit_summary(metrics: Sequence[dict]) -> str:
    """``"explained variance <ev>, L0 <l0>"`` of the last logged step."""
    if not metrics:
        raise ValueError("no metrics logged")
    return f"explained variance {metrics[-1]['explained_variance']:.3f}, L0 {metrics[-1]['l0']:.1f}"


@dataclass
class CategoryColourLatents:
    """Blue/green latents of a standard crosscoder on (``names[0]``, ``names[1]``), by exclusivity category."""

    names: tuple[str, str]
    """The two models in crosscoder order (its "base" and "chat")."""
    r: Float[Tensor, " n_latents"]
    """Relative decoder norms."""
    categories: Categories
    base: ColourLatents
    """Base-exclusive latents ranked through the first model's unembedding (its decoder half)."""
    chat: ColourLatents
    """Chat-exclusive latents ranked through the second model's unembedding."""
    shared: ColourLatents | None
    """Shared latents ranked by their *second*-model decoder half (None unless asked for)."""
    W_dec: Float[Tensor, "n_latents 2 d_model"]
    top_k: int

    def hits(self, which: str) -> list[int]:
        """Blue/green latents (``which``: ``"base"``, ``"chat"`` or ``"shared"``)."""
        found = getattr(self, which)
        if found is None:
            raise ValueError(f"{which!r} colour latents were not computed (pass shared=True)")
        return found.hits(self.top_k).tolist()

    def best(self, which: str) -> int | None:
        """The best-ranked candidate of ``which`` (``"base"`` or ``"chat"``), None when the category is empty."""
        found = getattr(self, which)
        return int(found.indices[0]) if found.indices.numel() else None

    def best_rank(self, which: str) -> int:
        """0-based rank of the worse colour of :meth:`best` (-1 when there is no candidate)."""
        found = getattr(self, which)
        return int(found.worst_rank[0]) if found.indices.numel() else -1

    def best_cosine(self) -> float:
        """Cosine between the base decoder half of the best base-exclusive candidate and the chat decoder half of the
        best chat-exclusive one (NaN when either is missing; write-up: 0.97 on (no-swap, half-swap))."""
        b, c = self.best("base"), self.best("chat")
        if b is None or c is None:
            return float("nan")
        return float(torch.nn.functional.cosine_similarity(self.W_dec[b, BASE], self.W_dec[c, CHAT], dim=0))

    def closest_shared(self) -> tuple[int | None, float]:
        """The shared latent whose chat decoder half is closest (cosine) to the chat half of the best chat-exclusive
        candidate, and that cosine ((None, NaN) when there is no candidate or no shared latent)."""
        c, shared = self.best("chat"), self.categories.shared
        if c is None or not len(shared):
            return None, float("nan")
        found = max_cosine(self.W_dec[[c], CHAT], self.W_dec[shared, CHAT])
        return int(shared[found.indices[0]]), float(found.values[0])

    def partner_is_colour(self) -> bool:
        """Whether the latent of :meth:`closest_shared` is itself a blue/green shared latent (needs
        ``shared=True``)."""
        idx, _ = self.closest_shared()
        return idx is not None and idx in self.hits("shared")

    def category_summary(self) -> str:
        """``"<n> <base>-exclusive, <n> shared, <n> <chat>-exclusive latents"``."""
        cats = self.categories
        return (f"{len(cats.base_exclusive)} {self.names[0]}-exclusive, {len(cats.shared)} shared, "
                f"{len(cats.chat_exclusive)} {self.names[1]}-exclusive latents")

    def hits_summary(self) -> str:
        """The blue/green latents of each category computed."""
        text = (f"blue/green latents: {self.names[0]}-exclusive {self.hits('base')}, {self.names[1]}-exclusive "
                f"{self.hits('chat')}")
        return text + (f", shared {self.hits('shared')}" if self.shared is not None else "")

    def best_summary(self) -> str:
        """The best candidate of each exclusive category, its worse colour's rank, and :meth:`best_cosine`."""
        return (f"best candidates: {self.names[0]}-exclusive {self.best('base')} (worse colour at rank "
                f"{self.best_rank('base')}), {self.names[1]}-exclusive {self.best('chat')} (rank "
                f"{self.best_rank('chat')}); cosine of their decoder vectors {self.best_cosine():.3f}")

    def partner_summary(self) -> str:
        """The best chat-exclusive candidate, its closest shared latent, that cosine, and whether it is blue/green
        (needs the shared latents ranked: ``shared=True``)."""
        idx, cos = self.closest_shared()
        return (f"best {self.names[1]}-exclusive candidate {self.best('chat')}; closest shared latent {idx} at cosine "
                f"{cos:.3f} (a blue/green latent itself: {self.partner_is_colour()})")

    def top_logit_panels(self, W_U: dict[str, Tensor], tokenizer: Any, k: int = 8
                         ) -> list[tuple[str, list[tuple[str, float]]]]:
        """``(title, top-k (token, logit))`` for the best base- and chat-exclusive candidates, each read through its
        own model's unembedding ``W_U[name]`` (input of ``figures.top_logits_panels``); each title says whether the
        latent passes the blue/green test (a best-ranked candidate may fail it)."""
        panels = []
        for which, half, name in (("base", BASE, self.names[0]), ("chat", CHAT, self.names[1])):
            i = self.best(which)
            if i is not None:
                logits = logit_lens(self.W_dec[i, half][None], W_U[name])[0]
                verdict = "passes" if i in self.hits(which) else "fails the blue/green test"
                panels.append((f"{name}-excl. latent {i} ({name} W_U): {verdict}", top_tokens(logits, tokenizer, k)))
        return panels


def colour_latents_by_category(
    crosscoder: Any, W_U: dict[str, Tensor], names: tuple[str, str], colour_ids: dict[str, int], *, top_k: int = 3,
    shared: bool = False,
) -> CategoryColourLatents:
    """Split a standard crosscoder's latents by relative decoder norm (write-up thresholds 0.3 / 0.7) and rank each
    exclusive category for blue/green (:func:`tiedlib.analysis.logit_lens.colour_latents`).

    Args:
        crosscoder: a standard crosscoder trained on (``names[0]``, ``names[1]``).
        W_U: unembedding ``(d_model, vocab)`` per model name (from :func:`.toy.unembeddings`).
        names: the crosscoder's two models, base first.
        colour_ids: ``{"blue": id, "green": id}``.
        top_k: blue/green criterion (both colours among the top ``top_k`` positive logits).
        shared: also rank the shared latents by their second-model decoder half.
    """
    missing = [n for n in names if n not in W_U]
    if missing:
        raise ValueError(f"no unembedding for {missing}; W_U has {sorted(W_U)}")
    r = crosscoder.relative_decoder_norm().detach().cpu()
    cats = exclusivity_categories(r)
    W_dec = crosscoder.W_dec.detach().cpu()
    base = colour_latents(W_dec[:, BASE], W_U[names[0]], colour_ids, cats.base_exclusive)
    chat = colour_latents(W_dec[:, CHAT], W_U[names[1]], colour_ids, cats.chat_exclusive)
    sh = colour_latents(W_dec[:, CHAT], W_U[names[1]], colour_ids, cats.shared) if shared else None
    return CategoryColourLatents(names, r, cats, base, chat, sh, W_dec, top_k)
