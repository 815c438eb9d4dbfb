"""Ground truth on lab pairs: which latents detect which planted concept, the write-up's refusal triple (Figures 3
and 5), and whether the corner triples of the ratio scatter detect chat-only (or web-only) concepts.

A latent "detects" a concept by AUROC: how well its activation ranks the concept's tokens above the other tokens.
Latent columns are flattened ``group * n_latents + index`` with groups shared, base, chat (``tiedlib.config``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib import lab
from tiedlib.analysis import concepts as gt
from tiedlib.analysis.firing import best_per_group
from tiedlib.config import BASE_ONLY, CHAT_ONLY, GROUP_NAMES
from tiedlib.crosscoders.checkpoints import LatentRef, resolve_latent
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.experiments.exp1.data import HeldOutSamples
from tiedlib.experiments.exp1.ratios import RatioScatter


@dataclass
class ConceptScores:
    """AUROC of every latent of a tied crosscoder for every lab concept, on web, chat and web + chat data."""

    concepts: list[str]
    n_latents: int
    """Triples of the crosscoder (columns of each table: ``3 * n_latents``)."""
    web: Float[Tensor, "n_concepts n_all"]
    chat: Float[Tensor, "n_concepts n_all"]
    mix: Float[Tensor, "n_concepts n_all"]
    labels_web: Bool[Tensor, "n_web_tokens n_concepts"]
    labels_chat: Bool[Tensor, "n_chat_tokens n_concepts"]

    @property
    def chat_only(self) -> list[str]:
        """Concepts that occur in the chat sample and never in the web sample (turn markers, end of prompt, ...)."""
        return gt.source_only_concepts(self.labels_chat, self.labels_web, self.concepts)

    @property
    def web_only(self) -> list[str]:
        """Concepts that occur in the web sample and never in the chat sample."""
        return gt.source_only_concepts(self.labels_web, self.labels_chat, self.concepts)

    def best_table(self) -> pd.DataFrame:
        """Best AUROC per concept (rows) and ``"<group> / <source>"`` (columns: the three groups on web, then on
        chat); NaN where a concept is absent from the source."""
        by_source = {"web": self.web, "chat": self.chat}
        best = torch.cat([best_per_group(a, len(GROUP_NAMES))[0] for a in by_source.values()], dim=1)
        cols = [f"{g} / {name}" for name in by_source for g in GROUP_NAMES]
        return pd.DataFrame(best.numpy(), index=list(self.concepts), columns=cols)


def concept_scores(model: Crosscoder, samples: HeldOutSamples, concepts: Sequence[str] | None = None) -> ConceptScores:
    """AUROC tables of ``model`` on the held-out lab samples (all of :data:`tiedlib.lab.CONCEPTS` by default).

    Raises ValueError if the samples carry no labelled documents (only lab pairs have ground truth).
    """
    concepts = list(lab.CONCEPTS if concepts is None else concepts)
    web, chat = gt.concept_auroc(model, samples.web, concepts), gt.concept_auroc(model, samples.chat, concepts)
    mix = gt.concept_auroc(model, samples.mix, concepts)
    return ConceptScores(concepts, model.cfg.n_latents, web, chat, mix,
                         gt.sample_labels(samples.web, concepts), gt.sample_labels(samples.chat, concepts))  # fmt: skip


@dataclass(frozen=True)
class RefusalTriple:
    """The triple whose chat part detects chat refusals and whose base part detects web refusals or disclaimers."""

    triple: int
    joint_auroc: float
    """The lower of the two AUROCs (the score the triple was picked by)."""
    chat_auroc: float
    base_auroc: float
    base_concept: str
    """``"refusal"`` or ``"disclaimer"``: whichever the base part detects better on web data."""

    def found(self, threshold: float) -> bool:
        """Whether both parts reach ``threshold``."""
        return self.joint_auroc >= threshold

    def summary(self, threshold: float) -> str:
        return (f"triple {self.triple}: chat part AUROC {self.chat_auroc:.3f} for chat refusals, base part AUROC "
                f"{self.base_auroc:.3f} for web {self.base_concept}s (threshold {threshold})")  # fmt: skip

    def verdict(self, threshold: float) -> str:
        """The summary's sentence: the triple, its two AUROCs and whether such a triple exists at ``threshold``."""
        return (
            f"Figure-3 triple {self.triple}: chat part AUROC {self.chat_auroc:.3f} on chat refusals, base part "
            f"AUROC {self.base_auroc:.3f} on web {self.base_concept}s -> "
            f"{'such a triple exists' if self.found(threshold) else 'no triple passes'} at AUROC >= {threshold}."
        )


def refusal_triple(scores: ConceptScores) -> RefusalTriple:
    """The write-up's Figure-3 triple, by :func:`tiedlib.analysis.concepts.refusal_triple` (chat part on chat data,
    base part on web data)."""
    return RefusalTriple(**gt.refusal_triple(scores.web, scores.chat, scores.concepts, scores.n_latents))


def focus_triple(scatter: RatioScatter, focus_latent: LatentRef | int | None, refusal: RefusalTriple | None = None,
                 model: Crosscoder | None = None) -> int:  # fmt: skip
    """The triple whose contexts are shown first: the refusal triple when there is ground truth, else
    ``focus_latent`` (the write-up's 10615 at paper scale), else the most top-left triple.

    A :class:`LatentRef` is checked against ``model`` (:func:`resolve_latent`).

    Raises:
        ValueError: ``focus_latent`` is a :class:`LatentRef` and ``model`` is not given, or is another checkpoint than
            the one the latent was chosen in.
    """
    if refusal is not None:
        return refusal.triple
    if isinstance(focus_latent, LatentRef) and model is None:
        raise ValueError(
            f"focus_latent {focus_latent.index} was chosen in checkpoint {focus_latent.checkpoint!r}: pass the "
            "crosscoder being analysed (model=...) so that it can be checked to be that checkpoint"
        )
    latent = resolve_latent(focus_latent, model) if model is not None else focus_latent
    return latent if latent is not None else scatter.most_top_left


def concept_share(names: Sequence[str], group: Collection[str]) -> float:
    """Fraction of ``names`` that are in ``group`` (0 for no names)."""
    return sum(c in group for c in names) / max(len(names), 1)


@dataclass
class CornerConcepts:
    """Best concepts of the corner triples' exclusive parts, against the same share over all live chat parts."""

    top_left: list[int]
    top_left_best: list[str]
    """Concept the chat part of each top-left triple detects best on web + chat data."""
    chat_over_shared: np.ndarray
    """Ratios of the top-left triples, shape ``(len(top_left),)``."""
    base_over_shared: np.ndarray
    chat_only: list[str]
    web_only: list[str]
    n_alive: int
    """Kept triples (finite ratios) whose chat part fires at all."""
    top_left_chat_frac: float
    """Share of the top-left triples whose chat part is best at a chat-only concept."""
    all_chat_frac: float
    """The same share over the ``n_alive`` triples."""
    bottom_right_web_frac: float
    """Share of the bottom-right triples whose base part is best at a web-only concept."""

    def table(self) -> pd.DataFrame:
        """One row per top-left triple: its chat part's best concept and its two ratios (3 decimals)."""
        return pd.DataFrame({"top-left triple": self.top_left, "chat part's best concept": self.top_left_best,
                             "chat/shared": self.chat_over_shared.round(3),
                             "base/shared": self.base_over_shared.round(3)})  # fmt: skip

    def summary(self) -> str:
        return (
            f"top-left triples whose chat part's best concept is chat-only: {self.top_left_chat_frac:.0%} "
            f"(all {self.n_alive} kept triples with a firing chat part: {self.all_chat_frac:.0%})"
        )

    def verdict(self) -> str:
        """The summary's sentence on both corners."""
        return (
            f"Top-left triples whose chat part is best at a chat-only concept: {self.top_left_chat_frac:.0%} "
            f"(all kept triples with a firing chat part: {self.all_chat_frac:.0%}); bottom-right base parts best "
            f"at a web-only concept: {self.bottom_right_web_frac:.0%}."
        )


def corner_concepts(scores: ConceptScores, scatter: RatioScatter) -> CornerConcepts:
    """Which concepts the corner triples detect: the chat part of each top-left triple and the base part of each
    bottom-right triple, on web + chat data, compared with every kept triple whose chat part fires."""
    n, corners, ratios = scores.n_latents, scatter.corners, scatter.ratios
    alive = (ratios.finite & (scatter.firing.counts[CHAT_ONLY] > 0)).nonzero().squeeze(1)
    top_left_best = gt.best_concepts(scores.mix, CHAT_ONLY * n + corners.top_left, scores.concepts)
    all_best = gt.best_concepts(scores.mix, CHAT_ONLY * n + alive, scores.concepts)
    bottom_right_best = gt.best_concepts(scores.mix, BASE_ONLY * n + corners.bottom_right, scores.concepts)
    chat_only, web_only = scores.chat_only, scores.web_only
    return CornerConcepts(
        top_left=corners.top_left.tolist(), top_left_best=top_left_best,
        chat_over_shared=ratios.chat_over_shared[corners.top_left].numpy(),
        base_over_shared=ratios.base_over_shared[corners.top_left].numpy(),
        chat_only=chat_only, web_only=web_only, n_alive=len(alive),
        top_left_chat_frac=concept_share(top_left_best, chat_only), all_chat_frac=concept_share(all_best, chat_only),
        bottom_right_web_frac=concept_share(bottom_right_best, web_only),
    )  # fmt: skip
