"""Where chat latents fire: the share of each latent's activation mass on chat-template and assistant tokens.

The write-up (next step 4) expects chat behaviour to be more localised in the tied crosscoder: more of its
chat-exclusive latents firing on the Assistant token than in a standard crosscoder. Minder et al. (2025) report that
about 40% of their robust chat-specific latents fire mainly on chat-template tokens.

Token roles are read from the token ids alone, so the same code serves the lab pair and Gemma:

* **template**: a chat-template token (:func:`tiedlib.pairs.template_ids`: the turn markers, and for lab pairs the
  role words after them);
* **assistant**: a token inside an assistant turn: after ``<start_of_turn>`` and the assistant role word (``model``)
  and before the next ``<end_of_turn>``, template tokens excluded.

A latent's template fraction is ``sum over template tokens of f / sum over all tokens of f`` (its activation mass);
it "fires mainly on template tokens" when that fraction exceeds one half.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tiedlib.activations.harvest import HarvestBatch, as_ids
from tiedlib.config import GROUP_NAMES
from tiedlib.crosscoders.crosscoder import Crosscoder

TURN_TOKENS = ("<start_of_turn>", "<end_of_turn>", "model")
"""Gemma's turn markers and assistant role word (the lab tokenizer uses the same)."""


def turn_token_ids(tokenizer) -> tuple[int, int, int]:
    """Ids of ``<start_of_turn>``, ``<end_of_turn>`` and the assistant role word ``model`` in ``tokenizer``.

    Raises:
        ValueError: the tokenizer lacks one of them (not a Gemma-style chat template).
    """
    ids = []
    for token in TURN_TOKENS:
        i = tokenizer.convert_tokens_to_ids(token)
        if i is None or i == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r} token: assistant turns are found by Gemma's turn markers "
                             f"{TURN_TOKENS}")  # fmt: skip
        ids.append(int(i))
    return ids[0], ids[1], ids[2]


def assistant_mask(ids: Sequence[int], start_id: int, end_id: int, role_id: int) -> list[bool]:
    """Per token of one sequence: inside an assistant turn (after ``start_id role_id``, before ``end_id``)?

    The markers themselves are not inside; a turn left open at the end of the sequence runs to its end.
    """
    out, inside = [], False
    for t, token in enumerate(ids):
        if token == end_id:
            inside = False
        out.append(inside)
        if token == role_id and t > 0 and ids[t - 1] == start_id:
            inside = True
    return out


class TokenRoles(NamedTuple):
    """Role flags of harvested tokens (aligned with a :class:`HarvestBatch`'s rows)."""

    template: Bool[Tensor, " n_tokens"]
    assistant: Bool[Tensor, " n_tokens"]


def token_roles(harvest: HarvestBatch, sequences: Sequence[Sequence[int]], template_ids: Iterable[int],
                turn_ids: tuple[int, int, int]) -> TokenRoles:  # fmt: skip
    """Template and assistant flags for every row of ``harvest``, harvested from ``sequences``.

    Args:
        harvest: rows with ``doc_index`` into ``sequences`` and ``position`` (index in the sequence).
        sequences: the token-id sequences that were harvested.
        template_ids: chat-template token ids (:func:`tiedlib.pairs.template_ids`).
        turn_ids: ``(start_of_turn, end_of_turn, assistant role)`` ids (:func:`turn_token_ids`).
    """
    template = torch.isin(harvest.token_ids, torch.tensor(sorted({int(t) for t in template_ids}), dtype=torch.long))
    masks = [torch.tensor(assistant_mask(as_ids(s), *turn_ids), dtype=torch.bool) for s in sequences]
    pairs = zip(harvest.doc_index.tolist(), harvest.position.tolist(), strict=True)
    assistant = torch.tensor([bool(masks[d][p]) for d, p in pairs], dtype=torch.bool)
    return TokenRoles(template, assistant & ~template)


class Localisation(NamedTuple):
    """Activation mass of ``k`` latents and the fractions of it on template and assistant tokens."""

    latents: Int[Tensor, " k"]
    group: str | None
    mass: Float[Tensor, " k"]
    """Sum of the latent's activation over all tokens (0: it never fired)."""
    template_fraction: Float[Tensor, " k"]
    """NaN for a latent that never fired."""
    assistant_fraction: Float[Tensor, " k"]

    def mainly(self, where: str = "template", threshold: float = 0.5) -> Bool[Tensor, " k"]:
        """Latents whose ``where`` (``"template"`` or ``"assistant"``) fraction exceeds ``threshold``."""
        if where not in ("template", "assistant"):
            raise ValueError(f"where must be 'template' or 'assistant', got {where!r}")
        frac = self.template_fraction if where == "template" else self.assistant_fraction
        return frac > threshold

    def share_mainly(self, where: str = "template", threshold: float = 0.5) -> float:
        """Fraction of the latents that fired at all which fire mainly on ``where`` tokens (NaN if none fired)."""
        fired = self.mass > 0
        if not fired.any():
            return float("nan")
        return float(self.mainly(where, threshold)[fired].float().mean())


@torch.no_grad()
def localisation(
    model: Crosscoder,
    acts: Float[Tensor, "n_tokens n_models d_model"],
    roles: TokenRoles,
    latents: Sequence[int] | Tensor,
    *,
    group: str | None = None,
    normalized: bool = False,
    chunk_size: int = 4096,
) -> Localisation:
    """Activation mass of ``latents`` on all tokens, template tokens and assistant tokens.

    Args:
        model: a standard or tied crosscoder.
        acts: raw activations (normalised with the model's factors unless ``normalized``), rows aligned with ``roles``.
        roles: :func:`token_roles` of the same rows.
        latents: latent indices; for a tied crosscoder, triple indices of ``group``.
        group: ``"shared"``, ``"base"`` or ``"chat"`` for a tied crosscoder; ``None`` for a standard one.

    Raises:
        ValueError: mismatched rows, latents out of range, or ``group`` wrong for the architecture.
    """
    if roles.template.shape[0] != acts.shape[0] or roles.assistant.shape[0] != acts.shape[0]:
        raise ValueError(f"roles have {roles.template.shape[0]} rows but there are {acts.shape[0]} activation rows")
    latents = torch.as_tensor(latents, dtype=torch.long).reshape(-1).cpu()
    n = model.cfg.n_latents
    if latents.numel() and (latents.min() < 0 or latents.max() >= n):
        raise ValueError(f"latent indices must be in [0, {n}), got {latents.tolist()}")
    if model.cfg.n_groups == 1:
        if group is not None:
            raise ValueError(f"a standard crosscoder has no latent groups; pass group=None, not {group!r}")
        offset = 0
    elif group not in GROUP_NAMES:
        raise ValueError(f"a tied crosscoder needs group in {GROUP_NAMES}, got {group!r}")
    else:
        offset = GROUP_NAMES.index(group) * n
    dev = model.W_dec.device
    columns = (latents + offset).to(dev)
    sums = torch.zeros(3, latents.numel(), dtype=torch.float64, device=dev)
    for start in range(0, acts.shape[0], chunk_size):
        x = acts[start : start + chunk_size].to(device=dev, dtype=torch.float32)
        f = model.encode(x if normalized else model.normalize(x)).reshape(x.shape[0], -1)[:, columns].double()
        where = torch.stack([torch.ones(x.shape[0], dtype=torch.bool), roles.template[start : start + chunk_size],
                             roles.assistant[start : start + chunk_size]]).to(dev).double()  # fmt: skip
        sums += where @ f
    mass = sums[0]
    fired = mass > 0
    frac = torch.where(fired, sums[1:] / mass.clamp_min(1e-300), torch.nan).float().cpu()
    return Localisation(latents, group, mass.float().cpu(), frac[0], frac[1])
