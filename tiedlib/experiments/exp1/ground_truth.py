"""Ground truth on lab pairs: which latents detect which planted concept, the write-up's refusal triple (Figures 3
and 5), and whether the corner triples of the ratio scatter detect chat-only (or web-only) concepts.

Parts are scored and chosen by precision at k and P(concept | part fires) at each concept's positions (issue 16; see
:func:`tiedlib.analysis.concepts.part_scores`): refusals and requests at the end of the prompt, where the mechanism
acts, other concepts on every token. AUROC over all tokens is kept as extra columns and never used to choose: a part
that fires rarely but only on refusals scores about 0.5 there.
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
from tiedlib.analysis.contexts import latent_activations
from tiedlib.analysis.firing import auroc, best_per_group
from tiedlib.config import BASE_ONLY, CHAT_ONLY, GROUP_NAMES
from tiedlib.crosscoders.checkpoints import LatentRef, resolve_latent
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.experiments.exp1.data import HeldOutSamples
from tiedlib.experiments.exp1.ratios import RatioScatter


@dataclass
class ConceptScores:
    """Scores of every latent of a tied crosscoder for every lab concept, on web, chat and web + chat data: AUROC over
    all tokens (``web``, ``chat``, ``mix``) and, in ``parts``, precision at k and P(concept | fires) at each
    concept's positions."""

    concepts: list[str]
    n_latents: int
    """Triples of the crosscoder (columns of each table: ``3 * n_latents``)."""
    web: Float[Tensor, "n_concepts n_all"]
    chat: Float[Tensor, "n_concepts n_all"]
    mix: Float[Tensor, "n_concepts n_all"]
    labels_web: Bool[Tensor, "n_web_tokens n_concepts"]
    labels_chat: Bool[Tensor, "n_chat_tokens n_concepts"]
    parts: dict[str, gt.PartScores] | None = None
    """``{"web", "chat", "mix"}``: :class:`tiedlib.analysis.concepts.PartScores` of every column (what parts are
    chosen by); None only for hand-made AUROC tables."""

    def part(self, source: str) -> gt.PartScores:
        """The part scores on ``source`` (``"web"``, ``"chat"`` or ``"mix"``).

        Raises:
            ValueError: these scores carry AUROC tables only.
        """
        if self.parts is None:
            raise ValueError("these concept scores have no precision-at-k tables (parts=None): use concept_scores()")
        return self.parts[source]

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

    def precision_table(self) -> pd.DataFrame:
        """Best precision at k per concept (rows) and ``"<group> / <source>"`` (the three groups on web, then on chat),
        at each concept's positions; NaN where a concept is absent from the source."""
        by_source = {"web": self.part("web").precision, "chat": self.part("chat").precision}
        best = torch.cat([best_per_group(a, len(GROUP_NAMES))[0] for a in by_source.values()], dim=1)
        cols = [f"{g} / {name}" for name in by_source for g in GROUP_NAMES]
        return pd.DataFrame(best.numpy(), index=list(self.concepts), columns=cols)


def concept_scores(model: Crosscoder, samples: HeldOutSamples, concepts: Sequence[str] | None = None, *,
                   k: int = 20) -> ConceptScores:  # fmt: skip
    """AUROC and part-score tables of ``model`` on the held-out lab samples (all of :data:`tiedlib.lab.CONCEPTS` by
    default), precision at ``k``. Every latent is encoded once, on web + chat; the web and chat tables use its rows.

    Raises ValueError if the samples carry no labelled documents (only lab pairs have ground truth).
    """
    concepts = list(lab.CONCEPTS if concepts is None else concepts)
    labels_web, labels_chat = gt.sample_labels(samples.web, concepts), gt.sample_labels(samples.chat, concepts)
    mix = samples.mix
    acts = latent_activations(model, mix.batches(), [(g, i) for g in range(model.cfg.n_groups)
                                                     for i in range(model.cfg.n_latents)])  # fmt: skip
    carries, scored = gt.positional_labels(mix.docs, mix.doc_index, mix.position, concepts)
    rows = {"web": slice(0, len(samples.web)), "chat": slice(len(samples.web), len(mix)), "mix": slice(0, len(mix))}
    parts = {name: gt.part_scores(acts[r], carries[r], scored[r], k) for name, r in rows.items()}
    labels_mix = torch.cat([labels_web, labels_chat])
    aucs = {name: auroc(acts[r], labels_mix[r]) for name, r in rows.items()}
    return ConceptScores(concepts, model.cfg.n_latents, aucs["web"], aucs["chat"], aucs["mix"], labels_web,
                         labels_chat, parts)  # fmt: skip


@dataclass(frozen=True)
class RefusalTriple:
    """The triple whose chat part picks out chat refusals and whose base part picks out web refusals or disclaimers,
    both at the end of the prompt (where the reply is decided), chosen by precision at k."""

    triple: int
    joint: float
    """The lower of the two precisions at k (the score the triple was picked by)."""
    chat_precision: float
    base_precision: float
    base_concept: str
    """``"refusal"`` or ``"disclaimer"``: whichever the base part picks out better on web data."""
    chat_p_fires: float = float("nan")
    """P(chat refusal follows | chat part fires at an end of prompt)."""
    base_p_fires: float = float("nan")
    chat_auroc: float = float("nan")
    """AUROC of the chat part for refusal tokens over all chat tokens (shown, not chosen by)."""
    base_auroc: float = float("nan")
    k: int = 20
    chat_chance: float = float("nan")
    """Share of chat ends of prompt followed by a refusal: the precision of a chat part firing at random."""
    base_chance: float = float("nan")

    def found(self, threshold: float) -> bool:
        """Whether both parts reach precision ``threshold``."""
        return self.joint >= threshold

    def summary(self, threshold: float) -> str:
        return (f"triple {self.triple}: chat part precision@{self.k} {self.chat_precision:.2f} "
                f"(P(refusal | fires) {self.chat_p_fires:.2f}, chance {self.chat_chance:.2f}, AUROC "
                f"{self.chat_auroc:.3f}) for chat refusals, base part precision@{self.k} {self.base_precision:.2f} "
                f"(P({self.base_concept} | fires) {self.base_p_fires:.2f}, chance {self.base_chance:.2f}, AUROC "
                f"{self.base_auroc:.3f}) for web {self.base_concept}s, at the end of the prompt (threshold "
                f"{threshold})")  # fmt: skip

    def verdict(self, threshold: float) -> str:
        """The summary's sentence: the triple, its two precisions and whether such a triple exists at ``threshold``."""
        return (
            f"Figure-3 triple {self.triple}: at the end of the prompt, chat part precision@{self.k} "
            f"{self.chat_precision:.2f} on chat refusals, base part {self.base_precision:.2f} on web "
            f"{self.base_concept}s -> {'such a triple exists' if self.found(threshold) else 'no triple passes'} at "
            f"precision >= {threshold}."
        )


def refusal_triple(scores: ConceptScores) -> RefusalTriple:
    """The write-up's Figure-3 triple by precision at k (:func:`tiedlib.analysis.concepts.joint_triple`: chat part
    on chat data, base part on web data, both at the end of the prompt), with its P(concept | fires) and AUROCs."""
    web, chat, n, concepts = scores.part("web"), scores.part("chat"), scores.n_latents, scores.concepts
    out = gt.joint_triple(web.precision, chat.precision, concepts, n)
    t, base_c, chat_c = out["triple"], concepts.index(out["base_concept"]), concepts.index("refusal")
    chat_col, base_col = CHAT_ONLY * n + t, BASE_ONLY * n + t
    return RefusalTriple(t, out["joint"], out["chat"], out["base"], out["base_concept"],
                         float(chat.p_fires[chat_c, chat_col]), float(web.p_fires[base_c, base_col]),
                         float(scores.chat[chat_c, chat_col]), float(scores.web[base_c, base_col]), chat.k,
                         _chance(chat, chat_c), _chance(web, base_c))  # fmt: skip


def _chance(part: gt.PartScores, concept: int) -> float:
    return float(part.chance[concept]) if part.n_scored is not None else float("nan")


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


NO_CONCEPT = "none"
"""Best concept of a part whose precision at k is 0 (or undefined) for every concept."""


def best_part_concepts(precision: Float[Tensor, "n_concepts n_all"], columns: Tensor,
                       concepts: Sequence[str]) -> list[str]:  # fmt: skip
    """The concept each column picks out best by precision at k, or :data:`NO_CONCEPT` where it picks out none."""
    table = torch.nan_to_num(precision[:, columns], nan=0.0).reshape(len(concepts), -1)
    best, which = table.max(dim=0)
    return [concepts[int(j)] if float(b) > 0 else NO_CONCEPT for b, j in zip(best, which, strict=True)]


@dataclass
class CornerConcepts:
    """Best concepts (by precision at k) of the corner triples' exclusive parts, against the same share over all
    kept triples whose chat part fires as often as a corner's must."""

    top_left: list[int]
    top_left_best: list[str]
    """Concept the chat part of each top-left triple picks out best on web + chat data ("none" if none)."""
    top_left_precision: list[float]
    """Its precision at k."""
    chat_over_shared: np.ndarray
    """Ratios of the top-left triples, shape ``(len(top_left),)``."""
    base_over_shared: np.ndarray
    chat_only: list[str]
    web_only: list[str]
    n_alive: int
    """Kept triples (finite ratios) whose chat part fires on at least ``min_firings`` tokens."""
    top_left_chat_frac: float
    """Share of the top-left triples whose chat part is best at a chat-only concept."""
    all_chat_frac: float
    """The same share over the ``n_alive`` triples."""
    bottom_right_web_frac: float
    """Share of the bottom-right triples whose base part is best at a web-only concept."""
    min_firings: int = 1

    def table(self) -> pd.DataFrame:
        """One row per top-left triple: its chat part's best concept, precision and two ratios (3 decimals)."""
        return pd.DataFrame({"top-left triple": self.top_left, "chat part's best concept": self.top_left_best,
                             "precision at k": np.round(self.top_left_precision, 3),
                             "chat/shared": self.chat_over_shared.round(3),
                             "base/shared": self.base_over_shared.round(3)})  # fmt: skip

    def summary(self) -> str:
        return (
            f"top-left triples whose chat part's best concept is chat-only: {self.top_left_chat_frac:.0%} "
            f"(all {self.n_alive} kept triples whose chat part fires >= {self.min_firings} times: "
            f"{self.all_chat_frac:.0%})"
        )

    def verdict(self) -> str:
        """The summary's sentence on both corners."""
        return (
            f"Top-left triples whose chat part is best at a chat-only concept: {self.top_left_chat_frac:.0%} "
            f"(all kept triples whose chat part fires >= {self.min_firings} times: {self.all_chat_frac:.0%}); "
            f"bottom-right base parts best at a web-only concept: {self.bottom_right_web_frac:.0%}."
        )


def corner_concepts(scores: ConceptScores, scatter: RatioScatter, min_firings: int = 1) -> CornerConcepts:
    """Which concepts the corner triples pick out by precision at k: the chat part of each top-left triple and the
    base part of each bottom-right triple, on web + chat data, compared with every kept triple whose chat part fires
    on at least ``min_firings`` tokens (pass the scatter's ``min_exclusive_firings``)."""
    n, corners, ratios = scores.n_latents, scatter.corners, scatter.ratios
    precision = scores.part("mix").precision
    alive = (ratios.finite & (scatter.firing.counts[CHAT_ONLY] >= min_firings)).nonzero().squeeze(1)
    top_cols = CHAT_ONLY * n + corners.top_left
    top_left_best = best_part_concepts(precision, top_cols, scores.concepts)
    top_prec = torch.nan_to_num(precision[:, top_cols], nan=0.0).max(dim=0).values if len(top_cols) else torch.zeros(0)
    all_best = best_part_concepts(precision, CHAT_ONLY * n + alive, scores.concepts)
    bottom_right_best = best_part_concepts(precision, BASE_ONLY * n + corners.bottom_right, scores.concepts)
    chat_only, web_only = scores.chat_only, scores.web_only
    return CornerConcepts(
        top_left=corners.top_left.tolist(), top_left_best=top_left_best, top_left_precision=top_prec.tolist(),
        chat_over_shared=ratios.chat_over_shared[corners.top_left].numpy(),
        base_over_shared=ratios.base_over_shared[corners.top_left].numpy(),
        chat_only=chat_only, web_only=web_only, n_alive=len(alive),
        top_left_chat_frac=concept_share(top_left_best, chat_only), all_chat_frac=concept_share(all_best, chat_only),
        bottom_right_web_frac=concept_share(bottom_right_best, web_only), min_firings=min_firings,
    )  # fmt: skip
