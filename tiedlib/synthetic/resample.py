"""Dead-latent resampling for the exclusive groups of a tied crosscoder (issue 15), and a training run that uses it.

Bricken et al. 2023, "Towards Monosemanticity: Decomposing Language Models With Dictionary Learning" (Anthropic,
transformer-circuits.pub/2023/monosemantic-features, section "Neuron Resampling"): at a few fixed steps of training,
find the latents that have not fired on a sample of inputs, compute the loss of each input of the sample, and for
each dead latent draw an input with probability proportional to the *square* of its loss; the latent's decoder row
becomes that input, normalised; its encoder row the normalised input times 0.2 x the mean encoder-row norm of the
alive latents; its bias 0; and the Adam state of every changed weight is reset.

Adapted to a tied crosscoder (:func:`resample_dead_exclusive_`): only the base and chat groups are resampled (issue
15: "exclusive groups die and are never revived"); a base (chat) latent's loss is the base (chat) model's squared
error; its encoder column reads both models, as every tied encoder does. A triple has one decoder pair for its three
latents, so a dead base (chat) latent's decoder half is rewritten only where its triple's shared latent, the other
user of that half, is dead too; otherwise the shared latent is using it and only the encoder column and bias move.

The main training loop has no step hook for this (and must not grow one for a benchmark variant), so
:func:`train_resampling` runs the same steps as :func:`tiedlib.training.train` (same seeding, optimiser, l1 warm-up,
lr schedule, clipping, constraints) with resampling after the given steps; without resample steps it ends with the
same weights as :func:`tiedlib.training.train` (tested).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from tiedlib.config import BASE_ONLY, CHAT_ONLY, SHARED, TrainConfig
from tiedlib.crosscoders.crosscoder import Crosscoder
from tiedlib.training.loop import l1_coeff_at, make_optimizer, train_step

ENCODER_SCALE = 0.2
"""Bricken et al.: a resampled encoder row is 0.2 x the mean norm of the alive latents' encoder rows."""


@torch.no_grad()
def resample_dead_exclusive_(
    model: Crosscoder,
    x: Float[Tensor, "n_rows 2 d_model"],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, int]:
    """In place: re-initialise the base and chat latents of a tied crosscoder that fire on no row of ``x`` (Bricken
    et al. 2023 resampling, adapted as the module docstring says).

    Args:
        model: a tied crosscoder (``W_enc (2, d, 3, n)``, ``b_enc (3, n)``, ``W_dec (n, 2, d)``).
        x: the sample of training rows that decides which latents are dead and which rows are drawn.
        optimizer: its Adam state (``exp_avg``, ``exp_avg_sq``) is zeroed for every changed weight.
        generator: draws the rows (None: the global generator).

    Returns:
        ``{"base": ..., "chat": ..., "decoders": ...}``: latents resampled per group, and decoder halves rewritten.

    Raises:
        ValueError: not a tied crosscoder, or ``x`` of the wrong shape.
    """
    cfg = model.cfg
    if cfg.n_groups != 3:
        raise ValueError(f"resampling exclusive groups needs a tied crosscoder, got {cfg.architecture!r}")
    if x.ndim != 3 or tuple(x.shape[1:]) != (2, cfg.d_model) or x.shape[0] == 0:
        raise ValueError(f"expected rows of shape (n_rows, 2, {cfg.d_model}), got {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    f = model.encode(x)  # (rows, 3, n)
    err = (x - model.decode(f)).pow(2).sum(dim=-1)  # (rows, 2): squared error per model
    model.train(was_training)
    fired = (f > 0).any(dim=0)  # (3, n)
    W_enc, b_enc, W_dec = model.W_enc, model.b_enc, model.W_dec
    enc_norms = W_enc.norm(dim=(0, 1))  # (3, n): norm of each latent's encoder column (both models)
    alive_norm = float(enc_norms[fired].mean()) if fired.any() else float(enc_norms.mean())
    dec_norms = W_dec.norm(dim=-1)  # (n, 2)
    counts = {"base": 0, "chat": 0, "decoders": 0}
    changed_enc, changed_dec = [], []
    for group, name in ((BASE_ONLY, "base"), (CHAT_ONLY, "chat")):
        dead = (~fired[group]).nonzero().squeeze(1)
        if dead.numel() == 0:
            continue
        m = group - 1  # the model this group writes into
        weights = err[:, m].pow(2)  # Bricken et al.: probability proportional to the square of the loss
        if not weights.sum() > 0:
            weights = torch.ones_like(weights)
        rows = torch.multinomial(weights, dead.numel(), replacement=True, generator=generator)
        v = x[rows].to(W_enc.dtype)  # (n_dead, 2, d)
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        W_enc[:, :, group, dead] = ENCODER_SCALE * alive_norm * v.permute(1, 2, 0)
        b_enc[group, dead] = 0.0
        changed_enc.append((group, dead))
        counts[name] = int(dead.numel())
        free = ~fired[SHARED, dead]  # the shared latent (the other user of this half) is dead too: the half is free
        if free.any():
            idx = dead[free]
            half = v[free, m]
            used = fired[SHARED] | fired[group]
            scale = float(dec_norms[used, m].mean()) if used.any() else cfg.dec_init_norm
            W_dec[idx, m] = scale * half / half.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            changed_dec.append((idx, m))
            counts["decoders"] += int(idx.numel())
    if optimizer is not None:
        _reset_adam_(optimizer, W_enc, b_enc, W_dec, changed_enc, changed_dec)
    model.apply_constraints_()
    return counts


def _reset_adam_(optimizer: torch.optim.Optimizer, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor,
                 changed_enc: list[tuple[int, Tensor]], changed_dec: list[tuple[Tensor, int]]) -> None:  # fmt: skip
    """Zero Adam's moments of the resampled encoder columns, biases and decoder halves (Bricken et al.)."""
    for key in ("exp_avg", "exp_avg_sq"):
        for param, where in ((W_enc, "enc"), (b_enc, "bias"), (W_dec, "dec")):
            state = optimizer.state.get(param, {})
            if key not in state:
                continue
            buf = state[key]
            if where == "dec":
                for idx, m in changed_dec:
                    buf[idx, m] = 0.0
            else:
                for group, dead in changed_enc:
                    if where == "enc":
                        buf[:, :, group, dead] = 0.0
                    else:
                        buf[group, dead] = 0.0


def resample_steps(n_steps: int, fractions: Sequence[float]) -> list[int]:
    """The steps (after which to resample) at ``fractions`` of ``n_steps``, each in ``[1, n_steps - 1]``."""
    if any(not 0 < q < 1 for q in fractions):
        raise ValueError(f"resampling fractions must lie in (0, 1), got {list(fractions)}")
    return sorted({min(n_steps - 1, max(1, round(q * n_steps))) for q in fractions})


def train_resampling(cfg: TrainConfig, model: Crosscoder, data: Iterator[Tensor], *, sample: Tensor,
                     steps: Sequence[int]) -> Crosscoder:  # fmt: skip
    """Train as :func:`tiedlib.training.train` does (in memory, no run directory or logging), calling
    :func:`resample_dead_exclusive_` on ``sample`` ``(n_rows, 2, d_model)`` (with the optimiser, so its Adam state is
    reset) after each step in ``steps``. Returns the trained model."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model.to(cfg.device)
    opt, sched = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    todo = set(steps)
    data_iter = iter(data)
    for step in range(cfg.n_steps):
        batch = next(data_iter).to(cfg.device)
        train_step(model, opt, batch, l1_coeff=l1_coeff_at(step, cfg), grad_clip=cfg.grad_clip, metrics=False,
                   bf16=cfg.bf16)  # fmt: skip
        sched.step()
        if step + 1 in todo:
            resample_dead_exclusive_(model, sample.to(cfg.device), optimizer=opt, generator=gen)
    return model
