"""Notebook 06: a standard and three tied crosscoders on the same activations, compared on the evaluations the field
expects. The crosscoders (:data:`ARCHITECTURES`): ``standard``; ``tied``, the write-up's (eta = 2); ``tied_small_eta``,
the write-up's loss at ``small_eta``; ``recommended``, the project's recommended tied configuration
(:func:`tiedlib.crosscoders.crosscoder.recommended_tied`: written-disagreement penalty at its eta).

* spliced CE/KL (:mod:`tiedlib.analysis.evaluate`) on held-out web and chat documents;
* Latent Scaling (:mod:`tiedlib.analysis.latent_scaling`) of the chat-only latents: the standard crosscoder's
  chat-exclusive latents (relative decoder norm above ``high``) and the tied crosscoder's chat parts;
* localisation (:mod:`tiedlib.analysis.localisation`): the share of those latents that fire mainly on chat-template
  tokens, and on assistant tokens.

Totally new chat latents (tied crosscoders only) are in :mod:`.novel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from tiedlib.activations.collect import collect_activations, training_data
from tiedlib.analysis.evaluate import spliced_losses
from tiedlib.analysis.firing import exclusive_latents
from tiedlib.analysis.latent_scaling import LatentScaling, latent_scaling
from tiedlib.analysis.localisation import Localisation, TokenRoles, localisation, token_roles, turn_token_ids
from tiedlib.config import CrosscoderConfig, TrainConfig
from tiedlib.crosscoders.crosscoder import RECOMMENDED_TIED_ETA, Crosscoder, recommended_tied_config
from tiedlib.environment import quiet_notebook_logs
from tiedlib.pairs import ModelPair, heldout_sequences, is_lab, load_pair, template_ids, training_sequences
from tiedlib.training import train_or_load

from .presets import Exp6Settings

ARCHITECTURES = ("standard", "tied", "tied_small_eta", "recommended")
"""The crosscoders of notebook 06, in table order (see :func:`crosscoder_config`)."""
TIED = ARCHITECTURES[1:]
VERDICTS = ("chat-specific", "complete shrinkage", "latent decoupling", "both")


def load(settings: Exp6Settings) -> ModelPair:
    """The settings' model pair, without Hugging Face's weight-loading progress bars (process-wide, as they would
    clutter the book) and without the in-memory batches' per-epoch warning (small scales repeat their rows)."""
    quiet_notebook_logs()
    return load_pair(settings.pair, layer=settings.layer, device=settings.device)


def crosscoder_config(name: str, settings: Exp6Settings, d_model: int) -> CrosscoderConfig:
    """The config of crosscoder ``name`` (:data:`ARCHITECTURES`): ``settings.n_latents`` latents (standard) or
    triples (tied). ``recommended`` is :func:`~tiedlib.crosscoders.crosscoder.recommended_tied_config`.

    Raises:
        ValueError: ``name`` is not in :data:`ARCHITECTURES`.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"crosscoder must be one of {ARCHITECTURES}, got {name!r}")
    if name == "recommended":
        return recommended_tied_config(d_model, settings.n_latents)
    fields = {"standard": {"architecture": "standard"}, "tied": {"architecture": "tied", "eta": settings.eta},
              "tied_small_eta": {"architecture": "tied", "eta": settings.small_eta}}[name]
    return CrosscoderConfig(d_model=d_model, n_latents=settings.n_latents, **fields)


@dataclass
class Crosscoders:
    """The crosscoders (trained on the same activations) and their training logs."""

    models: dict[str, Crosscoder]
    """``{name: crosscoder}`` for the names of :data:`ARCHITECTURES`, in eval mode."""
    logs: dict[str, list[dict]]
    n_train_sequences: int

    def fit_table(self) -> pd.DataFrame:
        """Explained variance (all, base, chat) and L0 at the last logged step, one row per crosscoder."""
        keys = ("explained_variance", "explained_variance_base", "explained_variance_chat", "l0")
        return pd.DataFrame({name: {k: log[-1].get(k, math.nan) if log else math.nan for k in keys}
                             for name, log in self.logs.items()}).T  # fmt: skip


def train_crosscoders(pair: ModelPair, settings: Exp6Settings, run_dir: str | Path) -> Crosscoders:
    """Train (or load from ``run_dir/<name>``) every crosscoder of :data:`ARCHITECTURES` on ``settings.train_docs``
    documents of the pair's training mix (BOS dropped, template tokens kept, as in the public runs), with the same
    data, steps and optimiser settings. The activations are harvested once, on the first training that needs them;
    loading finished runs harvests nothing. Each run folder records the pair's fingerprint, and a run trained on another
    pair is refused (:func:`tiedlib.training.train_or_load`)."""
    seqs = training_sequences(pair, settings.train_docs, web_fraction=settings.web_fraction, seq_len=settings.seq_len,
                              seed=settings.seed)  # fmt: skip
    make_data = training_data(pair, seqs, batch_size=settings.batch_size, model_batch_size=settings.model_batch_size,
                              in_memory=is_lab(pair), seed=settings.seed)  # fmt: skip
    train_cfg = TrainConfig(n_steps=settings.n_steps, lr=settings.lr, l1_coeff=settings.l1_coeff, seed=settings.seed,
                            device=settings.device, log_every=settings.log_every, progress=True)  # fmt: skip
    models, logs = {}, {}
    for arch in ARCHITECTURES:
        cfg = crosscoder_config(arch, settings, pair.d_model)
        model, log = train_or_load(Path(run_dir) / arch, cfg, train_cfg, make_data, source=pair.fingerprint)
        models[arch], logs[arch] = model.eval(), log
    return Crosscoders(models, logs, len(seqs))


@dataclass
class HeldOut:
    """Held-out web and chat documents, their activations and token roles."""

    sequences: dict[str, list[list[int]]]
    """``{"web": [...], "chat": [...]}`` token ids (BOS first), ``eval_docs`` of each."""
    acts: Any
    """:class:`~tiedlib.activations.collect.PairActivations` of web then chat (raw harvest and the norm factors)."""
    roles: TokenRoles
    docs: dict[str, Sequence[Any] | None] | None = None
    """``{"web": [...], "chat": [...]}``: the lab documents (with concept labels) of ``sequences``; None values on the
    paper pair (no labels)."""

    def ce_sequences(self, n: int) -> dict[str, list[list[int]]]:
        """The first ``n`` documents of each source (the spliced CE/KL sample)."""
        return {source: seqs[:n] for source, seqs in self.sequences.items()}


def held_out(pair: ModelPair, settings: Exp6Settings, norm_factors: Sequence[float] | Tensor) -> HeldOut:
    """Harvest ``settings.eval_docs`` held-out web and chat documents (BOS dropped, template tokens kept), in the
    crosscoders' units (``norm_factors``), with each token's template/assistant role."""
    n = max(settings.eval_docs, settings.ce_docs)
    drawn = {src: heldout_sequences(pair, src, n, seq_len=settings.seq_len) for src in ("web", "chat")}
    seqs = {src: [list(s) for s in got[0]] for src, got in drawn.items()}
    sample = seqs["web"][: settings.eval_docs] + seqs["chat"][: settings.eval_docs]
    acts = collect_activations(pair, sample, norm_factors=torch.as_tensor(norm_factors, dtype=torch.float32),
                               batch_size=settings.model_batch_size, progress=False, in_memory=True)  # fmt: skip
    roles = token_roles(acts.harvest, sample, template_ids(pair), turn_token_ids(pair.tokenizer))
    return HeldOut(seqs, acts, roles, {src: got[1] for src, got in drawn.items()})


def spliced_evaluation(pair: ModelPair, crosscoders: Crosscoders, held: HeldOut, settings: Exp6Settings
                       ) -> pd.DataFrame:  # fmt: skip
    """Spliced CE/KL of each crosscoder on ``ce_docs`` web and chat documents; rows (crosscoder, data, model)."""
    rows = []
    for name, model in crosscoders.models.items():
        for source, seqs in held.ce_sequences(settings.ce_docs).items():
            for which, loss in spliced_losses(pair, seqs, model, batch_size=settings.ce_batch_size).items():
                rows.append({"crosscoder": name, "data": source, "model": which, **loss.as_dict()})
    cols = ["ce_clean", "ce_spliced", "ce_zero", "recovered", "kl", "n_predictions"]
    return pd.DataFrame(rows).set_index(["crosscoder", "data", "model"])[cols]


def chat_only_candidates(crosscoders: Crosscoders, settings: Exp6Settings) -> dict[str, tuple[Tensor, str | None]]:
    """Latents and group per crosscoder: a standard one's chat-exclusive latents (relative decoder norm above ``high``)
    and every chat part of a tied one (each decodes into the chat model only)."""
    return {name: (torch.arange(m.cfg.n_latents), "chat") if m.cfg.n_groups == 3
            else (exclusive_latents(m, "chat", settings.high), None)
            for name, m in crosscoders.models.items()}  # fmt: skip


def chat_latent_scaling(crosscoders: Crosscoders, held: HeldOut, settings: Exp6Settings) -> dict[str, LatentScaling]:
    """Latent Scaling of each crosscoder's chat-only candidates over the held-out tokens, keeping those that fire on
    at least ``min_active`` tokens. For the tied crosscoder the other parts of a latent's own triple are left out of
    the reconstruction target (``exclude_triple``): a base copy there is the tie the architecture is built for, so
    Latent Decoupling counts copies in other triples only."""
    out = {}
    for name, (latents, group) in chat_only_candidates(crosscoders, settings).items():
        ls = latent_scaling(crosscoders.models[name], [held.acts.harvest.acts], latents, group=group,
                            exclude_triple=group is not None)  # fmt: skip
        out[name] = ls.select(ls.n_active >= settings.min_active)
    return out


def chat_localisation(crosscoders: Crosscoders, held: HeldOut, scaling: dict[str, LatentScaling]
                      ) -> dict[str, Localisation]:  # fmt: skip
    """Template and assistant fractions of the activation mass of the latents Latent Scaling kept."""
    return {name: localisation(crosscoders.models[name], held.acts.harvest.acts, held.roles, ls.latents,
                               group=ls.group) for name, ls in scaling.items()}  # fmt: skip


def scaling_table(scaling: dict[str, LatentScaling], threshold: float) -> pd.DataFrame:
    """Per crosscoder: chat-only latents kept, share of each verdict, median ratios."""
    rows = {}
    for name, ls in scaling.items():
        verdicts = pd.Series(ls.verdicts(threshold), dtype=object)
        n = len(verdicts)
        rows[name] = {
            "chat-only latents": n,
            **{v: float((verdicts == v).mean()) if n else math.nan for v in VERDICTS},
            "median nu_error": float(ls.nu_error.nanmedian()) if n else math.nan,
            "median nu_reconstruction": float(ls.nu_reconstruction.nanmedian()) if n else math.nan,
        }
    return pd.DataFrame(rows).T  # fmt: skip


def localisation_table(loc: dict[str, Localisation], threshold: float) -> pd.DataFrame:
    """Per crosscoder: latents, share firing mainly on template tokens, on assistant tokens, median fractions."""
    rows = {}
    for name, lo in loc.items():
        n = int(lo.latents.numel())
        rows[name] = {
            "chat-only latents": n,
            "mainly template": lo.share_mainly("template", threshold),
            "mainly assistant": lo.share_mainly("assistant", threshold),
            "median template fraction": float(lo.template_fraction.nanmedian()) if n else math.nan,
            "median assistant fraction": float(lo.assistant_fraction.nanmedian()) if n else math.nan,
        }
    return pd.DataFrame(rows).T  # fmt: skip


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.0%}"


def findings(settings: Exp6Settings, scale: str, crosscoders: Crosscoders, ce: pd.DataFrame, scaling: pd.DataFrame,
             loc: pd.DataFrame) -> dict[str, str]:  # fmt: skip
    """Every headline number of notebook 06, formatted, under a stable ``exp6_*`` key (the tables are those of
    :func:`spliced_evaluation`, :func:`scaling_table` and :func:`localisation_table`)."""
    out = {"exp6_setup": f"{scale} scale, {settings.pair} pair, standard crosscoder with {settings.n_latents} latents "
                         f"and tied crosscoders with {settings.n_latents} x 3 (write-up's loss at eta {settings.eta:g} "
                         f"and {settings.small_eta:g}, recommended at eta {RECOMMENDED_TIED_ETA:g}), "
                         f"{settings.n_steps} steps each"}  # fmt: skip
    for name in dict.fromkeys(ce.index.get_level_values(0)):  # the crosscoders of the tables, in their order
        parts = [
            f"{model} on {data}: recovered {row.recovered:.4f}, KL {row.kl:.4f}"
            for (data, model), row in ce.loc[name].iterrows()
            if data == ("chat" if model == "chat" else "web")
        ]
        out[f"exp6_ce_{name}"] = "; ".join(parts)  # fmt: skip
        s, lo = scaling.loc[name], loc.loc[name]
        out[f"exp6_scaling_{name}"] = (
            f"{int(s['chat-only latents'])} chat-only latents: {_pct(s['chat-specific'])} chat-specific, "
            f"{_pct(s['complete shrinkage'])} complete shrinkage, {_pct(s['latent decoupling'])} latent decoupling, "
            f"{_pct(s['both'])} both (threshold {settings.nu_threshold:g})"
        )
        out[f"exp6_template_{name}"] = (f"{_pct(lo['mainly template'])} fire mainly on template tokens, "
                                        f"{_pct(lo['mainly assistant'])} mainly on assistant tokens")  # fmt: skip
    return out


def summary(findings: dict[str, str]) -> str:
    """The findings as lines (``key: text``)."""
    return "\n".join(f"{k.removeprefix('exp6_')}: {v}" for k, v in findings.items())
