"""Totally new chat latents of a tied crosscoder (the write-up's next step 8), and which planted concept each matches.

The write-up: "Is there actually any totally new chat latent that was not present in the base model? In my
experiments, if the i-chat latent activates for some tokens, then there are even more tokens where the i-shared latent
activates. I believe that if we use a smaller eta we may find some totally new chat latents."

Our rule (:class:`NewChatLatents`): on held-out chat data, triple ``i`` holds a *new chat latent* when its chat part
fires (activation > 0) on at least ``min_fires`` tokens and at most a fraction ``max_overlap`` of those tokens also
have its shared part firing. A chat part that mostly fires together with its shared part refines a concept both models
hold; one that fires where its shared part stays silent carries something the triple's base side never writes there.

:func:`match_concepts` names the planted lab concept each such chat part picks out, with the precision at k and
P(concept | part fires) of :func:`tiedlib.analysis.concepts.part_scores` and the concept's chance rate.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tiedlib.analysis.concepts import part_scores
from tiedlib.analysis.firing import Batch, iter_normalized
from tiedlib.config import CHAT_ONLY, SHARED
from tiedlib.crosscoders.crosscoder import Crosscoder


@dataclass
class NewChatLatents:
    """Per triple: how often its chat part fires, its shared part fires, and both fire on the same token."""

    chat_fires: Int[Tensor, " n_latents"]
    """Tokens on which the chat part fires."""
    shared_fires: Int[Tensor, " n_latents"]
    """Tokens on which the shared part fires."""
    overlap: Int[Tensor, " n_latents"]
    """Tokens on which both fire."""
    min_fires: int
    max_overlap: float

    def __post_init__(self) -> None:
        if self.min_fires < 1 or not 0 <= self.max_overlap < 1:
            raise ValueError(f"need min_fires >= 1 and max_overlap in [0, 1), got {self.min_fires}, {self.max_overlap}")
        if not self.chat_fires.shape == self.shared_fires.shape == self.overlap.shape:
            raise ValueError(f"counts differ in shape: {tuple(self.chat_fires.shape)}, "
                             f"{tuple(self.shared_fires.shape)}, {tuple(self.overlap.shape)}")  # fmt: skip

    @property
    def overlap_fraction(self) -> Float[Tensor, " n_latents"]:
        """Share of the chat part's firings with the shared part firing too; NaN where the chat part never fires."""
        return torch.where(self.chat_fires > 0, self.overlap / self.chat_fires.clamp_min(1), torch.tensor(torch.nan))

    @property
    def firing(self) -> Bool[Tensor, " n_latents"]:
        """Chat parts firing on at least ``min_fires`` tokens (the ones the rule can judge)."""
        return self.chat_fires >= self.min_fires

    @property
    def is_new(self) -> Bool[Tensor, " n_latents"]:
        """The rule: ``chat_fires >= min_fires`` and ``overlap <= max_overlap * chat_fires``."""
        return self.firing & (self.overlap <= self.max_overlap * self.chat_fires)

    @property
    def latents(self) -> Int[Tensor, " k"]:
        """Indices of the triples holding a new chat latent."""
        return self.is_new.nonzero().squeeze(1)

    @property
    def shared_dominates(self) -> Bool[Tensor, " n_latents"]:
        """The write-up's observation: the chat part fires (``>= min_fires``) and the shared part fires on more
        tokens than it."""
        return self.firing & (self.shared_fires > self.chat_fires)


def coactivation(
    f_shared: Float[Tensor, "n_tokens n_latents"], f_chat: Float[Tensor, "n_tokens n_latents"], *, min_fires: int,
    max_overlap: float,
) -> NewChatLatents:  # fmt: skip
    """:class:`NewChatLatents` from the shared and chat parts' activations on the same tokens.

    Raises:
        ValueError: the shapes differ, or ``min_fires`` / ``max_overlap`` are out of range.
    """
    if f_shared.shape != f_chat.shape or f_chat.ndim != 2:
        raise ValueError(f"expected two (n_tokens, n_latents) activations, got {tuple(f_shared.shape)} and "
                         f"{tuple(f_chat.shape)}")  # fmt: skip
    shared, chat = f_shared > 0, f_chat > 0
    return NewChatLatents(chat.sum(0), shared.sum(0), (shared & chat).sum(0), min_fires, max_overlap)


@torch.no_grad()
def new_chat_latents(model: Crosscoder, batches: Iterable[Batch], *, min_fires: int, max_overlap: float,
                     chunk_size: int = 2048) -> NewChatLatents:  # fmt: skip
    """:func:`coactivation` of a tied crosscoder's shared and chat parts on ``batches`` (raw activations, as
    :func:`tiedlib.analysis.firing.iter_normalized` takes them: ``(n_tokens, 2, d_model)`` tensors or
    HarvestBatches; pass chat data only). Streams: memory is one chunk's latents.

    Raises:
        ValueError: ``model`` is not a tied crosscoder.
    """
    if model.cfg.n_groups != 3:
        raise ValueError(f"new chat latents need a tied crosscoder (3 groups), got {model.cfg.architecture!r}")
    n = model.cfg.n_latents
    chat, shared, both = (torch.zeros(n, dtype=torch.long) for _ in range(3))
    for x in iter_normalized(model, batches, chunk_size=chunk_size):
        f = model.encode(x).reshape(x.shape[0], 3, n)  # (chunk, group, latent)
        c, s = (f[:, CHAT_ONLY] > 0).cpu(), (f[:, SHARED] > 0).cpu()
        chat += c.sum(0)
        shared += s.sum(0)
        both += (c & s).sum(0)
    return NewChatLatents(chat, shared, both, min_fires, max_overlap)


MATCH_COLUMNS = ("concept", "precision", "p_fires", "chance", "purity", "matched", "chat_only")


def purity_match(precision: Tensor, p_fires: Tensor, chance: Tensor, *, min_precision: float, min_purity: float
                 ) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``(purity, matched)`` of concept scores (broadcast together): ``purity = (p_fires - chance) / (1 - chance)``
    (0 for a part firing at random, 1 for one firing only on the concept) and ``matched = precision >=
    min_precision and purity >= min_purity`` (NaN compares False), the rule of :func:`match_concepts`."""
    purity = (p_fires.double() - chance) / (1 - chance).clamp_min(1e-12)
    return purity, (precision >= min_precision) & (purity >= min_purity)


def match_concepts(
    acts: Float[Tensor, "n_tokens k_latents"], carries: Bool[Tensor, "n_tokens n_concepts"],
    scored: Bool[Tensor, "n_tokens n_concepts"], concepts: Sequence[str], *, k: int, min_precision: float,
    min_purity: float, chat_only: Collection[str] = (), latents: Sequence[int] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """The planted concept each column of ``acts`` (e.g. the chat parts of the new chat latents, on chat data) picks
    out best, by :func:`tiedlib.analysis.concepts.part_scores` (``carries`` / ``scored`` from
    :func:`~tiedlib.analysis.concepts.positional_labels`).

    Per column: ``concept`` with the highest precision at ``k`` (concepts absent from the data skipped), that
    ``precision``, ``p_fires`` = P(concept | part fires), ``chance`` = the concept's share of its scored positions,
    ``purity`` = ``(p_fires - chance) / (1 - chance)`` (0 for a part firing at random, 1 for one firing only on the
    concept), ``matched`` = ``precision >= min_precision and purity >= min_purity`` and ``chat_only`` = ``matched``
    and the concept is in ``chat_only``. One row per column, indexed by ``latents`` (default ``0..k_latents-1``).

    Raises:
        ValueError: ``concepts`` does not name every label column, or ``latents`` has the wrong length.
    """
    if len(concepts) != carries.shape[1]:
        raise ValueError(f"{len(concepts)} concept names for {carries.shape[1]} label columns")
    index = list(range(acts.shape[1])) if latents is None else [int(i) for i in latents]
    if len(index) != acts.shape[1]:
        raise ValueError(f"{len(index)} latent indices for {acts.shape[1]} activation columns")
    if acts.shape[1] == 0:
        return pd.DataFrame(columns=list(MATCH_COLUMNS), index=pd.Index([], name="triple"))
    scores = part_scores(acts, carries, scored, k)
    best = torch.nan_to_num(scores.precision, nan=-1.0).argmax(dim=0)  # (k_latents,)
    cols = torch.arange(acts.shape[1])
    precision, p_fires = scores.precision[best, cols].double(), scores.p_fires[best, cols].double()
    chance = scores.chance[best]
    purity, matched = purity_match(precision, p_fires, chance, min_precision=min_precision, min_purity=min_purity)
    names = [concepts[int(j)] for j in best]
    return pd.DataFrame({
        "concept": names, "precision": precision.numpy(), "p_fires": p_fires.numpy(), "chance": chance.numpy(),
        "purity": purity.numpy(), "matched": matched.numpy(),
        "chat_only": matched.numpy() & [c in set(chat_only) for c in names],
    }, index=pd.Index(index, name="triple"))  # fmt: skip
