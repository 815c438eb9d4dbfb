"""Memory a crosscoder training step needs, computed from the configs alone (no allocation): for ``--dry-run``
plans and to size a run before it starts. ``tests/test_training_memory.py`` checks the figures against the torch
profiler's memory statistics of real steps on CPU at reduced sizes.
"""

from __future__ import annotations

from tiedlib.config import CrosscoderConfig

FP32 = 4


def crosscoder_n_params(cfg: CrosscoderConfig) -> int:
    """Parameters of a crosscoder: ``W_enc (2, d, G n)``, ``b_enc (G n)``, ``W_dec (n, 2, d)``, ``b_dec (2, d)``."""
    d, n, g = cfg.d_model, cfg.n_latents, cfg.n_groups
    return 2 * d * g * n + g * n + 2 * n * d + 2 * d


def train_state_nbytes(cfg: CrosscoderConfig) -> int:
    """Bytes of the training state: fp32 weights, their gradients and Adam's two moments (4 x 4 bytes a parameter).

    A paper-shape tied crosscoder (d_model 2304, 3 x 16,384 latents: 302M parameters) needs 4.8 GB.
    """
    return 4 * FP32 * crosscoder_n_params(cfg)


def step_transient_nbytes(cfg: CrosscoderConfig, batch_size: int, *, bf16: bool = False) -> int:
    """Peak bytes one training step allocates on top of :func:`train_state_nbytes` (ReLU crosscoders).

    The fused loss (:class:`~tiedlib.crosscoders.fused.ReluCrosscoderLoss`) keeps the latents ``(batch, G n)`` and,
    for the tied decoder, its coefficients ``(batch, 2, n)`` for the backward, which writes the latent gradient into
    those same buffers (the standard crosscoder needs one more ``(batch, n)``); all in bf16 under autocast. The
    encoder weights get a bias-augmented copy ``(2 d + 1, G n)`` (and the decoder a bf16 copy under autocast). The
    activations ``(batch, 2, d)`` appear a few times (input, ones-augmented copy, reconstruction, error). At paper
    shapes (batch 4096, tied, fp32) this is 3.0 GB.
    """
    d, n, g = cfg.d_model, cfg.n_latents, cfg.n_groups
    item = 2 if bf16 else FP32
    latents = batch_size * g * n * item  # f, saved for the backward, then the latent gradient
    coeffs = batch_size * 2 * n * item if g == 3 else 0  # tied decoder's coefficients, saved for the backward
    latent_grad = batch_size * n * item if g == 1 else 0
    rows = 4 * batch_size * 2 * d * FP32 + batch_size * (2 * d + 1) * item
    weight_copies = (2 * d + 1) * g * n * item + (2 * n * d * item if bf16 else 0)
    return latents + coeffs + latent_grad + rows + weight_copies


def paired_activation_nbytes(d_model: int, itemsize: int) -> int:
    """Bytes of one token's paired activations ``(2, d_model)``: 9,216 (9.2 KB) for Gemma-2-2b in bf16."""
    return 2 * d_model * itemsize
