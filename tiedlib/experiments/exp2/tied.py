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
from tiedlib.analysis.logit_lens import ColourLatents, colour_latents
from tiedlib.config import BASE, CHAT, GROUP_NAMES


@dataclass
class TiedColourTriple:
    """Blue/green indices of a tied crosscoder on (``names[0]``, ``names[1]``) and the firing of one triple."""

    names: tuple[str, str]
    hits_base: list[int]
    """Indices whose first-model decoder half is blue/green (ascending)."""
    hits_chat: list[int]
    """Indices whose second-model decoder half is blue/green (ascending)."""
    triple: int | None
    """The triple inspected: the first index blue/green on both halves, else the best-ranked index that passes the
    blue/green test on either half; None when no index passes on any half (a failing candidate is never inspected)."""
    firing: dict[str, list[float]] | None
    """``{"colour tokens": [shared, base-only, chat-only], "all tokens": [...]}``: fraction of tokens on which each
    group of :attr:`triple` fires (None when there is no triple)."""

    @property
    def both(self) -> list[int]:
        """Indices blue/green on both halves."""
        return sorted(set(self.hits_base) & set(self.hits_chat))

    @property
    def single_triple(self) -> bool:
        """Whether blue/green is exactly one triple: one index, the same on both halves."""
        return len(self.both) == 1 and set(self.hits_base) == set(self.hits_chat)

    @property
    def n_passing(self) -> int:
        """Indices that pass the blue/green test on at least one decoder half."""
        return len(set(self.hits_base) | set(self.hits_chat))

    def passing_text(self) -> str:
        """``"<n> indices pass (<base> half <k>, <chat> half <k>, both <k>)"``."""
        return (f"{self.n_passing} indices pass ({self.names[0]} half {len(self.hits_base)}, {self.names[1]} half "
                f"{len(self.hits_chat)}, both {len(self.both)})")

    def firing_text(self) -> str:
        """How often each group of :attr:`triple` fires on colour tokens, or that no index passed."""
        if self.triple is None or self.firing is None:
            return "no index passes the blue/green test on either half, so no triple is inspected"
        return f"triple {self.triple}: " + ", ".join(
            f"{g} fires on {v:.1%} of colour tokens"
            for g, v in zip(GROUP_NAMES, self.firing["colour tokens"], strict=True))

    def summary(self) -> str:
        return "\n".join([
            f"indices whose {self.names[0]} half is blue/green: {self.hits_base}; {self.names[1]} half: "
            f"{self.hits_chat}; both: {self.both}",
            self.firing_text(),
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
    else:  # the better best-ranked *passing* index of the two halves (the base half on a tie), if any passes
        found = [b for b in (_best_passing(ranked_base, top_k), _best_passing(ranked_chat, top_k)) if b is not None]
        triple = min(found, key=lambda b: b[1])[0] if found else None
    if triple is None:
        return TiedColourTriple(names, hits_base, hits_chat, None, None)
    firing = _triple_firing(tied, acts, triple, torch.tensor(list(colour_ids.values())))
    return TiedColourTriple(names, hits_base, hits_chat, triple, firing)


def _best_passing(ranked: ColourLatents, top_k: int) -> tuple[int, int] | None:
    """The best-ranked index of ``ranked`` that passes the blue/green test and its worse colour's rank (None if none
    passes)."""
    ok = (ranked.worst_rank < top_k) & (ranked.colour_logits > 0).all(dim=1)  # ColourLatents.hits' criterion
    if not bool(ok.any()):
        return None
    first = int(torch.nonzero(ok)[0])
    return int(ranked.indices[first]), int(ranked.worst_rank[first])


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
