"""Experiment 3: do the "refusal" (Cannot vs Can) and "harmful" (Harmful vs Harmless) SAE latents overlap more in the
chat model than in the base model?

The write-up's measure, per model with its own SAE: sum every latent's activation over all tokens of all prompts of
a set; the *Cannot latents* are those whose sum is larger on Cannot than on Can, the *Harmful latents* those larger on
Harmful than on Harmless; the overlap is the Jaccard index of the two sets (write-up: base 0.19, chat 0.39).

This module adds what the single number lacks: per-prompt sums over two position sets (all tokens, and the
end-of-prompt tokens of :mod:`tiedlib.experiments.exp3.positions`), so prompts can be resampled (a paired cluster
bootstrap over distinct questions, name variants of a question kept together, gives confidence intervals for each
Jaccard and for chat minus base), and stricter selection rules (a relative margin, or only the top-k latents).
Sources (pretrained Gemma Scope SAEs, Arditi et al. prompts, the paper-scale Cannot/Can prompts) live in
:mod:`tiedlib.experiments.exp3.sources`.

Harvesting here reads ONE model (each SAE reads its own model) at the *output* of decoder layer ``layer``
(TransformerLens ``blocks.{layer}.hook_resid_post``, Hugging Face ``hidden_states[layer + 1]``), the hook Gemma Scope
SAEs were trained on.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib.activations.harvest import get_path, layer_path, model_device, pad_left
from tiedlib.analysis import sae_baseline
from tiedlib.experiments.exp3.positions import end_of_prompt_mask

SET_PAIRS: dict[str, tuple[str, str]] = {"refusal": ("cannot", "can"), "harmful": ("harmful", "harmless")}
"""The two contrasts: name -> (set whose larger sums select a latent, the set it is compared with)."""
MODELS = ("base", "chat")
POSITIONS: dict[str, str] = {"all": "all tokens", "end": "end of prompt"}
"""Token positions a prompt's latent sums run over (:class:`PositionSums` fields) -> label on the page."""


# ------------------------------------------------------------------------------------------------- harvesting
def harvest_outputs(
    model: Any, sequences: Sequence[Sequence[int]], layer: int, *, batch_size: int = 8, drop_bos: bool = True,
) -> Iterator[tuple[Float[Tensor, "batch seq d_model"], Bool[Tensor, "batch seq"]]]:
    """Yield the output of decoder layer ``layer`` of one nnsight-wrapped model, batch by batch.

    Args:
        model: an nnsight-wrapped causal LM with a tokenizer (``tiedlib.pairs.wrap``).
        sequences: token-id lists, each starting with BOS.
        layer: decoder layer whose *output* (resid_post) is read.
        batch_size: sequences per forward pass (left-padded; explicit position ids).
        drop_bos: leave position 0 out of the mask (the BOS activation is the same for every prompt and a norm
            outlier, so it carries nothing about the prompt).

    Yields:
        ``(acts, keep)``: float32 activations on the model's device and the mask of real (kept) tokens.
    """
    if len(sequences) == 0:
        raise ValueError("no sequences to harvest")
    tok = model.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    layers = get_path(model, layer_path(model))
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} out of range: the model has {len(layers)} decoder layers")
    dev = model_device(model)
    for start in range(0, len(sequences), batch_size):
        seqs = [[int(t) for t in s] for s in sequences[start : start + batch_size]]
        ids, mask, position = pad_left(seqs, pad_id)
        inputs = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "position_ids": position.to(dev)}
        with torch.no_grad(), model.trace(inputs) as tracer:
            hidden = layers[layer].output.save()
            tracer.stop()
        if isinstance(hidden, tuple):  # older transformers; 5.x layers return the tensor itself
            hidden = hidden[0]
        if tuple(hidden.shape) != (*ids.shape, hidden.shape[-1]):
            raise ValueError(f"layer {layer} output has shape {tuple(hidden.shape)}, expected (batch, seq, d_model)")
        keep = mask.bool()
        if drop_bos:
            keep &= position > 0
        yield hidden.float(), keep.to(hidden.device)


def collect_tokens(model: Any, sequences: Sequence[Sequence[int]], layer: int, **kwargs: Any
                   ) -> Float[Tensor, "n_tokens d_model"]:
    """All kept token activations of :func:`harvest_outputs`, concatenated on the CPU (SAE training data)."""
    return torch.cat([h[k].cpu() for h, k in harvest_outputs(model, sequences, layer, **kwargs)])


class PositionSums(NamedTuple):
    """Per prompt, every SAE latent's activation summed over one set of token positions (:data:`POSITIONS`)."""

    all: Float[Tensor, "n_prompts d_sae"]
    """Over all kept tokens (padding and BOS excluded): the write-up's rule."""
    end: Float[Tensor, "n_prompts d_sae"]
    """Over the end-of-prompt tokens only (:mod:`tiedlib.experiments.exp3.positions`)."""


def position_sums(model: Any, sae: Any, sequences: Sequence[Sequence[int]], layer: int, end_lengths: Sequence[int],
                  **kwargs: Any) -> PositionSums:
    """Per prompt, every SAE latent's activation summed over all kept tokens and over the prompt's last
    ``end_lengths[i]`` tokens (its end of prompt: :func:`tiedlib.experiments.exp3.positions.end_of_prompt_lengths`),
    from one harvest. ``kwargs`` go to :func:`harvest_outputs`.

    Returns:
        :class:`PositionSums` of two ``(n_prompts, d_sae)`` tensors on the CPU.
    """
    if len(end_lengths) != len(sequences):
        raise ValueError(f"end_lengths has {len(end_lengths)} entries for {len(sequences)} sequences")
    lengths = torch.as_tensor([int(n) for n in end_lengths], dtype=torch.long)
    out_all, out_end, start = [], [], 0
    sae_dtype = next(sae.parameters()).dtype
    with torch.no_grad():
        for hidden, keep in harvest_outputs(model, sequences, layer, **kwargs):
            f = sae.encode(hidden.to(device=sae.device, dtype=sae_dtype)).float()
            keep = keep.to(f.device)
            end = end_of_prompt_mask(keep, lengths[start : start + keep.shape[0]])
            start += keep.shape[0]
            out_all.append((f * keep[..., None]).sum(1).cpu())
            out_end.append((f * end[..., None]).sum(1).cpu())
    return PositionSums(torch.cat(out_all), torch.cat(out_end))


# ------------------------------------------------------------------------------------------------- SAE training
def train_sae(
    acts: Float[Tensor, "n_tokens d_in"], *, d_sae: int, l1_coefficient: float, total_samples: int,
    batch_size: int = 1024, lr: float = 3e-4, seed: int = 0, device: str = "cpu",
) -> Any:
    """:func:`tiedlib.analysis.sae_baseline.train_sae` (sae_lens's ``StandardTrainingSAE`` and ``SAETrainer``) for
    ``total_samples // batch_size`` steps on ``acts``, reshuffled every epoch; the returned SAE reads raw activations.
    """
    return sae_baseline.train_sae(acts, d_sae=d_sae, l1_coefficient=l1_coefficient,
                                  n_steps=max(1, total_samples // batch_size), batch_size=batch_size, lr=lr, seed=seed,
                                  device=device)  # fmt: skip


def save_sae(sae: Any, path: str | Path) -> None:
    """Save a trained SAE in sae_lens's inference format (``SAE.load_from_disk`` reads it back)."""
    sae.save_inference_model(Path(path))


def load_sae(path: str | Path, *, device: str = "cpu") -> Any:
    """Load an SAE saved by :func:`save_sae` (or any sae_lens folder) with ``SAE.load_from_disk``."""
    from sae_lens import SAE

    return SAE.load_from_disk(Path(path), device=device)


@torch.no_grad()
def sae_metrics(sae: Any, acts: Float[Tensor, "n_tokens d_in"], batch_size: int = 4096) -> dict[str, float]:
    """Mean squared error, fraction of variance unexplained and mean L0 of ``sae`` on ``acts``."""
    se, l0, n = 0.0, 0.0, 0
    for i in range(0, acts.shape[0], batch_size):
        x = acts[i : i + batch_size].to(sae.device)
        f = sae.encode(x)
        se += (sae.decode(f) - x).pow(2).sum().item()
        l0 += (f > 0).sum().item()
        n += x.shape[0]
    var = (acts - acts.mean(0)).pow(2).sum().item()
    return {"mse": se / (n * acts.shape[1]), "fvu": se / var, "l0": l0 / n}


# ------------------------------------------------------------------------------------------------- the measure
def select_latents(
    sum_a: Float[Tensor, "... d_sae"], sum_b: Float[Tensor, "... d_sae"], *, margin: float = 0.0,
    top_k: int | None = None,
) -> Bool[Tensor, "... d_sae"]:
    """Latents whose summed activation is larger on set A than on set B.

    ``margin=0, top_k=None`` is the write-up's rule (``sum_a > sum_b``). A stricter rule keeps a latent only if
    ``sum_a - sum_b > margin * (sum_a + sum_b)`` (a relative margin in [0, 1): 1/3 means A's sum is at least twice
    B's), and ``top_k`` keeps at most the k latents with the largest difference among those. Latents silent on both
    sets are never selected.
    """
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    diff = sum_a - sum_b
    chosen = diff > margin * (sum_a + sum_b).clamp(min=0)
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be positive, got {top_k}")
        masked = torch.where(chosen, diff, torch.full_like(diff, -torch.inf))
        idx = masked.topk(min(top_k, diff.shape[-1]), dim=-1).indices
        in_top = torch.zeros_like(chosen).scatter_(-1, idx, True)
        chosen &= in_top
    return chosen


def jaccard(a: Bool[Tensor, "... d"], b: Bool[Tensor, "... d"]) -> Float[Tensor, "..."]:
    """``|a & b| / |a | b|`` along the last axis; NaN where both sets are empty."""
    inter = (a & b).sum(-1).double()
    union = (a | b).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(union, torch.nan))


def chance_jaccard(n_a: int, n_b: int, n_total: int, *, n_pool_a: int | None = None,
                   n_pool_b: int | None = None) -> float:
    """Jaccard expected (to first order) for two *unrelated* random sets of sizes ``n_a`` and ``n_b``:
    ``x / (n_a + n_b - x)`` with ``x`` the expected size of their intersection.

    With only ``n_total``, both sets are drawn from the same ``n_total`` latents and ``x = n_a * n_b / n_total``. The
    write-up rule selects about half of the active latents per contrast by the sign of a difference, so even
    unrelated contrasts give about 1/3. When the two sets come from different pools (a contrast can only select
    latents active on its own two prompt sets, and the end-of-prompt tokens of forum and chat prompts wake different
    latents), give the pool sizes ``n_pool_a`` and ``n_pool_b`` and the size ``n_total`` of their intersection: a
    latent of the intersection is in set A with probability ``n_a / n_pool_a`` and in B with ``n_b / n_pool_b``, so
    ``x = n_a * n_b * n_total / (n_pool_a * n_pool_b)``.
    """
    pool_a = n_total if n_pool_a is None else n_pool_a
    pool_b = n_total if n_pool_b is None else n_pool_b
    if min(n_total, pool_a, pool_b) <= 0 or n_a + n_b == 0:
        return 0.0
    if n_a > pool_a or n_b > pool_b or n_total > min(pool_a, pool_b):
        raise ValueError(f"set sizes ({n_a}, {n_b}) and their intersection's pool ({n_total}) must fit in their pools "
                         f"({pool_a}, {pool_b})")
    x = n_a * n_b * n_total / (pool_a * pool_b)
    return x / (n_a + n_b - x)


SetSums = dict[str, Tensor]
"""Per prompt set (``"cannot"``, ``"can"``, ``"harmful"``, ``"harmless"``): ``(n_prompts, d_sae)`` latent sums."""


def overlap(sums: SetSums, *, margin: float = 0.0, top_k: int | None = None) -> tuple[float, int, int]:
    """``(jaccard, n_cannot_latents, n_harmful_latents)`` of one model's prompt-set sums."""
    chosen = {k: select_latents(sums[a].sum(0), sums[b].sum(0), margin=margin, top_k=top_k)
              for k, (a, b) in SET_PAIRS.items()}
    return float(jaccard(chosen["refusal"], chosen["harmful"])), int(chosen["refusal"].sum()), \
        int(chosen["harmful"].sum())


class Estimate(NamedTuple):
    """A point estimate with its bootstrap percentile interval and the bootstrap draws."""

    point: float
    low: float
    high: float
    draws: Tensor


Clusters = dict[str, Sequence[Hashable | None]]
"""Per prompt set, one cluster id per prompt (its question id; None: the prompt is a cluster of its own)."""


def cluster_index(ids: Sequence[Hashable | None]) -> tuple[Tensor, int]:
    """``(index, n_clusters)``: each prompt's cluster number (in order of first appearance) and the number of
    clusters. Prompts with the same id share a cluster; every None is a cluster of its own."""
    number: dict[Hashable, int] = {}
    index = []
    for i, q in enumerate(ids):
        key = ("__own_cluster__", i) if q is None else ("id", q)
        index.append(number.setdefault(key, len(number)))
    return torch.tensor(index, dtype=torch.long), len(number)


def n_clusters(ids: Sequence[Hashable | None]) -> int:
    """Distinct questions of a set: distinct ids, each None counted once per prompt (see :func:`cluster_index`)."""
    return cluster_index(ids)[1]


def question_counts(question_ids: Clusters) -> dict[str, int]:
    """Prompt set -> number of distinct questions (bootstrap clusters, :func:`n_clusters`)."""
    return {k: n_clusters(v) for k, v in question_ids.items()}


def require_questions(question_ids: Clusters, minimum: int) -> dict[str, int]:
    """:func:`question_counts`, after checking every set has at least ``minimum`` distinct questions.

    Raises:
        ValueError: a set has fewer (the message names each such set and its count).
    """
    counts = question_counts(question_ids)
    short = {k: c for k, c in counts.items() if c < minimum}
    if short:
        raise ValueError(f"prompt sets with fewer than {minimum} distinct questions: {short}; a bootstrap over so few "
                         f"questions says little. Ask for more prompts or lower min_questions.")
    return counts


def cluster_weights(index: Tensor, n: int, b: int, gen: torch.Generator) -> Float[Tensor, "b n_prompts"]:
    """``b`` cluster-bootstrap draws of one prompt set: each draw picks ``n`` clusters uniformly with replacement and
    weights every prompt by the number of times its cluster was picked (all prompts of a drawn cluster come along).

    Args:
        index: ``(n_prompts,)`` cluster number of each prompt, in ``[0, n)`` (:func:`cluster_index`).
        n: number of clusters.
        b: number of draws.
        gen: the random generator (one stream for the whole bootstrap).
    """
    if index.ndim != 1 or index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= n:
        raise ValueError(f"index must be a non-empty (n_prompts,) tensor of cluster numbers in [0, {n})")
    picks = torch.multinomial(torch.ones(n), b * n, replacement=True, generator=gen).view(b, n)
    counts = torch.zeros(b, n).scatter_add_(1, picks, torch.ones_like(picks, dtype=torch.float32))
    return counts[:, index]


def bootstrap_overlap(
    sums_by_model: dict[str, SetSums], *, clusters: Clusters | None = None, margin: float = 0.0,
    top_k: int | None = None, n_boot: int = 1000, ci: float = 0.95, seed: int = 0, chunk: int = 100,
) -> dict[str, Estimate]:
    """Jaccard per model and chat minus base, with a paired percentile cluster bootstrap over distinct questions.

    Each draw resamples, per prompt set, the set's distinct questions with replacement and takes every prompt of a
    drawn question (its name variants included: they are not independent evidence), with the same draw for both
    models (they read the same prompts, so the difference interval is paired), and recomputes both latent selections
    and the Jaccard. ``clusters=None`` (or a None id) makes every prompt its own cluster: the plain bootstrap over
    prompts.

    Returns:
        ``{"base": ..., "chat": ..., "chat_minus_base": ...}`` as :class:`Estimate`.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    n = {name: sums_by_model["base"][name].shape[0] for name in sums_by_model["base"]}
    for model in MODELS:
        if {k: v.shape[0] for k, v in sums_by_model[model].items()} != n:
            raise ValueError("base and chat sums must cover the same prompts")
    ids = {k: (clusters or {}).get(k, [None] * n_k) for k, n_k in n.items()}
    for k, n_k in n.items():
        if len(ids[k]) != n_k:
            raise ValueError(f"set {k!r} has {n_k} prompts but {len(ids[k])} question ids")
    index = {k: cluster_index(ids[k]) for k in n}
    gen = torch.Generator().manual_seed(seed)
    draws: dict[str, list[Tensor]] = {m: [] for m in MODELS}
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        counts = {k: cluster_weights(*index[k], b, gen) for k in n}
        for model in MODELS:
            s = {k: counts[k] @ sums_by_model[model][k].float() for k in n}
            chosen = {c: select_latents(s[a], s[bb], margin=margin, top_k=top_k) for c, (a, bb) in SET_PAIRS.items()}
            draws[model].append(jaccard(chosen["refusal"], chosen["harmful"]))
    out: dict[str, Estimate] = {}
    alpha = (1 - ci) / 2
    cat = {m: torch.cat(draws[m]) for m in MODELS}
    cat["chat_minus_base"] = cat["chat"] - cat["base"]
    points = {m: overlap(sums_by_model[m], margin=margin, top_k=top_k)[0] for m in MODELS}
    points["chat_minus_base"] = points["chat"] - points["base"]
    for key, d in cat.items():
        q = torch.nanquantile(d, torch.tensor([alpha, 1 - alpha], dtype=d.dtype)).tolist()
        out[key] = Estimate(points[key], q[0], q[1], d)
    return out


def relative_differences(sums: SetSums) -> dict[str, Tensor]:
    """Per latent and contrast, ``(sum_a - sum_b) / (sum_a + sum_b)`` in [-1, 1]; NaN for latents silent on both."""
    out = {}
    for k, (a, b) in SET_PAIRS.items():
        sa, sb = sums[a].sum(0).double(), sums[b].sum(0).double()
        tot = sa + sb
        out[k] = torch.where(tot > 0, (sa - sb) / tot.clamp(min=1e-30), torch.full_like(tot, torch.nan))
    return out


def difference_correlation(sums: SetSums) -> float:
    """Pearson correlation, over latents active on all four sets, of the two relative differences (a continuous
    companion of the Jaccard: do latents that prefer Cannot also prefer Harmful?)."""
    d = relative_differences(sums)
    ok = ~(d["refusal"].isnan() | d["harmful"].isnan())
    if ok.sum() < 3:
        return float("nan")
    return float(torch.corrcoef(torch.stack([d["refusal"][ok], d["harmful"][ok]]))[0, 1])


def overlap_table(
    sums_by_model: dict[str, SetSums], rules: dict[str, dict[str, Any]], *, clusters: Clusters | None = None,
    **boot_kwargs: Any,
) -> list[dict[str, Any]]:
    """One row per selection rule (``{"label": {"margin": m, "top_k": k}}``): Jaccards with intervals (cluster
    bootstrap over the question ids ``clusters``, see :func:`bootstrap_overlap`), chat minus base with its interval,
    the share of bootstrap draws where chat <= base, the size of each latent set, the Jaccard that unrelated sets of
    those sizes would have (``{model}_chance``, see :func:`chance_jaccard`; each contrast's pool is the latents
    active on its two prompt sets) and the number of distinct questions (bootstrap clusters) of each prompt set
    (``n_questions_{set}``)."""
    rows = []
    for label, rule in rules.items():
        est = bootstrap_overlap(sums_by_model, clusters=clusters, **rule, **boot_kwargs)
        row: dict[str, Any] = {"rule": label, **rule}
        for key, e in est.items():
            row.update({key: e.point, f"{key}_low": e.low, f"{key}_high": e.high})
        d = est["chat_minus_base"].draws
        row["p_chat_le_base"] = float((d[~d.isnan()] <= 0).double().mean())
        for model in MODELS:
            _, n_ref, n_harm = overlap(sums_by_model[model], **rule)
            active = {k: v.sum(0) > 0 for k, v in sums_by_model[model].items()}
            pool = {c: active[a] | active[b] for c, (a, b) in SET_PAIRS.items()}
            row[f"{model}_n_cannot"], row[f"{model}_n_harmful"] = n_ref, n_harm
            row[f"{model}_chance"] = chance_jaccard(n_ref, n_harm, int((pool["refusal"] & pool["harmful"]).sum()),
                                                    n_pool_a=int(pool["refusal"].sum()),
                                                    n_pool_b=int(pool["harmful"].sum()))
        for k, v in sums_by_model["base"].items():
            row[f"n_questions_{k}"] = n_clusters((clusters or {}).get(k, [None] * v.shape[0]))
        rows.append(row)
    return rows
