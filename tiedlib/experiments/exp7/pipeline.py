"""Notebook 07: an SAE baseline for model diffing against a tied crosscoder, and per-latent dashboards.

* :func:`train_models`: one sae_lens SAE per model and a tied crosscoder, on the same harvested training activations
  (in the crosscoder's units: each model scaled to mean norm ``sqrt(d_model)``);
* :func:`concept_tables`: AUROC of every SAE latent and every tied part as a detector of every planted lab concept
  (base side on held-out web data, chat side on held-out chat data);
* :func:`matches`: for each chat-side latent that detects a concept occurring in both datasets, the base-side latents
  retrieved for it (SAE: closest base SAE decoder vectors; tied: closest base-part decoder vectors, and its own
  triple's base part), scored by :mod:`tiedlib.analysis.sae_baseline`;
* :func:`dashboards`: static pages of the tied crosscoder's best-matching triples (:mod:`tiedlib.analysis.dashboards`),
  and the same numbers in Neuronpedia's feature-batch layout.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import Tensor

from tiedlib import lab
from tiedlib.activations.collect import collect_activations
from tiedlib.analysis import sae_baseline as sb
from tiedlib.analysis.concepts import concept_auroc, sample_labels
from tiedlib.analysis.contexts import TokenSample, eval_sample
from tiedlib.analysis.dashboards import (
    LatentDashboard,
    build_dashboards,
    export_dashboards,
    export_neuronpedia,
    latent_scaling_notes,
)
from tiedlib.analysis.latent_scaling import latent_scaling
from tiedlib.analysis.logit_lens import unembedding
from tiedlib.config import BASE, BASE_ONLY, CHAT, CHAT_ONLY, SHARED, CrosscoderConfig, TrainConfig
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.environment import quiet_notebook_logs
from tiedlib.pairs import ModelPair, is_lab, load_pair, training_sequences
from tiedlib.training import train_or_load

from .presets import Exp7Settings

SIDES = {"base": BASE, "chat": CHAT}


def load(settings: Exp7Settings) -> ModelPair:
    """The settings' model pair, without Hugging Face's weight-loading progress bars and the in-memory batches'
    per-epoch warning (process-wide: both would clutter the book)."""
    quiet_notebook_logs()
    return load_pair(settings.pair, layer=settings.layer, device=settings.device)


@dataclass
class Models:
    """The two SAEs and the tied crosscoder, trained on the same activations."""

    saes: dict[str, Any]
    """``{"base": ..., "chat": ...}`` sae_lens SAEs (eval mode), reading activations in the crosscoder's units."""
    tied: Crosscoder
    log: list[dict]
    norm_factors: Tensor
    """Per-model factors from raw activations to the units every model here reads (shape ``(2,)``)."""
    fits: dict[str, dict[str, float]]
    """SAE fit on the training activations: ``{"base"/"chat": {"fvu", "l0"}}`` (in memory) or empty (streamed)."""

    def fit_table(self) -> pd.DataFrame:
        """Fraction of variance unexplained and L0 (per model for the SAEs, per part count for the crosscoder)."""
        last = self.log[-1] if self.log else {}
        rows = {f"SAE ({m})": {"fvu": f.get("fvu", math.nan), "l0": f.get("l0", math.nan)}
                for m, f in self.fits.items()}  # fmt: skip
        for m in SIDES:
            ev = last.get(f"explained_variance_{m}", math.nan)
            rows[f"tied crosscoder ({m})"] = {"fvu": 1 - ev, "l0": last.get("l0", math.nan)}
        return pd.DataFrame(rows).T


def train_models(pair: ModelPair, settings: Exp7Settings, run_dir: str | Path) -> Models:
    """Train (or load from ``run_dir/tied``) the tied crosscoder and train both SAEs (sae_lens, in a few seconds at
    lab scale), all on ``settings.train_docs`` training documents (BOS dropped, template tokens kept)."""
    seqs = training_sequences(pair, settings.train_docs, web_fraction=settings.web_fraction, seq_len=settings.seq_len,
                              seed=settings.seed)  # fmt: skip
    acts = collect_activations(pair, seqs, batch_size=settings.model_batch_size, progress=False,
                               in_memory=True if is_lab(pair) else None,
                               train_batch_size=settings.batch_size)  # fmt: skip
    cfg = CrosscoderConfig(d_model=pair.d_model, n_latents=settings.n_latents, architecture="tied", eta=settings.eta)
    train_cfg = TrainConfig(n_steps=settings.n_steps, lr=settings.lr, l1_coeff=settings.l1_coeff, seed=settings.seed,
                            device=settings.device, log_every=settings.log_every, progress=True)  # fmt: skip
    tied, log = train_or_load(Path(run_dir) / "tied", cfg, train_cfg,
                              lambda: acts.batches(settings.batch_size, seed=settings.seed),
                              source=pair.fingerprint)  # fmt: skip
    saes, fits = {}, {}
    for name, m in SIDES.items():
        rows = (b[:, m] for b in acts.batches(settings.batch_size, seed=settings.seed + 1 + m))
        saes[name] = sb.train_sae(rows, d_sae=settings.d_sae, l1_coefficient=settings.sae_l1, n_steps=settings.n_steps,
                                  batch_size=settings.batch_size, lr=settings.sae_lr, seed=settings.seed,
                                  device=settings.device)  # fmt: skip
        if acts.in_memory:
            fits[name] = sb.sae_fit(saes[name], acts.normalized[:, m].to(settings.device))
    return Models(saes, tied.eval(), log, acts.norm_factors.cpu().float(), fits)


def held_out(pair: ModelPair, settings: Exp7Settings) -> dict[str, TokenSample]:
    """``{"web": ..., "chat": ...}``: ``eval_docs`` held-out documents of each source, raw (as harvested; lab pairs
    keep their labelled documents)."""
    return {source: eval_sample(pair, source, settings.eval_docs, seq_len=settings.seq_len,
                                model_batch_size=settings.model_batch_size) for source in ("web", "chat")}  # fmt: skip


@dataclass
class ConceptTables:
    """AUROC (concepts x latents) of each side of each method on its own data (base: web, chat: chat)."""

    concepts: list[str]
    in_both: list[str]
    """Concepts with positive tokens in both held-out samples (the ones a base-side twin can be seen detecting)."""
    sae: dict[str, Tensor]
    """``{"base": (n_concepts, d_sae) on web, "chat": (n_concepts, d_sae) on chat}``."""
    tied: dict[str, Tensor]
    """``{"base": base parts on web, "chat": chat parts on chat, "shared_web": shared parts on web, "shared_chat":
    shared parts on chat}``, each ``(n_concepts, n_latents)``."""


def concept_tables(models: Models, samples: dict[str, TokenSample], concepts: list[str] | None = None
                   ) -> ConceptTables | None:  # fmt: skip
    """The AUROC tables on the lab pair's planted concepts; None when the samples carry no labels (paper pair)."""
    if samples["web"].docs is None or samples["chat"].docs is None:
        return None
    concepts = list(lab.CONCEPTS if concepts is None else concepts)
    web, chat = samples["web"], samples["chat"]
    both = sb.concepts_in_both(sample_labels(web, concepts), sample_labels(chat, concepts), concepts)
    f = models.norm_factors.tolist()  # the samples are raw, the SAEs read the crosscoder's units
    sae = {"base": sb.sae_concept_auroc(models.saes["base"], web, BASE, concepts, factor=f[BASE]),
           "chat": sb.sae_concept_auroc(models.saes["chat"], chat, CHAT, concepts, factor=f[CHAT])}  # fmt: skip
    n = models.tied.cfg.n_latents
    on_web, on_chat = concept_auroc(models.tied, web, concepts), concept_auroc(models.tied, chat, concepts)
    tied = {"base": on_web[:, BASE_ONLY * n : (BASE_ONLY + 1) * n],
            "chat": on_chat[:, CHAT_ONLY * n : (CHAT_ONLY + 1) * n],
            "shared_web": on_web[:, SHARED * n : (SHARED + 1) * n],
            "shared_chat": on_chat[:, SHARED * n : (SHARED + 1) * n]}  # fmt: skip
    return ConceptTables(concepts, both, sae, tied)


def matches(models: Models, tables: ConceptTables, settings: Exp7Settings) -> list[sb.ConceptMatches]:
    """Precision-at-k matches of four methods: SAE decoder cosine, tied base-part decoder cosine, the tied triple's own
    base part (k = 1), and, for shared parts that detect a concept on chat data, the same shared part on web data
    (k = 1: a shared part decodes into both models, so it is its own base-side counterpart)."""
    thr, c = settings.auroc_threshold, tables.concepts
    out = []
    sae_q, sae_c = sb.select_queries(tables.sae["chat"], c, tables.in_both, thr)
    W_chat, W_base = models.saes["chat"].W_dec.detach().float().cpu(), models.saes["base"].W_dec.detach().float().cpu()
    nb = sb.decoder_neighbours(W_chat[sae_q], W_base, settings.k)
    out.append(sb.concept_matches("SAEs (decoder cosine)", sae_q, sae_c, nb.index, tables.sae["base"], c, thr))
    tied_q, tied_c = sb.select_queries(tables.tied["chat"], c, tables.in_both, thr)
    base_dec, chat_dec = sb.tied_part_decoders(models.tied)
    nb = sb.decoder_neighbours(chat_dec[tied_q], base_dec, settings.k)
    out.append(sb.concept_matches("tied (decoder cosine)", tied_q, tied_c, nb.index, tables.tied["base"], c, thr))
    out.append(sb.concept_matches("tied (own triple)", tied_q, tied_c, tied_q[:, None], tables.tied["base"], c, thr))
    if "shared_chat" in tables.tied:
        sh_q, sh_c = sb.select_queries(tables.tied["shared_chat"], c, tables.in_both, thr)
        out.append(sb.concept_matches("tied (shared part)", sh_q, sh_c, sh_q[:, None], tables.tied["shared_web"], c,
                                      thr))  # fmt: skip
    return out


def precision(found: list[sb.ConceptMatches], settings: Exp7Settings) -> pd.DataFrame:
    """One row per method: queries, precision at 1 and at ``k``, and chance."""
    return sb.precision_table(found, ks=(1, settings.k))


def dashboard_latents(found: list[sb.ConceptMatches], settings: Exp7Settings, n_latents: int) -> list[int]:
    """The tied triples to export: the chat-side queries whose own base part is a hit first, then the other queries,
    then the first triples (when there are fewer queries than ``n_dashboards``)."""
    own = next((m for m in found if m.method == "tied (own triple)"), None)
    picked: list[int] = []
    if own is not None:
        order = sorted(range(len(own.queries)), key=lambda j: (not bool(own.hits[j, 0]), j))
        picked = [int(own.queries[j]) for j in order]
    picked += [i for i in range(n_latents) if i not in picked]
    return picked[: settings.n_dashboards]


def dashboards(pair: ModelPair, models: Models, samples: dict[str, TokenSample], latents: list[int],
               settings: Exp7Settings, folder: str | Path) -> tuple[list[LatentDashboard], Path]:  # fmt: skip
    """Build and export the dashboards of ``latents`` (tied triples) into ``folder``; returns them and the index.

    Each page also carries the Latent Scaling betas of the triple's chat part over all held-out tokens (its own
    triple's other parts left out of the target, as in notebook 06). The same numbers are also written in the batch
    layout of Neuronpedia's feature uploads (:func:`~tiedlib.analysis.dashboards.export_neuronpedia`) into
    ``folder/neuronpedia``: one file per model, part decoding into it and dataset, with model ids the pair's Hub names
    (``<pair>-base`` / ``<pair>-chat`` for lab pairs)."""
    W_U = {name: unembedding(model) for name, model in (("base", pair.base), ("chat", pair.chat))}
    batches = itertools.chain.from_iterable(s.batches() for s in samples.values())
    ls = latent_scaling(models.tied, batches, latents, group="chat", exclude_triple=True)
    # Decoder vectors are in the crosscoder's units; a positive factor per model does not change which logits lead.
    pages = build_dashboards(models.tied, samples, latents, pair.tokenizer, unembeddings=W_U,
                             notes=latent_scaling_notes(ls), k=settings.top_k_contexts)  # fmt: skip
    index = export_dashboards(pages, folder, title=f"Tied crosscoder dashboards ({pair.name})",
                              meta={"pair": pair.name, "layer": pair.layer, "run_id": settings.run_id})  # fmt: skip
    hub = pair.config if isinstance(pair.config, dict) else {}
    model_ids = {m: str(hub.get(m, f"{pair.name}-{m}")).rsplit("/", 1)[-1] for m in SIDES}
    export_neuronpedia(pages, Path(folder) / "neuronpedia", model_ids=model_ids, layer=pair.layer,
                       set_name=f"tied-crosscoder-{settings.run_id}")  # fmt: skip
    return pages, index


def findings(settings: Exp7Settings, scale: str, table: pd.DataFrame, n_pages: int) -> dict[str, str]:
    """Headline numbers as text, keyed ``exp7_*`` (glued for the Findings page)."""

    def cell(method: str, col: str) -> str:
        if method not in table.index or col not in table.columns or math.isnan(float(table.loc[method, col])):
            return "n/a"
        return f"{float(table.loc[method, col]):.2f}"

    out = {"exp7_scale": scale, "exp7_pair": settings.pair, "exp7_k": str(settings.k), "exp7_dashboards": str(n_pages)}
    keys = {"SAEs (decoder cosine)": "sae", "tied (decoder cosine)": "tied_cosine", "tied (own triple)": "tied_own",
            "tied (shared part)": "tied_shared"}  # fmt: skip
    for method, key in keys.items():
        out[f"exp7_{key}_queries"] = str(int(table.loc[method, "queries"])) if method in table.index else "0"
        out[f"exp7_{key}_p1"] = cell(method, "precision@1")
        out[f"exp7_{key}_chance"] = cell(method, "chance")
        if key in ("sae", "tied_cosine"):
            out[f"exp7_{key}_pk"] = cell(method, f"precision@{settings.k}")
    return out


def summary(headline: dict[str, str]) -> str:
    """The findings as sentences."""
    k = headline["exp7_k"]
    return (
        f"Scale {headline['exp7_scale']} (pair {headline['exp7_pair']}). A chat SAE latent's closest base SAE decoder "
        f"vectors detect the same planted concept at precision@1 {headline['exp7_sae_p1']} and precision@{k} "
        f"{headline['exp7_sae_pk']} ({headline['exp7_sae_queries']} queries; chance {headline['exp7_sae_chance']}). "
        f"The tied crosscoder's own triple gives precision@1 {headline['exp7_tied_own_p1']}; its closest base parts "
        f"by decoder cosine {headline['exp7_tied_cosine_p1']} at 1 and {headline['exp7_tied_cosine_pk']} at {k} "
        f"({headline['exp7_tied_own_queries']} queries; chance {headline['exp7_tied_own_chance']}). "
        f"Shared parts that detect a concept on chat data detect it on web data too at rate "
        f"{headline['exp7_tied_shared_p1']} ({headline['exp7_tied_shared_queries']} queries). "
        f"{headline['exp7_dashboards']} dashboards exported."
    )
