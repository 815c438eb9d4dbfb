"""Notebook 06, "timing or representation?" concept by concept: the ablation (:mod:`tiedlib.analysis.ablation`) scored
against a ground truth measured in the lab pair's models before any crosscoder (issue 19, planted mechanism 3 of
issue 16).

**Ground truth** (:func:`ground_truth`), per planted concept of the held-out lab documents, at the harvesting layer:
each model's difference-of-means direction ``u_m`` of the concept's tokens vs the other scored tokens (the estimator of
Arditi et al. 2024, arXiv 2406.11717, section 2.3; :func:`tiedlib.lab.probes.diff_of_means`), fitted on the even
documents and read on the odd ones: its held-out AUROC in each model, the cosine of ``u_base`` and ``u_chat``, and a
*timing signal*: along the common direction ``normalize(u_base + u_chat)``, the share of held-out concept tokens on
which each model's projection exceeds its own ``1 - fpr`` quantile over the held-out non-concept tokens (the concept
is "active" there at the same false-positive rate in both models); the signal is chat's share minus base's. The rule,
in this order:

* ``not present``: neither model reads the concept (both AUROCs below ``min_auroc``);
* ``representation``: both models read it (both AUROCs at least ``min_auroc``) along directions at cosine at most
  ``changed_cos`` (the same concept, a different vector);
* ``timing``: the directions agree (cosine at least ``same_cos``) and one model fires the concept on at least
  ``min_timing`` more of its tokens (the same vector, fired at different times);
* ``same``: the directions agree and the timing signal is below ``min_timing`` (nothing for the ablation to find);
* ``unclear``: anything else (a cosine between the two bounds, or a changed direction one model does not read).

Positional concepts (:data:`tiedlib.analysis.concepts.POSITIONAL_CONCEPTS`, e.g. ``refusal``: the reply that
follows refuses) are scored at the *last* end-of-prompt token only (the model turn header's newline, where the lab
probe suite reads its end-of-prompt contrasts), and ``name_given`` (:data:`NAME_GIVEN`) is the lab's ``name``
concept read there too (the prompt gave a name: the probe suite's "name given" contrast).

**Triples** (:func:`concept_triples`): a tied triple carries a concept when what it writes into both models,
``c_base + c_chat``, picks the concept out at its positions by precision at ``k`` and purity over chance (the
thresholds of :func:`tiedlib.analysis.novel.match_concepts`, per concept: a triple may carry several). **Agreement**
(:func:`concept_table`): the ablation's timing share over a concept's triples (those active on at least
``min_active`` held-out tokens) is at least 1/2 for a ``timing`` concept and below 1/2 for a ``representation`` one;
``same``, ``not present`` and ``unclear`` concepts predict nothing.

Directions, triples and ablation costs all read the same held-out tokens: all of them (web and chat documents: where
notebook 06 sums the ablation's costs) or the chat documents' alone (where the chat fine-tune acts), see
:func:`concept_tables`.

**Second ground truth: reuse in a new context** (:func:`reuse_truth`, :class:`ReuseRule`). The write-up's timing
mechanism read literally: the chat model fires the *base* model's concept direction in a context where the base model
does not. Per concept, ``u_web``: the base model's difference-of-means direction fitted on the *web* documents (even
ones); ``u_chat``: the chat model's own direction fitted on the *chat* documents (even ones). On the held-out (odd)
chat documents: the AUROC of ``u_web`` in each model, and the cosine of ``u_web`` and ``u_chat``. The verdict
``timing (reuse)`` needs the lab probe suite's reuse criterion (:func:`tiedlib.lab.report.probe_verdicts`, row "reuse:
decline fired on harmful requests": chat AUROC >= 0.8 and >= base + 0.2) *and* directions that agree, cosine >=
``min_cos`` = 0.5: the two directions are fitted on different documents (other negatives), so the first rule's
``same_cos`` (0.8, one set of documents) would mix the context change with a model change; 0.5 is the first rule's
``changed_cos``, so a concept cannot be both reused and "a different vector". Otherwise: ``not read in chat`` (chat
AUROC below the bar), ``base reads it too`` (gain below 0.2) or ``direction differs`` (cosine below ``min_cos``); only
``timing (reuse)`` predicts a timing share (>= 1/2). Positional concepts have no web tokens and are left out. Its
triples and ablation costs read the held-out chat documents (:func:`reuse_table`). All thresholds were fixed before
looking at the lab pair's numbers and are not tuned to them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib import lab
from tiedlib.analysis import concepts as gt
from tiedlib.analysis.ablation import AblationCosts, ablation_costs, coefficients
from tiedlib.analysis.novel import purity_match
from tiedlib.config import BASE, CHAT
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.lab.probes import auroc, diff_of_means

from .pipeline import Crosscoders, HeldOut
from .presets import Exp6Settings

SOURCES = ("all", "web", "chat")
"""Held-out documents a per-concept table reads (:meth:`HeldOutConcepts.rows`)."""
TRUTHS = ("timing", "representation", "same", "unclear", "not present")
NAME_GIVEN = "name_given"
"""The lab's ``name`` concept read at the end of the prompt (a ``"prompt"`` positional concept): a name was given."""
CROSSCODERS = ("tied", "recommended")
"""The write-up's tied crosscoder and the recommended one (:data:`.pipeline.ARCHITECTURES`)."""
REUSE_TRUTHS = ("timing (reuse)", "base reads it too", "direction differs", "not read in chat")
"""Verdicts of :class:`ReuseRule`; only the first predicts a timing share."""
REUSE_COLUMNS = ("n_web", "n_chat", "auroc_base", "auroc_chat", "cosine", "truth")
"""Columns of :func:`reuse_truth`: concept tokens per document kind, AUROCs of the base web direction on held-out
chat documents, cosine of the base web and chat chat directions, verdict."""
TRUTH_COLUMNS = ("n_positive", "auroc_base", "auroc_chat", "cosine", "active_base", "active_chat", "timing_signal",
                 "truth")  # fmt: skip


@dataclass(frozen=True)
class TruthRule:
    """Thresholds of the ground-truth rule (module docstring); our choices."""

    min_auroc: float = 0.8
    same_cos: float = 0.8
    changed_cos: float = 0.5
    min_timing: float = 0.2
    fpr: float = 0.05
    """False-positive rate that sets each model's activity threshold."""
    min_positive: int = 5
    """Concepts with fewer concept (or non-concept) tokens in either half are left out."""

    def __post_init__(self) -> None:
        if not (0.5 <= self.min_auroc <= 1 and -1 <= self.changed_cos < self.same_cos <= 1 and 0 < self.min_timing <= 1
                and 0 < self.fpr < 1 and self.min_positive >= 1):  # fmt: skip
            raise ValueError(f"need min_auroc in [0.5, 1], -1 <= changed_cos < same_cos <= 1, min_timing in (0, 1], "
                             f"fpr in (0, 1) and min_positive >= 1, got {self}")  # fmt: skip

    def verdict(self, auroc_base: float, auroc_chat: float, cosine: float, timing_signal: float) -> str:
        """One of :data:`TRUTHS` (the rule of the module docstring)."""
        if max(auroc_base, auroc_chat) < self.min_auroc:
            return "not present"
        if cosine <= self.changed_cos and min(auroc_base, auroc_chat) >= self.min_auroc:
            return "representation"
        if cosine >= self.same_cos:
            return "timing" if abs(timing_signal) >= self.min_timing else "same"
        return "unclear"


def _active_share(p: Tensor, y: Tensor, fpr: float) -> float:
    """Share of the positives whose score exceeds the negatives' ``1 - fpr`` quantile."""
    return float((p[y] > torch.quantile(p[~y].double(), 1 - fpr).float()).float().mean())


def ground_truth(
    x: Float[Tensor, "n_tokens 2 d_model"], carries: Bool[Tensor, "n_tokens n_concepts"],
    scored: Bool[Tensor, "n_tokens n_concepts"], concepts: Sequence[str], fit: Bool[Tensor, " n_tokens"],
    rule: TruthRule | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Per concept (rows, in order; those with too few tokens left out), the :data:`TRUTH_COLUMNS`: concept tokens
    scored, held-out AUROC in each model, cosine of the two directions, active shares (``active_base``,
    ``active_chat``) and their difference ``timing_signal`` (chat minus base), and the ``truth`` of ``rule``.

    Args:
        x: both models' activations on the same tokens (any per-model scale: every measure is scale-free).
        carries, scored: :func:`tiedlib.analysis.concepts.positional_labels` of the tokens.
        fit: tokens whose documents fit the directions; the others are held out.

    Raises:
        ValueError: the shapes disagree.
    """
    rule = rule or TruthRule()
    if x.ndim != 3 or x.shape[1] != 2 or not (x.shape[0] == carries.shape[0] == scored.shape[0] == fit.shape[0]):
        raise ValueError(f"need x (n, 2, d) and n-row labels and fit mask, got {tuple(x.shape)}, "
                         f"{tuple(carries.shape)}, {tuple(scored.shape)}, {tuple(fit.shape)}")  # fmt: skip
    if carries.shape != scored.shape or len(concepts) != carries.shape[1]:
        raise ValueError(f"{len(concepts)} concepts for labels {tuple(carries.shape)} / {tuple(scored.shape)}")
    x = x.float()
    rows = {}
    for j, name in enumerate(concepts):
        m = scored[:, j]
        y, f = carries[m, j], fit[m]
        if min(int(y[f].sum()), int((~y[f]).sum()), int(y[~f].sum()), int((~y[~f]).sum())) < rule.min_positive:
            continue
        xf, xt, yf, yt = x[m][f], x[m][~f], y[f], y[~f]
        u = [diff_of_means(xf[:, i], yf) for i in (BASE, CHAT)]
        au = [auroc(xt[:, i] @ u[i], yt) for i in (BASE, CHAT)]
        cos = float(u[BASE] @ u[CHAT])
        common = u[BASE] + u[CHAT]
        common = common / common.norm().clamp_min(1e-12)
        active = [_active_share(xt[:, i] @ common, yt, rule.fpr) for i in (BASE, CHAT)]
        signal = active[CHAT] - active[BASE]
        rows[name] = {"n_positive": int(y.sum()), "auroc_base": au[BASE], "auroc_chat": au[CHAT], "cosine": cos,
                      "active_base": active[BASE], "active_chat": active[CHAT], "timing_signal": signal,
                      "truth": rule.verdict(au[BASE], au[CHAT], cos, signal)}  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(TRUTH_COLUMNS)).rename_axis("concept")


@dataclass(frozen=True)
class ReuseRule:
    """Thresholds of the reuse ground truth (module docstring): ``min_auroc`` and ``min_gain`` are the lab probe
    suite's reuse criterion (:func:`tiedlib.lab.report.probe_verdicts`), ``min_cos`` ours (fixed before looking)."""

    min_auroc: float = 0.8
    min_gain: float = 0.2
    min_cos: float = 0.5
    min_positive: int = 5
    """Concepts with fewer concept (or non-concept) tokens in a fit or held-out set are left out."""

    def __post_init__(self) -> None:
        if not (0.5 <= self.min_auroc <= 1 and 0 < self.min_gain <= 0.5 and -1 <= self.min_cos <= 1
                and self.min_positive >= 1):  # fmt: skip
            raise ValueError(f"need min_auroc in [0.5, 1], min_gain in (0, 0.5], min_cos in [-1, 1] and "
                             f"min_positive >= 1, got {self}")  # fmt: skip

    def verdict(self, auroc_base: float, auroc_chat: float, cosine: float) -> str:
        """One of :data:`REUSE_TRUTHS`, from the base web direction's AUROCs on chat documents and the cosine."""
        if not auroc_chat >= self.min_auroc:
            return "not read in chat"
        if auroc_chat < auroc_base + self.min_gain:
            return "base reads it too"
        return "timing (reuse)" if cosine >= self.min_cos else "direction differs"


def reuse_truth(
    x: Float[Tensor, "n_tokens 2 d_model"], carries: Bool[Tensor, "n_tokens n_concepts"],
    scored: Bool[Tensor, "n_tokens n_concepts"], concepts: Sequence[str], fit: Bool[Tensor, " n_tokens"],
    chat: Bool[Tensor, " n_tokens"], rule: ReuseRule | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Per concept (rows, in order; those with too few tokens left out), the :data:`REUSE_COLUMNS`: the base model's
    direction fitted on the web documents' ``fit`` tokens, read on the held-out chat tokens (``chat & ~fit``) in each
    model (AUROC), its cosine with the chat model's direction fitted on the chat documents' ``fit`` tokens, and the
    ``truth`` of ``rule`` (:class:`ReuseRule`).

    Args:
        x: both models' activations on the same tokens (any per-model scale: every measure is scale-free).
        carries, scored: :func:`tiedlib.analysis.concepts.positional_labels` of the tokens.
        fit: tokens whose documents fit the directions; chat: tokens of chat documents (the others are web ones).

    Raises:
        ValueError: the shapes disagree.
    """
    rule = rule or ReuseRule()
    n_rows = {x.shape[0], carries.shape[0], scored.shape[0], fit.shape[0], chat.shape[0]}
    if x.ndim != 3 or x.shape[1] != 2 or len(n_rows) != 1:
        shapes = ", ".join(str(tuple(t.shape)) for t in (x, carries, scored, fit, chat))
        raise ValueError(f"need x (n, 2, d) and n-row labels, fit and chat masks, got {shapes}")
    if carries.shape != scored.shape or len(concepts) != carries.shape[1]:
        raise ValueError(f"{len(concepts)} concepts for labels {tuple(carries.shape)} / {tuple(scored.shape)}")
    x = x.float()
    sets = {"web": fit & ~chat, "chat": fit & chat, "test": ~fit & chat}
    rows = {}
    for j, name in enumerate(concepts):
        parts = {k: (x[m & scored[:, j]], carries[m & scored[:, j], j]) for k, m in sets.items()}
        if min(min(int(y.sum()), int((~y).sum())) for _, y in parts.values()) < rule.min_positive:
            continue
        u_web = diff_of_means(parts["web"][0][:, BASE], parts["web"][1])
        u_chat = diff_of_means(parts["chat"][0][:, CHAT], parts["chat"][1])
        xt, yt = parts["test"]
        au = [auroc(xt[:, i] @ u_web, yt) for i in (BASE, CHAT)]
        cos = float(u_web @ u_chat)
        rows[name] = {"n_web": int(carries[~chat & scored[:, j], j].sum()),
                      "n_chat": int(carries[chat & scored[:, j], j].sum()), "auroc_base": au[BASE],
                      "auroc_chat": au[CHAT], "cosine": cos,
                      "truth": rule.verdict(au[BASE], au[CHAT], cos)}  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(REUSE_COLUMNS)).rename_axis("concept")


@dataclass
class HeldOutConcepts:
    """Concept labels of every held-out token (web then chat documents) and the fit/held-out split."""

    concepts: list[str]
    carries: Bool[Tensor, "n_tokens n_concepts"]
    scored: Bool[Tensor, "n_tokens n_concepts"]
    fit: Bool[Tensor, " n_tokens"]
    """Tokens of even-numbered documents (they fit the directions; the odd ones are held out)."""
    chat: Bool[Tensor, " n_tokens"]
    """Tokens of chat documents (the others are web documents)."""

    def rows(self, source: str) -> Bool[Tensor, " n_tokens"]:
        """The tokens of ``source``: ``"all"``, ``"web"`` or ``"chat"`` documents.

        Raises:
            ValueError: another source.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        return {"all": torch.ones_like(self.chat), "web": ~self.chat, "chat": self.chat}[source]

    def select(self, rows: Bool[Tensor, " n_tokens"]) -> HeldOutConcepts:
        """The labels of the tokens in ``rows``."""
        return HeldOutConcepts(self.concepts, self.carries[rows], self.scored[rows], self.fit[rows], self.chat[rows])


def last_of_runs(flags: Bool[np.ndarray, " seq"]) -> Bool[np.ndarray, " seq"]:
    """The last position of every run of True (e.g. the last token of each end of prompt)."""
    flags = np.asarray(flags, dtype=bool)
    return flags & ~np.concatenate([flags[1:], [False]])


def held_out_concepts(held: HeldOut, settings: Exp6Settings) -> HeldOutConcepts | None:
    """:class:`HeldOutConcepts` of the held-out sample: every :data:`tiedlib.lab.CONCEPTS` plus :data:`NAME_GIVEN`,
    positional ones at the last end-of-prompt token only; None when the documents carry no labels (the paper pair)."""
    if held.docs is None or any(held.docs[s] is None for s in ("web", "chat")):
        return None
    docs = list(held.docs["web"][: settings.eval_docs]) + list(held.docs["chat"][: settings.eval_docs])
    h = held.acts.harvest
    concepts = list(lab.CONCEPTS)
    carries, scored = gt.positional_labels(docs, h.doc_index, h.position, concepts)
    named = {**gt.POSITIONAL_CONCEPTS, "name": "prompt"}
    c_name, s_name = gt.positional_labels(docs, h.doc_index, h.position, ["name"], positional=named)
    carries, scored = torch.cat([carries, c_name], 1), torch.cat([scored, s_name], 1)
    concepts.append(NAME_GIVEN)
    last = torch.from_numpy(np.concatenate([last_of_runs(d.labels[gt.END_OF_PROMPT]) for d in docs]))
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    last = last[torch.from_numpy(offsets[h.doc_index.numpy()] + h.position.numpy())]
    positional = [j for j, c in enumerate(concepts) if c in gt.POSITIONAL_CONCEPTS or c == NAME_GIVEN]
    scored[:, positional] &= last[:, None]
    n_web = len(held.sequences["web"][: settings.eval_docs])
    return HeldOutConcepts(concepts, carries, scored, h.doc_index % 2 == 0, h.doc_index >= n_web)


@torch.no_grad()
def triple_writes(model: Crosscoder, x: Float[Tensor, "n_tokens 2 d_model"], *, chunk_size: int = 4096
                  ) -> Float[Tensor, "n_tokens n_latents"]:  # fmt: skip
    """What each triple of a tied crosscoder writes into both models, ``c_base + c_chat``
    (:func:`tiedlib.analysis.ablation.coefficients`), on raw activations ``x``."""
    if model.cfg.n_groups != 3:
        raise ValueError(f"triple writes need a tied crosscoder, got {model.cfg.architecture!r}")
    device = model.W_dec.device
    return torch.cat([coefficients(model.encode(model.normalize(c.float().to(device)))).sum(1).cpu()
                      for c in x.split(chunk_size)])  # fmt: skip


def concept_triples(writes: Float[Tensor, "n_tokens n_latents"], carries: Bool[Tensor, "n_tokens n_concepts"],
                    scored: Bool[Tensor, "n_tokens n_concepts"], *, k: int, min_precision: float, min_purity: float
                    ) -> Bool[Tensor, "n_concepts n_latents"]:  # fmt: skip
    """Which triples carry each concept: by :func:`tiedlib.analysis.concepts.part_scores` of what each triple writes
    (:func:`triple_writes`), precision at ``k`` at least ``min_precision`` and purity over chance,
    ``(P(concept | fires) - chance) / (1 - chance)``, at least ``min_purity`` (the rule of
    :func:`tiedlib.analysis.novel.purity_match`, applied per concept: a triple may carry several)."""
    scores = gt.part_scores(writes, carries, scored, k)
    return purity_match(scores.precision, scores.p_fires, scores.chance[:, None], min_precision=min_precision,
                        min_purity=min_purity)[1]


def expected_share(truth: str) -> str:
    """What the ablation's timing share should be for a ground truth: ``">= 1/2"``, ``"< 1/2"`` or ``"none"``."""
    return {"timing": ">= 1/2", "timing (reuse)": ">= 1/2", "representation": "< 1/2"}.get(truth, "none")


def score_concepts(truth: pd.DataFrame, carriers: Bool[Tensor, "n_concepts n_latents"], concepts: Sequence[str],
                   costs: AblationCosts, min_active: int) -> pd.DataFrame:  # fmt: skip
    """Per concept of ``truth``: its triples (``triples``: those ``carriers`` marks for it, row ``concepts.index``,
    active on at least ``min_active`` rows), the
    ablation's ``timing_share`` over them, the ``expected`` share (:func:`expected_share`) and ``outcome``:
    ``agrees``, ``ablation disagrees``, ``no triple matches`` or ``ground truth not clear`` (the ``truth`` predicts
    no share)."""
    active = costs.n_active >= min_active
    out = {}
    for concept, row in truth.iterrows():
        chosen = carriers[list(concepts).index(concept)].cpu() & active
        share = costs.summary(chosen)["timing_share"] if chosen.any() else math.nan
        expected = expected_share(row["truth"])
        if expected == "none":
            outcome = "ground truth not clear"
        elif not chosen.any():
            outcome = "no triple matches"
        else:
            outcome = "agrees" if (share >= 0.5) == (expected == ">= 1/2") else "ablation disagrees"
        out[concept] = {"triples": chosen.nonzero().squeeze(1).tolist(), "timing_share": share, "expected": expected,
                        "outcome": outcome}  # fmt: skip
    columns = ["triples", "timing_share", "expected", "outcome"]
    return pd.DataFrame.from_dict(out, orient="index", columns=columns).rename_axis("concept")


def concept_table(crosscoders: Crosscoders, held: HeldOut, settings: Exp6Settings, source: str = "all",
                  rule: TruthRule | None = None) -> pd.DataFrame | None:  # fmt: skip
    """The ground truth (:func:`ground_truth`) and, per crosscoder of :data:`CROSSCODERS` (columns
    ``<name>: triples``, ``<name>: timing share``, ``<name>: outcome``), the matched triples and the ablation's timing
    share; one row per concept. Everything (directions, matches, ablation costs) reads the same held-out tokens, those
    of ``source`` (:data:`SOURCES`). None on a pair without concept labels."""
    labels = held_out_concepts(held, settings)
    if labels is None:
        return None
    rows = labels.rows(source)
    labels, x = labels.select(rows), held.acts.harvest.acts[rows]
    truth = ground_truth(x, labels.carries, labels.scored, labels.concepts, labels.fit, rule)
    return _scored(truth, crosscoders, x, labels, settings)


def _scored(truth: pd.DataFrame, crosscoders: Crosscoders, x: Float[Tensor, "n_tokens 2 d_model"],
            labels: HeldOutConcepts, settings: Exp6Settings) -> pd.DataFrame:  # fmt: skip
    """``truth`` with an ``expected share`` column and, per crosscoder, the :func:`score_concepts` of its triples
    matched and ablated on the tokens ``x`` (labelled by ``labels``)."""
    parts = [truth]
    for name in CROSSCODERS:
        model = crosscoders.models[name]
        costs = ablation_costs(model, model.normalize(x.float().to(model.W_dec.device)))
        k, precision, purity = settings.match_k, settings.match_precision, settings.match_purity
        carriers = concept_triples(triple_writes(model, x), labels.carries, labels.scored, k=k,
                                   min_precision=precision, min_purity=purity)  # fmt: skip
        scores = score_concepts(truth, carriers, labels.concepts, costs, settings.min_active)
        parts.append(scores.drop(columns="expected").rename(columns=lambda c, n=name: f"{n}: {c.replace('_', ' ')}"))
    out = pd.concat(parts, axis=1)
    out.insert(truth.shape[1], "expected share", [expected_share(t) for t in truth["truth"]])
    return out


def reuse_table(crosscoders: Crosscoders, held: HeldOut, settings: Exp6Settings, rule: ReuseRule | None = None
                ) -> pd.DataFrame | None:  # fmt: skip
    """The reuse ground truth (:func:`reuse_truth`, directions from all held-out documents' even half) and, per
    crosscoder of :data:`CROSSCODERS`, the concept's triples matched and ablated on the held-out *chat* documents
    (columns as in :func:`concept_table`); one row per concept. None on a pair without concept labels."""
    labels = held_out_concepts(held, settings)
    if labels is None:
        return None
    x = held.acts.harvest.acts
    truth = reuse_truth(x, labels.carries, labels.scored, labels.concepts, labels.fit, labels.chat, rule)
    rows = labels.rows("chat")
    return _scored(truth, crosscoders, x[rows], labels.select(rows), settings)


def concept_tables(crosscoders: Crosscoders, held: HeldOut, settings: Exp6Settings,
                   sources: Sequence[str] = ("all", "chat"), rule: TruthRule | None = None
                   ) -> dict[str, pd.DataFrame] | None:  # fmt: skip
    """:func:`concept_table` on each of ``sources``: all held-out tokens (the tokens the ablation's costs are summed
    over elsewhere) and the chat documents' (where the chat fine-tune acts). None on a pair without concept labels."""
    tables = {src: concept_table(crosscoders, held, settings, src, rule) for src in sources}
    return None if any(t is None for t in tables.values()) else tables


SHORT_COLUMNS = ("auroc_base", "auroc_chat", "cosine", "timing_signal", "truth")


def compact_table(tables: dict[str, pd.DataFrame] | None) -> pd.DataFrame | None:
    """The concepts with a clear ground truth (timing or representation) of every source, rows (source, concept):
    the ground truth's :data:`SHORT_COLUMNS` and, per crosscoder, the number of triples, the timing share and the
    outcome, rounded to 2 decimals for display."""
    if tables is None:
        return None
    parts = {}
    for src, table in tables.items():
        clear = table[table["truth"].isin(("timing", "representation"))]
        part = clear[list(SHORT_COLUMNS)].copy()
        for name in CROSSCODERS:
            part[f"{name}: triples"] = clear[f"{name}: triples"].map(len)
            part[f"{name}: timing share"] = clear[f"{name}: timing share"]
            part[f"{name}: outcome"] = clear[f"{name}: outcome"]
        parts[src] = part
    return pd.concat(parts, names=["tokens", "concept"]).round(2)


def _counts(table: pd.DataFrame, name: str) -> dict[str, int]:
    return {k: int(v) for k, v in table[f"{name}: outcome"].value_counts().items()}


def _concepts(table: pd.DataFrame, truth: str) -> str:
    rows = table[table["truth"] == truth]
    return ", ".join(f"{c} (cosine {r.cosine:.2f}, timing signal {r.timing_signal:+.2f})" for c, r in rows.iterrows())


def concept_findings(tables: dict[str, pd.DataFrame] | None, rule: TruthRule | None = None,
                     reuse: pd.DataFrame | None = None, reuse_rule: ReuseRule | None = None
                     ) -> dict[str, str]:  # fmt: skip
    """The headline numbers under ``exp6_concept_ablation_*`` keys (``tables`` from :func:`concept_tables`): the rule,
    and per source (``_<source>``) the ground truths and each crosscoder's outcomes; then the reuse ground truth's
    (``reuse`` from :func:`reuse_table`) ``exp6_concept_ablation_reuse_*`` keys (:func:`reuse_findings`)."""
    rule = rule or TruthRule()
    out = reuse_findings(reuse, reuse_rule)
    out["exp6_concept_ablation_rule"] = (
        f"per planted concept, difference-of-means directions in each model fitted on half the held-out documents: "
        f"representation when both read it (held-out AUROC >= {rule.min_auroc:g}) at base/chat cosine <= "
        f"{rule.changed_cos:g}; timing when the cosine is >= {rule.same_cos:g} and one model is active on >= "
        f"{rule.min_timing:.0%} more of its tokens (each at {rule.fpr:.0%} false positives); the ablation agrees when "
        f"its timing share over the concept's triples (precision at k and purity over chance) is >= 1/2 for timing, "
        f"< 1/2 for representation")  # fmt: skip
    if tables is None:
        out["exp6_concept_ablation_rule"] = "n/a (no planted concepts on this pair)"
        return out
    for src, table in tables.items():
        truths = table["truth"].value_counts()
        out[f"exp6_concept_ablation_truth_{src}"] = (
            f"{src} held-out tokens, {len(table)} planted concepts: "
            + ", ".join(f"{int(truths.get(t, 0))} {t}" for t in TRUTHS)
            + f"; timing: {_concepts(table, 'timing') or 'none'}; representation: "
            f"{_concepts(table, 'representation') or 'none'}")  # fmt: skip
        clear = table[table["truth"].isin(("timing", "representation"))]
        for name in CROSSCODERS:
            n = _counts(clear, name)
            detail = "; ".join(f"{c}: {len(r[f'{name}: triples'])} triples, timing share "
                               f"{_share(r[f'{name}: timing share'])} ({r[f'{name}: outcome']})"
                               for c, r in clear.iterrows())  # fmt: skip
            out[f"exp6_concept_ablation_{name}_{src}"] = (
                f"{src} held-out tokens: {n.get('agrees', 0)} agree, {n.get('ablation disagrees', 0)} disagree, "
                f"{n.get('no triple matches', 0)} without a matched triple, of {len(clear)} concepts with a clear "
                f"ground truth" + (f"; {detail}" if detail else ""))  # fmt: skip
    return out


def _share(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.0%}"


def concept_paragraph(tables: dict[str, pd.DataFrame] | None) -> str:
    """One sentence per source (Markdown) reading :func:`concept_tables` aloud, with its numbers filled in."""
    if tables is None:
        return "This pair has no planted concepts, so the ablation has no per-concept ground truth here."
    out = []
    for src, table in tables.items():
        clear = table[table["truth"].isin(("timing", "representation"))]
        parts = []
        for name in CROSSCODERS:
            n = _counts(clear, name)
            parts.append(f"`{name}` agrees on {n.get('agrees', 0)}, disagrees on {n.get('ablation disagrees', 0)} "
                         f"and has no matched triple for {n.get('no triple matches', 0)}")  # fmt: skip
        truths = table["truth"].value_counts()
        out.append(
            f"On {src} held-out tokens, {len(clear)} of {len(table)} planted concepts have a clear ground truth "
            f"({truths.get('timing', 0)} timing, {truths.get('representation', 0)} representation; "
            f"{truths.get('same', 0)} are the same in both models and {truths.get('unclear', 0)} unclear); of those, "
            + "; ".join(parts)
            + "."
        )
    return " ".join(out)


REUSE_SHORT = ("auroc_base", "auroc_chat", "cosine", "truth")


def compact_reuse(table: pd.DataFrame | None) -> pd.DataFrame | None:
    """The concepts :func:`reuse_table` calls ``timing (reuse)``: the ground truth's :data:`REUSE_SHORT` columns and,
    per crosscoder, the number of triples, the timing share and the outcome, rounded to 2 decimals for display."""
    if table is None:
        return None
    clear = table[table["truth"] == REUSE_TRUTHS[0]]
    part = clear[list(REUSE_SHORT)].copy()
    for name in CROSSCODERS:
        part[f"{name}: triples"] = clear[f"{name}: triples"].map(len)
        part[f"{name}: timing share"] = clear[f"{name}: timing share"]
        part[f"{name}: outcome"] = clear[f"{name}: outcome"]
    return part.round(2)


def reuse_findings(table: pd.DataFrame | None, rule: ReuseRule | None = None) -> dict[str, str]:
    """The reuse ground truth's headline numbers (``table`` from :func:`reuse_table`) under
    ``exp6_concept_ablation_reuse_{rule,truth,tied,recommended}`` keys."""
    rule = rule or ReuseRule()
    keys = [f"exp6_concept_ablation_reuse_{k}" for k in ("rule", "truth", *CROSSCODERS)]
    out = {keys[0]: (
        f"per planted concept, the base model's difference-of-means direction fitted on web documents, read on "
        f"held-out chat documents: timing (reuse) when the chat model reads it at AUROC >= {rule.min_auroc:g} and >= "
        f"base + {rule.min_gain:g} (the lab probe suite's reuse criterion) and it is at cosine >= {rule.min_cos:g} "
        f"with the chat model's own direction on chat documents; triples matched and ablated on the held-out chat "
        f"documents; the ablation agrees when its timing share over the concept's triples is >= 1/2")}  # fmt: skip
    if table is None:
        return {**out, **{k: "n/a (no planted concepts on this pair)" for k in keys[1:]}}
    truths = table["truth"].value_counts()
    reused = table[table["truth"] == REUSE_TRUTHS[0]]
    named = ", ".join(f"{c} (chat AUROC {r.auroc_chat:.2f}, base {r.auroc_base:.2f}, cosine {r.cosine:.2f})"
                      for c, r in reused.iterrows())  # fmt: skip
    out[keys[1]] = (f"{len(table)} planted concepts with web and chat tokens: "
                    + ", ".join(f"{int(truths.get(t, 0))} {t}" for t in REUSE_TRUTHS)
                    + f"; timing (reuse): {named or 'none'}")  # fmt: skip
    for key, name in zip(keys[2:], CROSSCODERS, strict=True):
        n = _counts(reused, name)
        detail = "; ".join(f"{c}: {len(r[f'{name}: triples'])} triples, timing share "
                           f"{_share(r[f'{name}: timing share'])} ({r[f'{name}: outcome']})"
                           for c, r in reused.iterrows())  # fmt: skip
        out[key] = (f"held-out chat tokens: {n.get('agrees', 0)} agree, {n.get('ablation disagrees', 0)} disagree, "
                    f"{n.get('no triple matches', 0)} without a matched triple, of {len(reused)} timing (reuse) "
                    f"concepts" + (f"; {detail}" if detail else ""))  # fmt: skip
    return out


def reuse_paragraph(table: pd.DataFrame | None) -> str:
    """:func:`reuse_table` read aloud (Markdown), with its numbers filled in."""
    if table is None:
        return "This pair has no planted concepts, so the reuse ground truth cannot be measured here."
    truths = table["truth"].value_counts()
    reused = table[table["truth"] == REUSE_TRUTHS[0]]
    parts = []
    for name in CROSSCODERS:
        n = _counts(reused, name)
        parts.append(f"`{name}` agrees on {n.get('agrees', 0)}, disagrees on {n.get('ablation disagrees', 0)} "
                     f"and has no matched triple for {n.get('no triple matches', 0)}")  # fmt: skip
    return (f"Read as reuse in a new context, {len(reused)} of {len(table)} planted concepts with web and chat tokens "
            f"are timing concepts (" + ", ".join(f"`{c}`" for c in reused.index) + "; "
            + ", ".join(f"{int(truths.get(t, 0))} {t}" for t in REUSE_TRUTHS[1:])
            + "); of those, " + "; ".join(parts) + ".")  # fmt: skip
