"""Data for Experiment 1 on any pair: training activations, held-out web/chat samples, and concept AUROC tables.

Lab pairs (``"tiny"``, ``"smoke"``) draw documents from :mod:`tiedlib.lab`, whose tokens carry concept labels; the
paper pair streams the public Pile/LMSys mix (:mod:`tiedlib.data`; needs the network) and has no labels. Nothing here
branches on the scale, only on whether the pair is a lab pair.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tiedlib.analysis import auroc
from tiedlib.contexts import TokenSample, latent_activations, token_labels
from tiedlib.crosscoder import Crosscoder
from tiedlib.pairs import LAB_PAIRS, ModelPair
from tiedlib.runs import collect_activations


def is_lab(pair: ModelPair) -> bool:
    return pair.name in LAB_PAIRS


def template_ids(pair: ModelPair) -> list[int]:
    """Chat-template token ids of the pair's tokenizer (turn markers and the role words after them for lab pairs)."""
    if is_lab(pair):
        from tiedlib import lab

        return sorted(lab.template_token_ids(pair.tokenizer))
    from tiedlib.data import template_token_ids

    return sorted(template_token_ids(pair.tokenizer))


def training_sequences(pair: ModelPair, n: int, *, web_fraction: float = 0.5, seq_len: int = 1024,
                       seed: int = 0) -> Sequence[Sequence[int]]:  # fmt: skip
    """``n`` training sequences: the lab's shuffled web/chat mix, or the public pre-tokenised Pile/LMSys mix."""
    if is_lab(pair):
        from tiedlib import lab

        return [d.input_ids for d in lab.crosscoder_mix(pair.config, n, web_fraction, split="train", seed=seed)]
    from tiedlib.data import pretokenized_stream, take_sequences

    return take_sequences(pretokenized_stream(seq_len=seq_len), n)


def training_data(
    pair: ModelPair,
    sequences: Sequence[Sequence[int]],
    *,
    batch_size: int,
    model_batch_size: int = 32,
    exclude_token_ids: Sequence[int] = (),
    in_memory: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> Callable[[], Iterator[Tensor]]:
    """A lazy ``make_data()`` for :func:`tiedlib.runs.train_or_load` (nothing is harvested until it is called, so
    loading a finished run costs no forward passes). Batches are normalised; their ``norm_factors`` go into the
    crosscoder config.

    ``in_memory``: harvest once and serve shuffled normalised rows (:class:`InMemoryBatches`, epochs repeat);
    otherwise an :class:`~tiedlib.buffer.ActivationBuffer` harvests fresh tokens on every refresh (paper scale).
    """
    cache: dict[str, Any] = {}

    def make_rows() -> Iterator[Tensor]:
        if "acts" not in cache:
            cache["acts"] = collect_activations(pair, sequences, exclude_token_ids=exclude_token_ids,
                                                batch_size=model_batch_size, progress=progress)  # fmt: skip
        return cache["acts"].batches(batch_size, seed=seed)

    def make_buffer() -> Iterator[Tensor]:
        from tiedlib.buffer import ActivationBuffer

        return ActivationBuffer(pair.base, pair.chat, sequences, pair.layer, batch_size=batch_size,
                                buffer_tokens=128 * batch_size, model_batch_size=model_batch_size, seed=seed,
                                on_exhausted="new_epoch", exclude_token_ids=exclude_token_ids)  # fmt: skip

    return make_rows if in_memory else make_buffer


def eval_sample(
    pair: ModelPair,
    source: str,
    n: int,
    *,
    exclude_token_ids: Sequence[int] = (),
    seq_len: int = 1024,
    model_batch_size: int = 32,
    progress: bool = False,
) -> TokenSample:
    """Held-out ``source`` data (``"web"``: Pile-like, ``"chat"``: LMSys-like) harvested into a :class:`TokenSample`.

    Lab pairs use the ``heldout`` split and keep the :class:`tiedlib.lab.LabDoc` documents (with labels); the paper
    pair streams Pile-only or LMSys-only sequences (``docs`` is None).
    """
    if source not in ("web", "chat"):
        raise ValueError(f"source must be 'web' or 'chat', got {source!r}")
    docs: Sequence[Any] | None
    if is_lab(pair):
        from tiedlib import lab

        get = lab.web_documents if source == "web" else lab.chat_conversations
        docs = get(pair.config, split="heldout", n=n)
        seqs: Sequence[Sequence[int]] = [d.input_ids for d in docs]
    else:
        from tiedlib.data import mixed_stream, take_sequences

        stream = mixed_stream(pair.tokenizer, chat_fraction=1.0 if source == "chat" else 0.0, seq_len=seq_len, seed=1)
        seqs, docs = take_sequences(stream, n, progress=progress), None
    ones = torch.ones(2)  # raw activations are kept; analysis applies the crosscoder's own factors
    h = collect_activations(pair, seqs, exclude_token_ids=exclude_token_ids, batch_size=model_batch_size,
                            norm_factors=ones, progress=progress).harvest  # fmt: skip
    return TokenSample.from_harvest(h, seqs, source, docs)


def sample_labels(sample: TokenSample, concepts: Sequence[str]) -> Bool[Tensor, "n_tokens n_concepts"]:
    """Concept labels of every row of a lab sample."""
    if sample.docs is None:
        raise ValueError(f"sample {sample.name!r} has no labelled documents (only lab pairs have ground truth)")
    return token_labels(sample.docs, sample.doc_index, sample.position, concepts)


def concept_auroc(model: Crosscoder, sample: TokenSample, concepts: Sequence[str]) -> Float[Tensor, "n_concepts n_all"]:
    """AUROC of every latent (flattened ``group * n_latents + index``) as a detector of every concept on ``sample``."""
    all_latents = [(g, i) for g in range(model.cfg.n_groups) for i in range(model.cfg.n_latents)]
    scores = latent_activations(model, sample.batches(), all_latents)
    return auroc(scores, sample_labels(sample, concepts))


def source_only_concepts(
    labels_here: Bool[Tensor, "n_a n_concepts"],
    labels_elsewhere: Bool[Tensor, "n_b n_concepts"],
    concepts: Sequence[str],
) -> list[str]:
    """Concepts present in the first sample and absent from the second (e.g. chat-only concepts)."""
    here, there = labels_here.any(dim=0), labels_elsewhere.any(dim=0)
    return [c for c, a, b in zip(concepts, here.tolist(), there.tolist(), strict=False) if a and not b]


def best_concepts(auc: Float[Tensor, "n_concepts n_all"], columns: Tensor, concepts: Sequence[str]) -> list[str]:
    """Name of the concept each latent column detects best (highest AUROC)."""
    return [concepts[int(j)] for j in torch.nan_to_num(auc[:, columns], nan=-1.0).argmax(dim=0).reshape(-1)]


def refusal_triple(
    auc_web: Float[Tensor, "n_concepts n_all"],
    auc_chat: Float[Tensor, "n_concepts n_all"],
    concepts: Sequence[str],
    n_latents: int,
    *,
    chat_concept: str = "refusal",
    base_concepts: Sequence[str] = ("refusal", "disclaimer"),
) -> dict[str, Any]:
    """The tied triple whose chat part best detects ``chat_concept`` on chat data *and* whose base part best detects
    one of ``base_concepts`` on web data (the write-up's Figure 3 and 5), judged by the lower of the two AUROCs.

    Returns ``{"triple", "joint_auroc", "chat_auroc", "base_auroc", "base_concept"}``.
    """
    from tiedlib.analysis import best_joint
    from tiedlib.config import BASE_ONLY, CHAT_ONLY

    chat = auc_chat[concepts.index(chat_concept)].reshape(3, n_latents)[CHAT_ONLY]
    base_all = torch.stack([auc_web[concepts.index(c)].reshape(3, n_latents)[BASE_ONLY] for c in base_concepts])
    base_all = torch.nan_to_num(base_all, nan=0.0)
    base, which = base_all.max(dim=0)
    i, joint = best_joint(chat, base)
    return {"triple": i, "joint_auroc": joint, "chat_auroc": float(chat[i]), "base_auroc": float(base[i]),
            "base_concept": base_concepts[int(which[i])]}  # fmt: skip
