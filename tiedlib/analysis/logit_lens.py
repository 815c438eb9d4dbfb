"""Logit lens of crosscoder decoder vectors: which tokens a latent's decoder vector promotes in one model.

Used by Experiment 2 to find blue/green latents: :func:`colour_latents` ranks decoder vectors by where ``" blue"`` and
``" green"`` sit among their logits through the model's unembedding (with the final norm's gain folded in, as sae-vis
does; see :func:`unembedding`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from tiedlib.pairs.colours import COLOURS

_FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm")


def final_norm_scale(model: Any) -> Float[Tensor, " d_model"] | None:
    """The elementwise gain of the model's final norm, or None when the model has none we know.

    Gemma's RMSNorm multiplies by ``1 + weight`` (its weight is stored zero-centred); other norms by ``weight``.
    """
    for path in _FINAL_NORMS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is not None and getattr(obj, "weight", None) is not None:
            w = obj.weight.detach().float()
            return 1 + w if type(obj).__name__.startswith("Gemma") else w
    return None


def unembedding(model: Any, *, fold_final_norm: bool = True) -> Float[Tensor, "d_model vocab"]:
    """The unembedding ``W_U`` (``d_model x vocab``), with the final norm's gain folded in when asked.

    Folding follows sae-vis (via TransformerLens ``fold_ln``): a decoder vector's logit effect is read as
    ``d @ diag(g) @ W_U``, where ``g`` is the final norm's gain. The norm's division by the RMS is a positive scalar
    per token and does not change which logits are largest, so it is left out; so is Gemma-2's final logit
    soft-capping, a monotone ``tanh``.
    """
    W_U = model.get_output_embeddings().weight.detach().float().T
    if fold_final_norm:
        g = final_norm_scale(model)
        if g is None:
            raise ValueError(f"no final norm found on {type(model).__name__}; pass fold_final_norm=False")
        W_U = W_U * g.to(W_U.device)[:, None]
    return W_U


def logit_lens(vectors: Float[Tensor, "n d_model"], W_U: Float[Tensor, "d_model vocab"]) -> Float[Tensor, "n vocab"]:
    """Direct logit effect of each vector: ``vectors @ W_U`` (use :func:`unembedding` for ``W_U``)."""
    return vectors.detach().float().to(W_U.device) @ W_U


def top_tokens(logits: Float[Tensor, " vocab"], tokenizer: Any, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` largest logits of one row as ``(token string, logit)``."""
    values, idx = logits.topk(k)
    return [(tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, idx, strict=True)]


class ColourLatents(NamedTuple):
    """Candidate latents ranked by how high both colours sit among their logit-lens logits."""

    indices: Tensor
    """Latent indices, best first (lowest ``worst_rank``, then largest summed colour logit)."""
    worst_rank: Tensor
    """0-based rank of the lower of the two colour logits among all vocabulary logits of the latent."""
    colour_logits: Tensor
    """``(n, 2)`` logit-lens logits of ``" blue"`` and ``" green"``."""

    def hits(self, top_k: int = 3) -> Tensor:
        """Latents whose top ``top_k`` positive logits contain both colours (the write-up's criterion)."""
        ok = (self.worst_rank < top_k) & (self.colour_logits > 0).all(dim=1)
        return self.indices[ok]


def colour_latents(
    vectors: Float[Tensor, "n_latents d_model"], W_U: Float[Tensor, "d_model vocab"], colour_ids: dict[str, int],
    candidates: Tensor | None = None, *, chunk_size: int = 128,
) -> ColourLatents:
    """Rank ``candidates`` (default: all latents) by the logit-lens rank of the worse of ``" blue"``/``" green"``.

    Computed ``chunk_size`` latents at a time, so a 16k x 256k logit table is never held at once.
    """
    idx = torch.arange(vectors.shape[0]) if candidates is None else torch.as_tensor(candidates, dtype=torch.long)
    cols = torch.tensor([colour_ids[c] for c in COLOURS], device=W_U.device)
    ranks, logits = [], []
    for s in range(0, idx.numel(), chunk_size):
        lg = logit_lens(vectors[idx[s : s + chunk_size]], W_U)
        cl = lg[:, cols]
        ranks.append((lg[:, None, :] > cl[:, :, None]).sum(-1).max(dim=1).values.cpu())
        logits.append(cl.cpu())
    if not ranks:
        return ColourLatents(idx, torch.zeros(0, dtype=torch.long), torch.zeros(0, 2))
    rank, cl = torch.cat(ranks), torch.cat(logits)
    order = sorted(range(idx.numel()), key=lambda i: (int(rank[i]), -float(cl[i].sum())))
    order_t = torch.tensor(order, dtype=torch.long)
    return ColourLatents(idx[order_t], rank[order_t], cl[order_t])
