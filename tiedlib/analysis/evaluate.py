"""Reconstruction that matters: splice a crosscoder's reconstruction into each model and measure the next-token loss.

For every batch of sequences both models run clean once (their residual stream entering decoder layer ``pair.layer``
is read, and their logits kept). The crosscoder reconstructs that residual stream from both models' activations at
once; each model then runs again with its own reconstruction written into the same place (nnsight sets
``layers[layer].input``), and once more with zeros there (zero ablation). BOS and padding positions keep their clean
activation: BOS is an attention sink whose norm is an outlier the crosscoder never saw in training.

Per model the metrics are (REFERENCE.md, "CE-recovered metric"; the standard SAE evaluation):

* ``ce_clean``, ``ce_spliced``, ``ce_zero``: mean next-token cross-entropy (nats) over the predictions made at
  spliced positions (every real non-BOS token with a real next token);
* ``recovered = 1 - (ce_spliced - ce_clean) / (ce_zero - ce_clean)``: 1 for a perfect reconstruction, 0 for one no
  better than zeros;
* ``kl = KL(p_clean || p_spliced)``, mean over the same predictions (nats).

Activations are normalised for the crosscoder (its ``cfg.norm_factors``) and the reconstruction is scaled back to raw
units before it is spliced (:func:`crosscoder_reconstructor`). Works for standard and tied crosscoders (both decode
to ``(batch, 2, d_model)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tiedlib.activations.harvest import as_ids, get_path, layer_path, model_device, pad_left
from tiedlib.config import BASE, CHAT
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.pairs import ModelPair

Reconstructor = Callable[[Float[Tensor, "n_tokens n_models d_model"]], Float[Tensor, "n_tokens n_models d_model"]]
"""Raw paired activations in, their raw reconstruction out (same shape)."""

MODEL_NAMES = ("base", "chat")


@dataclass
class SplicedLoss:
    """Next-token losses of one model with its layer input clean, reconstructed and zeroed (nats per prediction)."""

    ce_clean: float
    ce_spliced: float
    ce_zero: float
    kl: float
    """Mean ``KL(p_clean || p_spliced)`` over the scored predictions."""
    n_predictions: int
    """Predictions scored (one per spliced token with a real next token)."""

    @property
    def recovered(self) -> float:
        """``1 - (ce_spliced - ce_clean) / (ce_zero - ce_clean)``; NaN when zero ablation costs nothing."""
        gap = self.ce_zero - self.ce_clean
        return 1 - (self.ce_spliced - self.ce_clean) / gap if gap != 0 else math.nan

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "recovered": self.recovered}


def crosscoder_reconstructor(crosscoder: Crosscoder) -> Reconstructor:
    """The reconstruction of ``crosscoder`` in raw units: normalise with its ``cfg.norm_factors``, encode and decode,
    divide each model's reconstruction by its factor (a crosscoder without factors works on raw activations as is).

    Raises:
        ValueError: a released crosscoder trained on normalised activations whose factors are unknown.
    """
    crosscoder._require_factors("reconstruct raw activations")
    factors = crosscoder.cfg.norm_factors

    @torch.no_grad()
    def reconstruct(x: Tensor) -> Tensor:
        w = crosscoder.W_dec
        x_hat = crosscoder(crosscoder.normalize(x.to(device=w.device, dtype=w.dtype))).x_hat
        if factors is not None:
            x_hat = x_hat / torch.tensor(factors, dtype=x_hat.dtype, device=x_hat.device)[None, :, None]
        return x_hat.to(device=x.device, dtype=x.dtype)

    return reconstruct


def _run(model: Any, path: str, layer: int, inputs: dict[str, Tensor], replace: Tensor | None) -> tuple[Tensor, Tensor]:
    """One forward pass: the input of decoder layer ``layer`` (replaced by ``replace`` when given) and the logits."""
    layers = get_path(model, path)
    with model.trace(inputs, use_cache=False):
        if replace is not None:
            layers[layer].input = replace
        hidden = layers[layer].input.save()
        logits = model.output.logits.save()
    return hidden, logits


class _Totals:
    """Running sums of the per-prediction losses of one model."""

    def __init__(self) -> None:
        self.clean = self.spliced = self.zero = self.kl = 0.0
        self.n = 0

    def add(self, clean: Tensor, spliced: Tensor, zero: Tensor, targets: Tensor) -> None:
        """Add ``(n, vocab)`` logits of the three runs at the scored positions and their ``(n,)`` target ids."""
        lp_clean = F.log_softmax(clean.double(), dim=-1)
        lp_spliced = F.log_softmax(spliced.double(), dim=-1)
        self.clean += float(F.nll_loss(lp_clean, targets, reduction="sum"))
        self.spliced += float(F.nll_loss(lp_spliced, targets, reduction="sum"))
        self.zero += float(F.cross_entropy(zero.double(), targets, reduction="sum"))
        # KL(clean || spliced) = sum_v p_clean (log p_clean - log p_spliced), per prediction.
        self.kl += float(F.kl_div(lp_spliced, lp_clean, log_target=True, reduction="sum"))
        self.n += int(targets.numel())

    def result(self) -> SplicedLoss:
        if self.n == 0:
            raise ValueError("no prediction to score: every sequence needs at least one token after BOS")
        n = self.n
        return SplicedLoss(self.clean / n, self.spliced / n, self.zero / n, self.kl / n, n)


@torch.no_grad()
def spliced_losses(
    pair: ModelPair,
    sequences: Sequence[Sequence[int]],
    reconstruct: Reconstructor | Crosscoder,
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, SplicedLoss]:
    """Clean, spliced and zero-ablated next-token losses of each model of ``pair`` on ``sequences``.

    Args:
        pair: the model pair (its ``layer`` is where activations are read and replaced).
        sequences: token-id sequences, each starting with BOS (left-padded in batches; padding is never scored).
        reconstruct: a crosscoder (see :func:`crosscoder_reconstructor`) or any :data:`Reconstructor` mapping raw
            ``(n_tokens, 2, d_model)`` activations to their raw reconstruction.
        batch_size: sequences per clean forward pass (the spliced and zeroed runs of a model go through one pass of
            twice that batch).
        progress: show a tqdm bar.

    Returns:
        ``{"base": SplicedLoss, "chat": SplicedLoss}``.

    Raises:
        ValueError: no sequences, a sequence without a token after BOS, or a reconstruction of the wrong shape.
    """
    if len(sequences) == 0:
        raise ValueError("no sequences to evaluate")
    if isinstance(reconstruct, Crosscoder):
        reconstruct = crosscoder_reconstructor(reconstruct)
    tok = pair.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    bos_id = tok.bos_token_id
    models = (pair.base, pair.chat)
    paths = [layer_path(m) for m in models]
    totals = (_Totals(), _Totals())
    for start in tqdm(range(0, len(sequences), batch_size), desc="spliced CE", disable=not progress):
        seqs = [as_ids(s) for s in sequences[start : start + batch_size]]
        ids, mask, position = pad_left(seqs, int(pad_id))
        splice = mask.bool() if bos_id is None else mask.bool() & (ids != bos_id)
        # Score the prediction made at position t when t is spliced and token t + 1 is real (left padding: every
        # token after a real one is real, so only the last column lacks a target).
        scored = splice[:, :-1]
        targets = ids[:, 1:][scored]
        clean = []
        for m, model in enumerate(models):
            dev = model_device(model)
            inputs = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "position_ids": position.to(dev)}
            clean.append((inputs, *_run(model, paths[m], pair.layer, inputs, None)))
        acts = torch.stack([clean[BASE][1][splice.to(clean[BASE][1].device)].float(),
                            clean[CHAT][1][splice.to(clean[CHAT][1].device)].float()], dim=1)  # fmt: skip
        x_hat = reconstruct(acts)
        if tuple(x_hat.shape) != tuple(acts.shape):
            raise ValueError(f"the reconstruction has shape {tuple(x_hat.shape)}, expected {tuple(acts.shape)}")
        for m, model in enumerate(models):
            inputs, hidden, logits = clean[m]
            keep = splice.to(hidden.device)
            spliced, zeroed = hidden.clone(), hidden.clone()
            spliced[keep] = x_hat[:, m].to(device=hidden.device, dtype=hidden.dtype)
            zeroed[keep] = 0
            # One pass over both ablations (batch doubled): fewer traces, the same numbers.
            doubled = {key: torch.cat([v, v]) for key, v in inputs.items()}
            _, both = _run(model, paths[m], pair.layer, doubled, torch.cat([spliced, zeroed]))
            logits_spliced, logits_zero = both.chunk(2)
            at = scored.to(logits.device)
            totals[m].add(
                logits[:, :-1][at], logits_spliced[:, :-1][at], logits_zero[:, :-1][at], targets.to(logits.device)
            )
    return {name: t.result() for name, t in zip(MODEL_NAMES, totals, strict=True)}


def spliced_table(results: dict[str, dict[str, SplicedLoss]]) -> pd.DataFrame:
    """One row per (crosscoder, model): ``ce_clean, ce_spliced, ce_zero, recovered, kl, n_predictions``.

    Args:
        results: ``{crosscoder name: spliced_losses(...)}``.
    """
    rows = [{"crosscoder": name, "model": model, **loss.as_dict()}
            for name, per_model in results.items() for model, loss in per_model.items()]  # fmt: skip
    cols = ["ce_clean", "ce_spliced", "ce_zero", "recovered", "kl", "n_predictions"]
    return pd.DataFrame(rows).set_index(["crosscoder", "model"])[cols]
