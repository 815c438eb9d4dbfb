"""SAE baseline for model diffing (the write-up's next step 5): one SAE per model, matched by decoder cosine.

Instead of a crosscoder, train one sparse autoencoder on the base model's activations and one on the chat model's
(sae_lens ``StandardTrainingSAE``, :func:`train_sae`). A chat SAE latent's base-model counterpart is then searched
among the base SAE latents whose decoder vectors have the largest cosine with its own (:func:`decoder_neighbours`).
A tied crosscoder answers the same question by construction: the base part of the chat part's own triple.

On the lab pair both answers can be scored against planted concepts (:func:`concept_matches`): a chat-side latent
that detects a concept on chat data (AUROC at least ``threshold``) is a *query*; a retrieved base-side latent is a
*hit* when it detects the same concept on web data (AUROC at least ``threshold``). Precision at ``k`` is the share of
hits among the first ``k`` retrieved latents, averaged over queries; *chance* is the share of all base-side latents
that detect the query's concept (what a random pick would score).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from unittest import mock

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tiedlib.analysis.concepts import sample_labels
from tiedlib.analysis.contexts import TokenSample
from tiedlib.analysis.firing import auroc
from tiedlib.config import BASE, CHAT
from tiedlib.crosscoders.crosscoder import Crosscoder


# ---- training and reading SAEs -----------------------------------------------------------------------------------
def train_sae(
    acts: Float[Tensor, "n_tokens d_in"] | Iterator[Float[Tensor, "batch d_in"]], *, d_sae: int, l1_coefficient: float,
    n_steps: int, batch_size: int = 256, lr: float = 1e-3, seed: int = 0, device: str = "cpu", progress: bool = False,
) -> Any:
    """Train a sae_lens ``StandardTrainingSAE`` with sae_lens's ``SAETrainer`` (offline, no model needed).

    ``acts`` is either an in-memory ``(n_tokens, d_in)`` tensor, reshuffled every epoch, or an endless iterator of
    ``(batch_size, d_in)`` batches (e.g. one model's rows of ``PairActivations.batches``, streamed or not). sae_lens
    scales the inputs to mean norm ``sqrt(d_in)`` (``expected_average_only_in``) and folds that scale back into the
    weights when training ends, so the returned SAE reads activations in the units it was given; the L1 coefficient
    warms up over the first 10% of steps and the learning rate decays over the last 20% (to a tenth). sae_lens's
    progress bars are shown only when ``progress`` is true.

    Returns:
        The trained ``StandardTrainingSAE`` in eval mode (``encode``: ``(n, d_in) -> (n, d_sae)``; ``W_dec``:
        ``(d_sae, d_in)``).
    """
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training import activation_scaler, sae_trainer
    from sae_lens.training.sae_trainer import SAETrainer
    from tqdm.auto import tqdm

    if min(d_sae, n_steps, batch_size) < 1 or l1_coefficient < 0:
        raise ValueError(f"need d_sae, n_steps, batch_size >= 1 and l1_coefficient >= 0, got {d_sae}, {n_steps}, "
                         f"{batch_size}, {l1_coefficient}")  # fmt: skip
    if isinstance(acts, Tensor):
        if acts.ndim != 2 or acts.shape[0] < batch_size:
            raise ValueError(f"need a (n_tokens >= batch_size={batch_size}, d_in) tensor, got {tuple(acts.shape)}")
        data = _shuffled(acts.float(), batch_size, seed)
    else:
        data = _checked(acts, batch_size)
    first = next(data)
    torch.manual_seed(seed)
    cfg = StandardTrainingSAEConfig(d_in=first.shape[1], d_sae=d_sae, l1_coefficient=l1_coefficient,
                                    l1_warm_up_steps=n_steps // 10, device=device,
                                    normalize_activations="expected_average_only_in")  # fmt: skip
    trainer_cfg = SAETrainerConfig(total_training_samples=n_steps * batch_size, train_batch_size_samples=batch_size,
                                   lr=lr, lr_end=lr / 10, lr_warm_up_steps=0, lr_decay_steps=n_steps // 5,
                                   device=device, n_batches_for_norm_estimate=min(20, n_steps))  # fmt: skip
    sae = StandardTrainingSAE(cfg)
    trainer = SAETrainer(trainer_cfg, sae, data_provider=itertools.chain([first], data))
    bar = functools.partial(tqdm, disable=not progress)
    with mock.patch.object(sae_trainer, "tqdm", bar), mock.patch.object(activation_scaler, "tqdm", bar):
        return trainer.fit().eval()


def _checked(batches: Iterator[Tensor], batch_size: int) -> Iterator[Tensor]:
    for b in batches:
        if b.ndim != 2 or b.shape[0] != batch_size:
            raise ValueError(f"expected batches of shape ({batch_size}, d_in), got {tuple(b.shape)}")
        yield b.float()


def _shuffled(acts: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(acts.shape[0], generator=gen)
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            yield acts[perm[i : i + batch_size]]


@torch.no_grad()
def sae_activations(sae: Any, acts: Float[Tensor, "n_tokens d_in"], *, chunk_size: int = 8192
                    ) -> Float[Tensor, "n_tokens d_sae"]:  # fmt: skip
    """``sae.encode`` of every row of ``acts``, ``chunk_size`` rows at a time (on CPU)."""
    dtype = next(sae.parameters()).dtype
    parts = [sae.encode(acts[s : s + chunk_size].to(device=sae.device, dtype=dtype)).float().cpu()
             for s in range(0, acts.shape[0], chunk_size)]  # fmt: skip
    return torch.cat(parts) if parts else torch.zeros(0, sae.cfg.d_sae)


@torch.no_grad()
def sae_fit(sae: Any, acts: Float[Tensor, "n_tokens d_in"], *, chunk_size: int = 8192) -> dict[str, float]:
    """Fraction of variance unexplained (``sum ||x - x_hat||^2 / sum ||x - mean||^2``) and mean L0 of ``sae``."""
    se, l0 = 0.0, 0.0
    for s in range(0, acts.shape[0], chunk_size):
        x = acts[s : s + chunk_size].to(sae.device).float()
        f = sae.encode(x)
        se += (sae.decode(f) - x).pow(2).sum().item()
        l0 += (f > 0).sum().item()
    var = (acts - acts.mean(0)).pow(2).sum().item()
    return {"fvu": se / var, "l0": l0 / max(acts.shape[0], 1)}


def sae_concept_auroc(sae: Any, sample: TokenSample, model_index: int, concepts: Sequence[str], *,
                      factor: float = 1.0) -> Float[Tensor, "n_concepts d_sae"]:  # fmt: skip
    """AUROC of every latent of ``sae`` (trained on model ``model_index``'s activations times ``factor``, e.g. a
    crosscoder's normalisation factor) as a detector of every concept on a labelled lab sample of raw activations
    (:func:`tiedlib.analysis.concepts.sample_labels`)."""
    labels = sample_labels(sample, concepts)
    return auroc(sae_activations(sae, sample.acts[:, model_index] * factor), labels)


def concepts_in_both(labels_web: Bool[Tensor, "n_web n_concepts"], labels_chat: Bool[Tensor, "n_chat n_concepts"],
                     concepts: Sequence[str]) -> list[str]:  # fmt: skip
    """Concepts that occur in both samples: the only ones whose chat-side detector can have a base-side twin that is
    seen detecting them on web data."""
    both = labels_web.any(dim=0) & labels_chat.any(dim=0)
    return [c for c, b in zip(concepts, both.tolist(), strict=True) if b]


def tied_part_decoders(model: Crosscoder) -> tuple[Float[Tensor, "n d_model"], Float[Tensor, "n d_model"]]:
    """``(base, chat)`` decoder vectors of a tied crosscoder's base and chat parts: the base part of triple ``i``
    decodes into the base model only, along ``W_dec[i, BASE]``; its chat part into the chat model along
    ``W_dec[i, CHAT]``."""
    if model.cfg.n_groups != 3:
        raise ValueError(f"need a tied crosscoder (3 groups), got architecture {model.cfg.architecture!r}")
    W = model.W_dec.detach().float().cpu()
    return W[:, BASE], W[:, CHAT]


# ---- matching by decoder cosine ----------------------------------------------------------------------------------
class Neighbours(NamedTuple):
    index: Int[Tensor, "n_queries k"]
    """Key rows, largest cosine first."""
    cosine: Float[Tensor, "n_queries k"]


@torch.no_grad()
def decoder_neighbours(queries: Float[Tensor, "n_queries d"], keys: Float[Tensor, "n_keys d"], k: int) -> Neighbours:
    """The ``k`` keys with the largest cosine with each query (e.g. base SAE decoder rows for chat SAE rows)."""
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must be (n, d) with one d")
    if not 1 <= k <= keys.shape[0]:
        raise ValueError(f"k must be in [1, {keys.shape[0]}] (the number of keys), got {k}")
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    kk = torch.nn.functional.normalize(keys.float(), dim=-1)
    cos, idx = (q @ kk.T).topk(k, dim=1)
    return Neighbours(idx, cos)


def select_queries(
    auc: Float[Tensor, "n_concepts n_latents"], concepts: Sequence[str], allowed: Sequence[str], threshold: float
) -> tuple[Int[Tensor, " n_queries"], list[str]]:
    """Latents whose best AUROC over the ``allowed`` concepts reaches ``threshold``, and that concept for each."""
    if len(concepts) != auc.shape[0]:
        raise ValueError(f"{len(concepts)} concept names for an AUROC table of {auc.shape[0]} rows")
    unknown = sorted(set(allowed) - set(concepts))
    if unknown:
        raise ValueError(f"unknown concept(s) {unknown}")
    rows = torch.tensor([concepts.index(c) for c in allowed], dtype=torch.long)
    if rows.numel() == 0:
        return torch.zeros(0, dtype=torch.long), []
    best, which = torch.nan_to_num(auc[rows], nan=0.0).max(dim=0)
    latents = (best >= threshold).nonzero().squeeze(1)
    return latents, [allowed[int(which[i])] for i in latents]


@dataclass
class ConceptMatches:
    """Which retrieved base-side latents detect the concept of each chat-side query latent."""

    method: str
    queries: Int[Tensor, " n_queries"]
    concepts: list[str]
    """The concept each query detects on chat data."""
    retrieved: Int[Tensor, "n_queries k"]
    """Base-side latents retrieved for each query, in rank order."""
    hits: Bool[Tensor, "n_queries k"]
    """Whether each retrieved latent detects the query's concept on web data."""
    chance: Float[Tensor, " n_queries"]
    """Share of all base-side latents that detect the query's concept."""

    @property
    def k(self) -> int:
        return int(self.retrieved.shape[1])

    def precision(self, k: int | None = None) -> float:
        """Mean over queries of the share of hits among the first ``k`` retrieved (default all); NaN without
        queries."""
        k = self.k if k is None else k
        if not 1 <= k <= self.k:
            raise ValueError(f"k must be in [1, {self.k}], got {k}")
        return float(self.hits[:, :k].float().mean()) if len(self.queries) else float("nan")

    def table(self) -> pd.DataFrame:
        """One row per query: its concept, the retrieved latents and which were hits."""
        return pd.DataFrame({"query": self.queries.tolist(), "concept": self.concepts,
                             "retrieved": self.retrieved.tolist(), "hits": self.hits.int().tolist(),
                             "chance": self.chance.numpy().round(3)})  # fmt: skip


def concept_matches(
    method: str,
    queries: Int[Tensor, " n_queries"],
    query_concepts: Sequence[str],
    retrieved: Int[Tensor, "n_queries k"],
    key_auc: Float[Tensor, "n_concepts n_keys"],
    concepts: Sequence[str],
    threshold: float,
) -> ConceptMatches:
    """Score retrieved base-side latents: a hit detects the query's concept with AUROC >= ``threshold`` (on the
    data ``key_auc`` was measured on, web data for base-side latents)."""
    if retrieved.ndim != 2 or retrieved.shape[0] != len(queries) or len(query_concepts) != len(queries):
        raise ValueError(f"{len(queries)} queries, {len(query_concepts)} concepts and retrieved "
                         f"{tuple(retrieved.shape)} do not match")  # fmt: skip
    detects = torch.nan_to_num(key_auc, nan=0.0) >= threshold  # (n_concepts, n_keys)
    rows = torch.tensor([list(concepts).index(c) for c in query_concepts], dtype=torch.long)
    hits = detects[rows[:, None], retrieved] if len(queries) else torch.zeros(0, retrieved.shape[1], dtype=torch.bool)
    chance = detects[rows].float().mean(dim=1) if len(queries) else torch.zeros(0)
    return ConceptMatches(method, queries, list(query_concepts), retrieved, hits, chance)


def precision_table(matches: Sequence[ConceptMatches], ks: Sequence[int] = (1, 5)) -> pd.DataFrame:
    """One row per method: queries, precision at each ``k`` it retrieved that many for (else NaN), and chance."""
    rows = {}
    for m in matches:
        row: dict[str, float] = {"queries": len(m.queries)}
        row.update({f"precision@{k}": m.precision(k) if k <= m.k else float("nan") for k in ks})
        row["chance"] = float(m.chance.mean()) if len(m.queries) else float("nan")
        rows[m.method] = row
    return pd.DataFrame(rows).T
