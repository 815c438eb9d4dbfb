"""Section 2 of notebook 05: the write-up's tied crosscoder and the fix, trained on the same lab-pair activations.

* :func:`lab_training_data` and :func:`train_lab_crosscoders`: Experiment 1's web/chat mix (:class:`LabData`,
  harvested once) and the two crosscoders (run folders named after their variants) in a :class:`LabRun`.
* :func:`lab_samples` and :func:`evaluate_lab`: held-out metrics and decoder-half balance (:class:`LabEval`).
* :func:`ratio_points` and :func:`ratio_summary`: the firing-count ratio scatter (the write-up's Figure 2).
* :func:`concept_check`: planted-concept AUROCs and the refusal triple on lab pairs (:class:`ConceptCheck`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from tiedlib.activations.collect import training_data
from tiedlib.analysis.concepts import concept_auroc, refusal_triple
from tiedlib.analysis.contexts import TokenSample, concat_samples, eval_sample
from tiedlib.analysis.firing import FiringRatios, HeldOutMetrics, best_per_group, evaluate, select_corners
from tiedlib.config import GROUP_NAMES, SHARED, TrainConfig
from tiedlib.experiments.exp5.presets import Exp5Settings
from tiedlib.experiments.exp5.tying_lab import half_balance, variant_config
from tiedlib.pairs import ModelPair, is_lab, training_sequences
from tiedlib.training import train_or_load

WRITEUP = "tied"
"""The write-up's tied crosscoder (a key of :data:`~.tying.VARIANTS`)."""


def lab_variants(settings: Exp5Settings) -> dict[str, str]:
    """Label -> variant of the two crosscoders: ``{"tied": "tied", "fix": settings.variant}``."""
    return {"tied": WRITEUP, "fix": settings.variant}


# ---- training ------------------------------------------------------------------------------------------------------
@dataclass
class LabData:
    """The lab crosscoders' training data: a lazy ``make_data()`` and the pair it comes from."""

    pair_name: str
    layer: int
    d_model: int
    n_sequences: int
    """Training sequences (harvested when ``make_data`` is first called)."""
    make_data: Callable[[], Iterator[Tensor]]
    """Returns an iterator of normalised ``(batch_size, 2, d_model)`` batches."""
    source: str | None = None
    """The pair's :attr:`~tiedlib.pairs.ModelPair.fingerprint`, recorded and checked in the run folders (None: not
    checked)."""


def lab_training_data(pair: ModelPair, settings: Exp5Settings) -> LabData:
    """Experiment 1's training mix of ``pair`` (``train_docs`` documents, ``web_fraction`` web), harvested lazily:
    in memory for lab pairs, an activation buffer otherwise."""
    seqs = training_sequences(pair, settings.train_docs, web_fraction=settings.web_fraction, seq_len=settings.seq_len)
    make_data = training_data(pair, seqs, batch_size=settings.batch_size, model_batch_size=settings.model_batch_size,
                              in_memory=is_lab(pair))  # fmt: skip
    return LabData(pair_name=pair.name, layer=pair.layer, d_model=pair.d_model, n_sequences=len(seqs),
                   make_data=make_data, source=pair.fingerprint)  # fmt: skip


@dataclass
class LabRun:
    """The two lab crosscoders and what they were trained on."""

    data: LabData
    n_latents: int
    eta: float
    variants: dict[str, str]
    """Label (``"tied"``, ``"fix"``) -> variant."""
    models: dict[str, Any]
    """Label -> trained crosscoder (eval mode)."""
    logs: dict[str, list[dict]]
    """Label -> logged training metrics."""

    def summary(self) -> str:
        d = self.data
        return (f"pair {d.pair_name}, layer {d.layer}, d_model {d.d_model}; {d.n_sequences} training sequences; "
                f"{self.n_latents} triples; tied = write-up, fix = {self.variants['fix']}")


def train_lab_crosscoders(data: LabData, settings: Exp5Settings, results: str | Path) -> LabRun:
    """Train (or load) the write-up's tied crosscoder and then the fix (``settings.variant``) on the same data, each
    in ``results/<variant>/``, with ``n_latents`` triples, ``eta``, ``n_steps``, ``lr``, ``l1_coeff`` (seed 0)."""
    train_cfg = TrainConfig(n_steps=settings.n_steps, lr=settings.lr, l1_coeff=settings.l1_coeff,
                            device=settings.device, log_every=settings.log_every, progress=True)  # fmt: skip
    variants = lab_variants(settings)
    models, logs = {}, {}
    for label, variant in variants.items():
        cfg = variant_config(variant, data.d_model, settings.n_latents, eta=settings.eta)
        models[label], logs[label] = train_or_load(Path(results) / variant, cfg, train_cfg, data.make_data,
                                                   source=data.source)  # fmt: skip
        models[label].eval()
    return LabRun(data=data, n_latents=settings.n_latents, eta=settings.eta, variants=variants, models=models,
                  logs=logs)  # fmt: skip


# ---- held-out metrics and the free-norm loophole --------------------------------------------------------------------
def lab_samples(pair: ModelPair, settings: Exp5Settings) -> tuple[TokenSample, TokenSample]:
    """``eval_docs`` held-out web and chat documents of ``pair``, harvested raw (web first)."""
    kw = dict(seq_len=settings.seq_len, model_batch_size=settings.model_batch_size)
    return eval_sample(pair, "web", settings.eval_docs, **kw), eval_sample(pair, "chat", settings.eval_docs, **kw)


@dataclass
class LabEval:
    """Held-out metrics of both lab crosscoders on web + chat data, and their decoder-half balance."""

    run: LabRun
    web: TokenSample
    chat: TokenSample
    held: dict[str, HeldOutMetrics]
    """Label -> explained variance, L0, dead latents and firing counts on the web + chat mix."""
    balance: dict[str, dict[str, Any]]
    """Label -> :func:`~.tying_lab.half_balance` with the shared firing counts."""

    def column(self, label: str) -> str:
        return f"{label} ({self.run.variants[label]})"

    def table(self) -> pd.DataFrame:
        """One column per crosscoder: :meth:`HeldOutMetrics.as_dict` plus ``one_sided_frac`` and
        ``shared_firings_one_sided``."""
        return pd.DataFrame({self.column(label): {
            **self.held[label].as_dict(), "one_sided_frac": self.balance[label]["one_sided_frac"],
            "shared_firings_one_sided": self.balance[label]["shared_firings_one_sided"]} for label in self.held})

    def lines(self, refusal: dict[str, dict[str, Any]] | None = None) -> list[str]:
        """One summary line per crosscoder: EV, L0 per group, the loophole and (with ``refusal``, from
        :class:`ConceptCheck`) its refusal triple."""
        out = []
        for label, m in self.held.items():
            d, b = m.as_dict(), self.balance[label]
            line = (f"Lab pair, {label} ({self.run.variants[label]}, eta {self.run.eta:g}): EV base "
                    f"{d['explained_variance_base']:.3f} / chat {d['explained_variance_chat']:.3f}; L0 "
                    f"shared/base/chat {d['l0_shared']:.2f}/{d['l0_base']:.2f}/{d['l0_chat']:.2f}; one-sided triples "
                    f"among those whose shared group fires {b['one_sided_frac']:.2f}, carrying "
                    f"{b['shared_firings_one_sided']:.2f} of the shared firings")
            if refusal is not None and label in refusal:
                r = refusal[label]
                line += (f"; refusal triple {r['triple']} (joint AUROC {r['joint_auroc']:.3f}: "
                         f"{'exists' if r['exists'] else 'none'})")
            out.append(line + ".")
        return out


def evaluate_lab(run: LabRun, web: TokenSample, chat: TokenSample, settings: Exp5Settings) -> LabEval:
    """Evaluate both crosscoders of ``run`` on the web + chat mix (one streaming pass each) and measure their
    one-sided triples (smaller decoder half under ``settings.one_sided_below`` of the larger one)."""
    mix = concat_samples([web, chat], "web + chat")
    held = {label: evaluate(m, mix.batches()) for label, m in run.models.items()}
    balance = {label: half_balance(m, held[label].firing.counts[SHARED], below=settings.one_sided_below)
               for label, m in run.models.items()}  # fmt: skip
    return LabEval(run=run, web=web, chat=chat, held=held, balance=balance)


# ---- firing-count ratios (the write-up's Figure 2) ------------------------------------------------------------------
def ratio_points(ratios: FiringRatios, k: int = 10) -> pd.DataFrame:
    """The plotted triples of the ratio scatter: kept indices with finite ratios.

    Columns ``index``, ``base_over_shared``, ``chat_over_shared`` and ``corner``: ``"top-left"`` for the ``k`` most
    chat-sided indices (:func:`~tiedlib.analysis.firing.select_corners`), ``"bottom-right"`` for the ``k`` most
    base-sided ones (top-left wins where both), ``"other"`` for the rest; rows in index order. ``attrs["corners"]``
    keeps the corner indices, best first.
    """
    corners = select_corners(ratios, k)
    idx = ratios.finite.nonzero().squeeze(1)
    corner = pd.Series("other", index=idx.tolist(), dtype=object)
    corner[corners.bottom_right.tolist()] = "bottom-right"
    corner[corners.top_left.tolist()] = "top-left"
    out = pd.DataFrame({"index": idx.numpy(), "base_over_shared": ratios.base_over_shared[idx].numpy(),
                        "chat_over_shared": ratios.chat_over_shared[idx].numpy(), "corner": corner.to_numpy()})
    out.attrs["corners"] = {"top-left": corners.top_left.tolist(), "bottom-right": corners.bottom_right.tolist()}
    return out


def ratio_summary(label: str, ratios: FiringRatios) -> str:
    """``"<label>: N triples plotted; median base/shared x, chat/shared y"`` over the plotted (finite) triples."""
    fin = ratios.finite
    nan = float("nan")
    base = float(ratios.base_over_shared[fin].median()) if fin.any() else nan
    chat = float(ratios.chat_over_shared[fin].median()) if fin.any() else nan
    return f"{label}: {int(fin.sum())} triples plotted; median base/shared {base:.3f}, chat/shared {chat:.3f}"


# ---- planted concepts (lab pairs only) ------------------------------------------------------------------------------
@dataclass
class ConceptCheck:
    """Best latent per planted concept and group on web and chat data, and the refusal triple, per crosscoder."""

    concepts: list[str]
    columns: list[str]
    """``"<group> / <data>"`` for data in (web, chat) and group in (shared, base, chat)."""
    best: dict[str, Tensor]
    """Label -> ``(n_concepts, 6)`` best AUROC per concept and column (NaN where a concept is absent)."""
    refusal: dict[str, dict[str, Any]]
    """Label -> :func:`~tiedlib.analysis.concepts.refusal_triple` plus ``exists`` (joint AUROC >= threshold)."""
    threshold: float

    def mean_best(self, label: str) -> dict[str, float]:
        """Column -> mean over concepts of the best AUROC (a NaN counts as chance, 0.5)."""
        return dict(zip(self.columns, torch.nan_to_num(self.best[label], nan=0.5).mean(dim=0).tolist(), strict=True))

    def table(self) -> pd.DataFrame:
        """Rows: columns of :attr:`best`; one column per crosscoder: :meth:`mean_best`."""
        return pd.DataFrame({label: self.mean_best(label) for label in self.best})

    def lines(self) -> list[str]:
        """One line per crosscoder: its refusal triple's two AUROCs and whether it clears the threshold."""
        return [f"{label}: refusal triple {v['triple']}: chat part AUROC {v['chat_auroc']:.3f} on chat refusals, "
                f"base part {v['base_auroc']:.3f} on web {v['base_concept']}s -> "
                f"{'exists' if v['exists'] else 'none'} at AUROC >= {self.threshold}"
                for label, v in self.refusal.items()]


def concept_check(evaluation: LabEval, *, threshold: float = 0.75,
                  concepts: Sequence[str] | None = None) -> ConceptCheck | None:  # fmt: skip
    """Concept AUROCs of both crosscoders on the labelled web and chat samples of ``evaluation``.

    ``concepts`` defaults to every planted lab concept (:data:`tiedlib.lab.CONCEPTS`; must include ``"refusal"`` and
    ``"disclaimer"``). Returns None when the samples carry no labels (paper-scale data).
    """
    if evaluation.web.docs is None or evaluation.chat.docs is None:
        return None
    if concepts is None:
        from tiedlib import lab

        concepts = lab.CONCEPTS
    concepts = list(concepts)
    data = {"web": evaluation.web, "chat": evaluation.chat}
    columns = [f"{g} / {name}" for name in data for g in GROUP_NAMES]
    best, refusal = {}, {}
    for label, m in evaluation.run.models.items():
        auc = {name: concept_auroc(m, s, concepts) for name, s in data.items()}
        best[label] = torch.cat([best_per_group(auc[name], 3)[0] for name in data], dim=1)
        refusal[label] = refusal_triple(auc["web"], auc["chat"], concepts, m.cfg.n_latents)
        refusal[label]["exists"] = refusal[label]["joint_auroc"] >= threshold
    return ConceptCheck(concepts=concepts, columns=columns, best=best, refusal=refusal, threshold=threshold)
