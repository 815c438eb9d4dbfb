"""A tied crosscoder on the colour toy: is blue/green one latent triple?

If blue/green is one concept that the two models merely use at different times, a tied crosscoder should hold it in
*one* index whose two decoder halves are both blue/green (the write-up's next step 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tiedlib.activations.collect import Activations
from tiedlib.analysis.firing import firing_counts
from tiedlib.analysis.logit_lens import colour_latents
from tiedlib.config import BASE, CHAT, GROUP_NAMES


@dataclass
class TiedColourTriple:
    """Blue/green indices of a tied crosscoder on (``names[0]``, ``names[1]``) and the firing of one triple."""

    names: tuple[str, str]
    hits_base: list[int]
    """Indices whose first-model decoder half is blue/green (ascending)."""
    hits_chat: list[int]
    """Indices whose second-model decoder half is blue/green (ascending)."""
    triple: int
    """The triple inspected: the first index blue/green on both halves, else the best-ranked one on either half."""
    firing: dict[str, list[float]]
    """``{"colour tokens": [shared, base-only, chat-only], "all tokens": [...]}``: fraction of tokens on which each
    group of :attr:`triple` fires."""

    @property
    def both(self) -> list[int]:
        """Indices blue/green on both halves."""
        return sorted(set(self.hits_base) & set(self.hits_chat))

    @property
    def single_triple(self) -> bool:
        """Whether blue/green is exactly one triple: one index, the same on both halves."""
        return len(self.both) == 1 and set(self.hits_base) == set(self.hits_chat)

    def summary(self) -> str:
        return "\n".join([
            f"indices whose {self.names[0]} half is blue/green: {self.hits_base}; {self.names[1]} half: "
            f"{self.hits_chat}; both: {self.both}",
            f"triple {self.triple}: " + ", ".join(f"{g} fires on {v:.1%} of colour tokens"
                                                  for g, v in zip(GROUP_NAMES, self.firing["colour tokens"],
                                                                  strict=True)),
        ])


def tied_colour_triple(
    tied: Any, W_U: dict[str, Tensor], names: tuple[str, str], colour_ids: dict[str, int], acts: Activations,
    *, top_k: int = 3,
) -> TiedColourTriple:
    """Find the blue/green indices of each decoder half of ``tied`` and measure the firing of one triple.

    Args:
        tied: a tied crosscoder trained on ``acts`` (``n_groups == 3``).
        W_U: unembedding ``(d_model, vocab)`` per model name.
        names: the crosscoder's two models, base first (keys of ``W_U``).
        colour_ids: ``{"blue": id, "green": id}``.
        acts: the training activations (in memory or streamed); firing is measured, in one pass over them, on the
            tokens that are a colour token and on all tokens.
        top_k: blue/green criterion (both colours among the top ``top_k`` positive logits).

    Raises:
        ValueError: not a tied crosscoder, or no colour token among ``acts``.
    """
    if tied.cfg.n_groups != 3:
        raise ValueError(f"need a tied crosscoder (3 latent groups), got {tied.cfg.n_groups} group(s)")
    W_dec = tied.W_dec.detach().cpu()
    ranked_base = colour_latents(W_dec[:, BASE], W_U[names[0]], colour_ids)
    ranked_chat = colour_latents(W_dec[:, CHAT], W_U[names[1]], colour_ids)
    hits_base = sorted(ranked_base.hits(top_k).tolist())
    hits_chat = sorted(ranked_chat.hits(top_k).tolist())
    both = sorted(set(hits_base) & set(hits_chat))
    if both:
        triple = both[0]
    else:  # the better best-ranked candidate of the two halves (the base half on a tie)
        pick = ranked_chat if int(ranked_chat.worst_rank[0]) < int(ranked_base.worst_rank[0]) else ranked_base
        triple = int(pick.indices[0])
    firing = _triple_firing(tied, acts, triple, torch.tensor(list(colour_ids.values())))
    return TiedColourTriple(names, hits_base, hits_chat, triple, firing)


def _triple_firing(tied: Any, acts: Activations, triple: int, colour: Tensor) -> dict[str, list[float]]:
    """Fraction of the colour-token rows and of all rows of ``acts`` on which each group of ``triple`` fires, counted
    chunk by chunk (:func:`tiedlib.analysis.firing.firing_counts`), so streamed activations are never held."""
    counts = {"colour tokens": torch.zeros(3, dtype=torch.long), "all tokens": torch.zeros(3, dtype=torch.long)}
    n = dict.fromkeys(counts, 0)
    for chunk in acts.chunks():
        on = torch.isin(chunk.token_ids, colour)
        for key, rows in (("colour tokens", chunk.acts[on.to(chunk.acts.device)]), ("all tokens", chunk.acts)):
            if rows.shape[0]:
                counts[key] += firing_counts(tied, [rows], normalized=True, chunk_size=4096).counts[:, triple]
                n[key] += rows.shape[0]
    if n["colour tokens"] == 0:
        raise ValueError(f"no colour token ({colour.tolist()}) among the {n['all tokens']} activation rows")
    return {key: (counts[key].double() / n[key]).float().tolist() for key in counts}
