"""Section 3 of notebook 05: the colour toy of Experiment 2 (next step 6). Is blue/green one tied triple?

* :func:`finetune_lines`: whether each cached fine-tune of :func:`tiedlib.pairs.colours.build_colour_toy` was loaded
  or trained, and its loss.
* :func:`colour_activations` and :func:`train_colour_crosscoders`: (no-swap, half-swap) activations of the colour
  prefixes, each followed by its true colour token, and the write-up's tied crosscoder and the fix trained on them
  (:class:`ColourRun`).
* :func:`colour_unembeddings` and :func:`find_colour_triples`: each crosscoder's blue/green triple by the logit lens,
  and which of its groups fire on the colour tokens and right before them (:class:`ColourCheck`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from tiedlib.activations.collect import Activations, collect_activations
from tiedlib.analysis.firing import firing_fractions
from tiedlib.analysis.logit_lens import unembedding
from tiedlib.config import TrainConfig
from tiedlib.experiments.exp5.presets import Exp5Settings
from tiedlib.experiments.exp5.tying_lab import (
    activation_data,
    colour_masks,
    colour_triple,
    half_balance,
    triple_firing,
    variant_config,
)
from tiedlib.pairs.colours import SWAP_MODES, ColourToy
from tiedlib.training import train_or_load
from tiedlib.training.cached import EPOCH_WARNINGS

COLOUR_GROUPS = ("shared", "no-swap only", "half-swap only")
"""Group names of a colour crosscoder: its "base" model is the no-swap fine-tune, its "chat" model the half-swap."""


def finetune_lines(toy: ColourToy) -> list[str]:
    """One line per fine-tune: ``"no-swap: loaded from cache, loss 2.345 -> 0.123"`` (first and last logged loss)."""
    out = []
    for mode in SWAP_MODES:
        info = toy.info[mode]
        how = "loaded from cache" if info["cached"] else "fine-tuned"
        out.append(f"{mode}: {how}, loss {info['losses'][0]:.3f} -> {info['losses'][-1]:.3f}")
    return out


def colour_activations(toy: ColourToy, *, train_batch_size: int = 4096) -> tuple[list[list[int]], Activations]:
    """The colour crosscoders' data: :meth:`ColourToy.crosscoder_sequences` (blue set first) and their (no-swap,
    half-swap) activations at the source pair's layer, normalised on themselves.

    Held in memory when they fit :data:`tiedlib.activations.collect.MEMORY_LIMIT_BYTES` (smoke, tiny), streamed
    otherwise (paper: 80k prefixes of Gemma-2-2b; training reads a bounded buffer sized for ``train_batch_size``, and
    :func:`find_colour_triples` keeps only the rows around the colour tokens, in one pass)."""
    seqs = toy.crosscoder_sequences()
    return seqs, collect_activations(toy.pair("no-swap", "half-swap"), seqs, progress=None,
                                     train_batch_size=train_batch_size)  # fmt: skip


def colour_train_config(settings: Exp5Settings) -> TrainConfig:
    """Training settings of each colour crosscoder: ``colour_n_steps`` steps (logged ten times) on ``colour.device``,
    with a progress bar."""
    n_steps = settings.colour_n_steps
    return TrainConfig(n_steps=n_steps, lr=settings.colour_lr, l1_coeff=settings.colour_l1_coeff,
                       seed=settings.colour_seed, device=settings.colour.device, progress=True,
                       log_every=max(1, n_steps // 10))  # fmt: skip


@dataclass
class ColourRun:
    """The two colour crosscoders and the data they were trained on."""

    seqs: list[list[int]]
    """Colour prefixes, each followed by its true colour token."""
    acts: Activations
    """(no-swap, half-swap) activations of ``seqs`` (in memory or streamed)."""
    variants: dict[str, str]
    """Label (``"tied"``, ``"fix"``) -> variant."""
    models: dict[str, Any]
    """Label -> trained crosscoder (eval mode)."""
    train_cfg: TrainConfig
    n_latents: int

    def summary(self) -> str:
        streamed = "" if self.acts.in_memory else " (streamed)"
        return (f"{self.acts.n_tokens:,} tokens from {len(self.seqs)} prefixes{streamed}; {self.train_cfg.n_steps} "
                f"steps, {self.n_latents} triples")


def train_colour_crosscoders(seqs: Sequence[Sequence[int]], acts: Activations, settings: Exp5Settings,
                             results: str | Path, variants: dict[str, str], *,
                             source: str | None = None) -> ColourRun:  # fmt: skip
    """Train (or load) one tied crosscoder per ``variants`` entry (label -> variant, in order) on the normalised
    colour activations, in ``results/colour/<variant>/``, with ``colour_n_latents`` triples and ``colour_eta``.
    ``source``: the fingerprint of the toy pair the activations came from (``toy.pair("no-swap",
    "half-swap").fingerprint``: the fine-tunes' names and their source pair's config), recorded and checked in the
    run folders, so that colour crosscoders of another lab pair (e.g. another ``TIEDLIB_LAB_SEED``) are not loaded."""
    train_cfg = colour_train_config(settings)
    models = {}
    for label, variant in variants.items():
        cfg = variant_config(variant, acts.d_model, settings.colour_n_latents, eta=settings.colour_eta)
        make_data = activation_data(acts, settings.colour_batch_size, seed=settings.colour_seed)
        with warnings.catch_warnings():  # the colour data repeats for as many epochs as training needs
            for message in EPOCH_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            models[label], _ = train_or_load(Path(results) / "colour" / variant, cfg, train_cfg, make_data,
                                             source=source)  # fmt: skip
        models[label].eval()
    return ColourRun(seqs=[list(s) for s in seqs], acts=acts, variants=dict(variants), models=models,
                     train_cfg=train_cfg, n_latents=settings.colour_n_latents)  # fmt: skip


def colour_unembeddings(toy: ColourToy, *, fold_final_norm: bool = True) -> dict[str, Float[Tensor, "d_model vocab"]]:
    """Unembedding of each fine-tune (``"no-swap"``, ``"half-swap"``), final norm folded in by default."""
    return {mode: unembedding(toy.models[mode], fold_final_norm=fold_final_norm) for mode in SWAP_MODES}


@dataclass
class ColourCheck:
    """Each colour crosscoder's blue/green triple and how its groups fire on the colour data."""

    variants: dict[str, str]
    result: dict[str, dict[str, Any]]
    """Label -> :func:`~.tying_lab.colour_triple` plus ``ratio`` (smaller / larger decoder-half norm of the triple)."""
    fire: dict[str, dict[str, list[float]]]
    """Label -> mask name (``"blue token"``, ``"before blue"``, ...) -> firing fraction of (shared, no-swap,
    half-swap) groups of the triple."""

    def title(self, label: str) -> str:
        return f"{label} ({self.variants[label]}): blue/green triple {self.result[label]['triple']}"

    def lines(self) -> list[str]:
        """One line per crosscoder: its triple, colour ranks, half ratio and where blue/green shows up."""
        return [f"{label} ({self.variants[label]}): triple {ct['triple']} (colour ranks: no-swap half "
                f"{ct['rank_base']}, half-swap half {ct['rank_chat']}; decoder half ratio {ct['ratio']:.2f}); "
                f"blue/green on the no-swap half at {ct['hits_base']}, half-swap half at {ct['hits_chat']}, "
                f"both at {ct['both']} -> one tied triple: {ct['single']}" for label, ct in self.result.items()]

    def summary_lines(self) -> list[str]:
        """One line per crosscoder for the notebook's summary (ranks, one tied triple, firing on the colour tokens)."""
        out = []
        for label, ct in self.result.items():
            f = self.fire[label]
            out.append(f"Colour toy, {label} ({self.variants[label]}): blue/green triple {ct['triple']} (colour ranks "
                       f"{ct['rank_base']}/{ct['rank_chat']}), blue/green on both halves at {len(ct['both'])} "
                       f"index(es), one tied triple: {ct['single']}; on blue tokens its shared/no-swap/half-swap "
                       "groups fire " + "/".join(f"{v:.2f}" for v in f["blue token"]) + ", on green tokens "
                       + "/".join(f"{v:.2f}" for v in f["green token"]) + ".")
        return out

    def table(self) -> pd.DataFrame:
        """Rows: mask names; columns: (label, group) pairs; values: firing fractions."""
        return pd.DataFrame({(label, g): {k: v[i] for k, v in f.items()} for label, f in self.fire.items()
                             for i, g in enumerate(COLOUR_GROUPS)})  # fmt: skip


def find_colour_triples(run: ColourRun, W_U: dict[str, Float[Tensor, "d_model vocab"]], colour_ids: dict[str, int],
                        settings: Exp5Settings) -> ColourCheck:  # fmt: skip
    """For each colour crosscoder, the blue/green triple (:func:`~.tying_lab.colour_triple`, halves read through the
    ``W_U["no-swap"]`` and ``W_U["half-swap"]`` unembeddings, top ``colour_top_k``, only indices with a group firing on
    at least ``min_colour_rate`` of the colour tokens) and its groups' firing on each colour mask.

    Every mask lies in the last two tokens of its prefix, so only those rows (two per prefix) are read, kept in memory
    in one pass over the activations (a pass of forward passes when they are streamed)."""
    length = torch.tensor([len(s) for s in run.seqs], dtype=torch.long)
    near = run.acts.select(lambda h: h.position >= length[h.doc_index] - 2)
    h = near.harvest
    masks = colour_masks(h.token_ids, h.doc_index, h.position, run.seqs, colour_ids)
    on_colour = masks["blue token"] | masks["green token"]
    rows = near.normalized
    result, fire = {}, {}
    for label, m in run.models.items():
        rate = firing_fractions(m, rows[on_colour].to(m.W_dec.device)).max(dim=0).values
        ct = colour_triple(m.W_dec, W_U["no-swap"], W_U["half-swap"], colour_ids, top_k=settings.colour_top_k,
                           colour_rate=rate, min_rate=settings.min_colour_rate)  # fmt: skip
        fire[label] = triple_firing(m, rows.to(m.W_dec.device), masks, ct["triple"])
        ct["ratio"] = float(half_balance(m)["ratio"][ct["triple"]])
        result[label] = ct
    return ColourCheck(variants=dict(run.variants), result=result, fire=fire)
