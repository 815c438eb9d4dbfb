"""Notebook 06, "totally new chat latents" (the write-up's next step 8) in each tied crosscoder.

A triple holds a *new chat latent* when, on the held-out chat documents, its chat part fires on at least
``new_min_fires`` tokens and at most ``new_max_overlap`` of those firings coincide with its shared part firing
(:class:`tiedlib.analysis.novel.NewChatLatents`). On lab pairs each new chat latent's chat part is matched to the
planted concept it picks out best on chat data (:func:`tiedlib.analysis.novel.match_concepts`: precision at
``match_k`` and purity of P(concept | part fires) over the concept's chance rate, at each concept's positions), and
the matches to *chat-only* concepts are counted.

Chat-only concepts are read from the data, not listed by hand: the concepts labelled somewhere in the held-out chat
documents and nowhere in the held-out web documents (:func:`tiedlib.analysis.concepts.source_only_concepts`). On the
``tiny`` lab pair (v5, whose web transcripts also use the chat template's turn markers, as v4's did) these are the
chat corpus's ``code_question``, ``greeting`` and ``offer_help`` (the book build's glued rule lists them); on
``tiny-v1`` (120 held-out documents per source, and the same with 400) the template's ``turn_marker``,
``user_turn``, ``model_turn`` and ``end_of_turn`` count too. ``smoke`` reads 12 documents per source, few enough
that some concepts of both sources (e.g. ``disclaimer``) miss its web sample and count too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib import lab
from tiedlib.analysis import concepts as gt
from tiedlib.analysis.contexts import latent_activations, token_labels
from tiedlib.analysis.novel import NewChatLatents, match_concepts, new_chat_latents
from tiedlib.config import CHAT_ONLY

from .pipeline import Crosscoders, HeldOut
from .presets import Exp6Settings


def chat_rows(held: HeldOut, settings: Exp6Settings) -> Bool[Tensor, " n_tokens"]:
    """Which held-out activation rows come from chat documents (the sample is web documents, then chat ones)."""
    n_web = len(held.sequences["web"][: settings.eval_docs])
    return held.acts.harvest.doc_index >= n_web


def chat_acts(held: HeldOut, settings: Exp6Settings) -> Float[Tensor, "n_chat_tokens 2 d_model"]:
    """Raw paired activations of the held-out chat tokens."""
    return held.acts.harvest.acts[chat_rows(held, settings)]


def find_new(crosscoders: Crosscoders, held: HeldOut, settings: Exp6Settings) -> dict[str, NewChatLatents]:
    """:class:`~tiedlib.analysis.novel.NewChatLatents` of every tied crosscoder on the held-out chat tokens."""
    x = chat_acts(held, settings)
    return {name: new_chat_latents(m, [x], min_fires=settings.new_min_fires, max_overlap=settings.new_max_overlap)
            for name, m in crosscoders.models.items() if m.cfg.n_groups == 3}  # fmt: skip


@dataclass
class ChatLabels:
    """Concept labels of the held-out chat tokens at each concept's positions, and the chat-only concepts."""

    concepts: list[str]
    carries: Bool[Tensor, "n_chat_tokens n_concepts"]
    scored: Bool[Tensor, "n_chat_tokens n_concepts"]
    chat_only: list[str]
    """Concepts labelled in the held-out chat documents and never in the held-out web ones."""


def chat_labels(held: HeldOut, settings: Exp6Settings) -> ChatLabels | None:
    """The lab concept labels of the held-out sample (every :data:`tiedlib.lab.CONCEPTS`); None when the held-out
    documents carry no labels (the paper pair)."""
    if held.docs is None or any(held.docs[s] is None for s in ("web", "chat")):
        return None
    docs = list(held.docs["web"][: settings.eval_docs]) + list(held.docs["chat"][: settings.eval_docs])
    h, chat, concepts = held.acts.harvest, chat_rows(held, settings), list(lab.CONCEPTS)
    labels = token_labels(docs, h.doc_index, h.position, concepts)
    chat_only = gt.source_only_concepts(labels[chat], labels[~chat], concepts)
    carries, scored = gt.positional_labels(docs, h.doc_index[chat], h.position[chat], concepts)
    return ChatLabels(concepts, carries, scored, chat_only)


def concept_matches(crosscoders: Crosscoders, held: HeldOut, news: dict[str, NewChatLatents],
                    labels: ChatLabels | None, settings: Exp6Settings) -> dict[str, pd.DataFrame] | None:  # fmt: skip
    """Per tied crosscoder, one row per new chat latent (index: triple): its best planted concept on chat data
    (:data:`tiedlib.analysis.novel.MATCH_COLUMNS`), with its chat-part firings and overlap. None without labels
    (``labels`` from :func:`chat_labels`)."""
    if labels is None:
        return None
    x, out = chat_acts(held, settings), {}
    for name, nc in news.items():
        latents = nc.latents.tolist()
        acts = latent_activations(crosscoders.models[name], [x], [(CHAT_ONLY, i) for i in latents])
        table = match_concepts(acts, labels.carries, labels.scored, labels.concepts, k=settings.match_k,
                               min_precision=settings.match_precision, min_purity=settings.match_purity,
                               chat_only=labels.chat_only, latents=latents)  # fmt: skip
        table.insert(0, "overlap", nc.overlap_fraction[latents].numpy())
        table.insert(0, "chat_fires", nc.chat_fires[latents].numpy())
        out[name] = table
    return out


def new_latent_table(crosscoders: Crosscoders, news: dict[str, NewChatLatents],
                     matches: dict[str, pd.DataFrame] | None) -> pd.DataFrame:  # fmt: skip
    """Per tied crosscoder: its eta and penalty, chat parts judged (firing often enough), those whose shared part
    fires on more tokens (the write-up's observation), new chat latents and their share of the judged ones, and (lab
    pairs; NaN otherwise) how many match a planted concept and a chat-only one."""
    rows = {}
    for name, nc in news.items():
        cfg, judged, new = crosscoders.models[name].cfg, int(nc.firing.sum()), int(nc.is_new.sum())
        m = None if matches is None else matches[name]
        rows[name] = {
            "eta": cfg.eta, "penalty": cfg.shared_penalty, "chat parts judged": judged,
            "shared fires more": int(nc.shared_dominates.sum()), "new chat latents": new,
            "share new": new / judged if judged else math.nan,
            "median overlap": float(nc.overlap_fraction[nc.firing].nanmedian()) if judged else math.nan,
            "match a concept": math.nan if m is None else int(m["matched"].sum()),
            "match a chat-only concept": math.nan if m is None else int(m["chat_only"].sum()),
        }  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index")


def concept_counts(matches: dict[str, pd.DataFrame], chat_only: list[str] | None = None) -> pd.DataFrame:
    """Matched new chat latents per concept (rows, chat-only ones marked ``*``) and crosscoder (columns)."""
    counts = {name: m.loc[m["matched"].astype(bool), "concept"].value_counts() for name, m in matches.items()}
    table = pd.DataFrame(counts).fillna(0).astype(int)
    table.index = [f"{c} *" if chat_only and c in chat_only else c for c in table.index]
    return table.sort_index()


def _count(v: float) -> str:
    return "n/a" if isinstance(v, float) and math.isnan(v) else str(int(v))


def new_findings(table: pd.DataFrame, settings: Exp6Settings, chat_only: list[str] | None) -> dict[str, str]:
    """The headline numbers under ``exp6_new_*`` keys: the rule, and per tied crosscoder the new chat latents and
    their matches (the table is :func:`new_latent_table`)."""
    out = {"exp6_new_rule": f"chat part fires on at least {settings.new_min_fires} held-out chat tokens, at most "
                            f"{settings.new_max_overlap:.0%} of them with the triple's shared part firing; match: "
                            f"precision at {settings.match_k} >= {settings.match_precision:g} and purity over chance "
                            f">= {settings.match_purity:g}; chat-only concepts: "
                            f"{', '.join(chat_only) if chat_only else 'n/a (no labels)'}"}  # fmt: skip
    for name, row in table.iterrows():
        out[f"exp6_new_{name}"] = (f"{_count(row['new chat latents'])} new chat latents of "
                                   f"{_count(row['chat parts judged'])} chat parts judged (eta {row['eta']:g}, "
                                   f"{row['penalty']} penalty); {_count(row['match a concept'])} match a planted "
                                   f"concept, {_count(row['match a chat-only concept'])} a chat-only one")  # fmt: skip
    return out


def new_latent_paragraph(table: pd.DataFrame, settings: Exp6Settings) -> str:
    """One paragraph (Markdown) reading :func:`new_latent_table` aloud, with its numbers filled in."""
    parts = [f"`{name}` (eta {row['eta']:g}) has {_count(row['new chat latents'])} of "
             f"{_count(row['chat parts judged'])} judged chat parts that are new, "
             f"{_count(row['match a chat-only concept'])} of them matching a chat-only concept"
             for name, row in table.iterrows()]  # fmt: skip
    if not parts:
        return "No tied crosscoder was trained."
    judged = table["chat parts judged"].astype(float)
    dominated = (table["shared fires more"].astype(float) / judged.where(judged > 0)).fillna(0)
    return (f"Of the tied crosscoders, {'; '.join(parts)}. For the write-up's observation, the share of judged chat "
            f"parts whose shared part fires on more tokens is {', '.join(f'{v:.0%}' for v in dominated)} "
            f"(in the same order). A chat part counts as new when at most {settings.new_max_overlap:.0%} of its "
            f"firings coincide with its shared part's.")  # fmt: skip


def top_matches(matches: dict[str, pd.DataFrame], n: int = 5) -> pd.DataFrame:
    """The ``n`` matched new chat latents of each crosscoder with the highest precision (then purity)."""
    parts = {name: m[m["matched"].astype(bool)].sort_values(["precision", "purity"], ascending=False).head(n)
             for name, m in matches.items()}  # fmt: skip
    parts = {k: v for k, v in parts.items() if len(v)}
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, names=["crosscoder", "triple"])

