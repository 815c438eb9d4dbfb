"""Hand-written autograd for the crosscoders' hot path: fewer elementwise passes over the latents.

The latents ``(batch, n_groups * n_latents)`` are the largest tensors of a training step (at paper shapes, 4096 x
3 x 16,384 floats = 805 MB per pass in fp32, against 75 MB for the activations). Autograd's version of the loss
made about ten passes over them per step besides the matrix products: bias copy, ReLU, the tied decoder's
coefficients, the batch sum of the penalty, then in the backward a fresh latent gradient, a copy into it, the
penalty gradient, the ReLU mask into another fresh tensor and the bias gradient.

:class:`ReluCrosscoderLoss` does encode, ReLU, decode and the weighted L1 as one autograd node. Its backward writes
the latent gradient once, straight from the decoder's matrix products into one preallocated buffer (the penalty
gradient rides in as the products' bias), masks it in place and reuses it for the encoder's gradients
(``benchmarks/bench_crosscoder.py`` measures the step against its matrix products alone). The loss equals the plain
autograd formulation (``tests/crosscoders/test_crosscoder.py`` compares every gradient).

Mixed precision: under ``torch.autocast`` the matrix products and the latents use the autocast dtype (bf16), in the
forward *and* the backward (autograd would otherwise run a custom backward outside the autocast region), while the
parameters and their gradients stay fp32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

ALIGNED_DEVICES = ("cuda",)
"""Device types whose matrix products get 16-aligned leading dimensions (tensor cores want them)."""


def compute_dtype(x: Tensor, param: Tensor) -> torch.dtype:
    """The dtype of the matrix products: the autocast dtype inside an autocast region on ``x``'s device, else the
    parameters' dtype."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return param.dtype


class ReluCrosscoderLoss(torch.autograd.Function):
    """Encode (ReLU), decode and per-group weighted L1 of a standard (1 group) or tied (3 groups) crosscoder.

    Forward inputs:
        x: ``(batch, 2 * d_model)`` flattened paired activations.
        W_enc: ``(2 * d_model, n_groups * n_latents)`` (the parameter reshaped, a view).
        b_enc: ``(n_groups * n_latents,)``.
        W_dec: ``(n_latents, 2, d_model)``; b_dec: ``(2, d_model)``.
        penalty_weights: maps the decoder norms ``(n_latents, 2)`` to the penalty weight of each latent
            ``(n_groups, n_latents)`` (:func:`~tiedlib.crosscoders.losses.tied_penalty_weights` or
            :func:`~tiedlib.crosscoders.losses.standard_penalty_weights`); differentiated in the backward.
        dtype: dtype of the matrix products and latents (see :func:`compute_dtype`).

    Returns:
        f: ``(batch, n_groups * n_latents)`` latents, detached, for metrics: read them before the backward pass, which
            reuses their memory for the latent gradient.
        x_hat: ``(batch, 2, d_model)`` reconstruction. Standard: ``f W_dec + b_dec``; tied (groups shared, base,
            chat): ``x_hat[:, m] = (f_shared + f_m) W_dec[:, m] + b_dec[m]`` (the write-up's decoder).
        sparsity: ``(n_groups,)`` mean over the batch of ``sum_i f[g, i] weights[g, i]``, fp32.
    """

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
                penalty_weights: Callable[[Tensor], Tensor], dtype: torch.dtype):  # fmt: skip
        ctx.set_materialize_grads(False)  # f has no gradient: never build a zero (batch, G n) tensor for it
        batch, two_d = x.shape
        n, _, d = W_dec.shape
        with torch.autocast(x.device.type, enabled=False):
            norms = W_dec.detach().float().norm(dim=-1)  # (n, 2)
            weights = penalty_weights(norms)  # (G, n)
            groups = weights.shape[0]
            # The encoder bias rides in the product as one more input row against a column of ones in x, so the
            # latents are written once by the product (no bias copy into them first), and the backward's encoder
            # product yields the bias gradient as that row (no pass over the latent gradient). On GPUs zero rows pad
            # the depth to a multiple of 16, keeping leading dimensions aligned for tensor cores.
            width = -(-(two_d + 1) // 16) * 16 if x.device.type in ALIGNED_DEVICES else two_d + 1
            x_aug = torch.zeros(batch, width, dtype=dtype, device=x.device)
            x_aug[:, :two_d] = x
            x_aug[:, two_d] = 1
            W_aug = torch.zeros(width, W_enc.shape[1], dtype=dtype, device=x.device)
            W_aug[:two_d] = W_enc
            W_aug[two_d] = b_enc
            Wd = W_dec.to(dtype)
            f = torch.mm(x_aug, W_aug).clamp_min_(0)  # (batch, G n): ReLU in place
            coeffs = None
            if groups == 3:
                fg = f.view(batch, 3, n)
                coeffs = fg[:, 1:] + fg[:, :1]  # (batch, 2, n): shared + base, shared + chat
                x_hat = torch.baddbmm(b_dec.to(dtype).unsqueeze(1), coeffs.transpose(0, 1), Wd.transpose(0, 1))
                x_hat = x_hat.transpose(0, 1)  # (batch, 2, d)
            else:
                x_hat = torch.addmm(b_dec.to(dtype).reshape(-1), f, Wd.reshape(n, 2 * d)).view(batch, 2, d)
            # (G, n). Not sum(dtype=float32): that would first copy bf16 latents to a float32 tensor; a bf16 sum
            # accumulates in float32 and rounds once.
            f_sum = f.view(batch, groups, n).sum(dim=0).float()
            sparsity = (f_sum * weights).sum(dim=-1) / batch
        ctx.save_for_backward(x_aug, W_aug, Wd, W_dec, f, coeffs, f_sum, norms)
        ctx.penalty_weights, ctx.dtype, ctx.x_dtype, ctx.two_d = penalty_weights, dtype, x.dtype, two_d
        ctx.mark_non_differentiable(f)
        return f, x_hat, sparsity

    @staticmethod
    def backward(ctx, _grad_f, grad_x_hat, grad_sparsity):
        # The latent gradient is written into the buffers of the saved latents and coefficients (both dead after
        # this), so the backward allocates no (batch, G n) tensor: the returned latents are overwritten here.
        x_aug, W_aug, Wd, W_dec, f, coeffs, f_sum, norms = ctx.saved_tensors
        dtype, device, two_d = ctx.dtype, x_aug.device, ctx.two_d
        batch, n, d = x_aug.shape[0], W_dec.shape[0], W_dec.shape[2]
        with torch.autocast(device.type, enabled=False):
            norms_ = norms.detach().requires_grad_()
            with torch.enable_grad():
                weights = ctx.penalty_weights(norms_)  # (G, n), differentiable in the norms
            groups = weights.shape[0]
            if grad_x_hat is None:
                grad_x_hat = torch.zeros(batch, 2, d, dtype=dtype, device=device)
            if grad_sparsity is None:
                grad_sparsity = torch.zeros(groups, dtype=torch.float32, device=device)
            g = grad_x_hat.to(dtype)
            scale = grad_sparsity.float() / batch  # (G,)
            # d sparsity / d f[b, g, i] = weights[g, i] * scale[g], the same for every row: it is the bias of the
            # decoder-gradient products below.
            w_grad = (weights.detach() * scale[:, None]).to(dtype)  # (G, n)
            d_W_dec = None
            if groups == 3:
                fg = f.view(batch, 3, n)
                if ctx.needs_input_grad[3]:
                    d_W_dec = torch.empty(n, 2, d, dtype=dtype, device=device)
                    for m in (0, 1):  # written in place, in the parameter's layout
                        torch.mm(coeffs[:, m].t(), g[:, m], out=d_W_dec[:, m])
                raw = coeffs  # now free: d loss / d (f_shared + f_m), the penalty's share included
                for m in (0, 1):
                    torch.addmm(w_grad[1 + m], g[:, m], Wd[:, m].t(), out=raw[:, m])
                    # ReLU backward into the latents' own buffer: zero where the latent did not fire.
                    torch.ops.aten.threshold_backward.grad_input(raw[:, m], fg[:, 1 + m], 0, grad_input=fg[:, 1 + m])
                # The shared latent feeds both models: raw_base + raw_chat + w_shared - w_base - w_chat.
                shared = torch.add(raw[:, 0], raw[:, 1], out=raw[:, 0])
                shared += w_grad[0] - w_grad[1] - w_grad[2]
                torch.ops.aten.threshold_backward.grad_input(shared, fg[:, 0], 0, grad_input=fg[:, 0])
            else:
                if ctx.needs_input_grad[3]:
                    d_W_dec = torch.mm(f.t(), g.reshape(batch, 2 * d)).view(n, 2, d)
                raw = torch.addmm(w_grad[0], g.reshape(batch, 2 * d), Wd.reshape(n, 2 * d).t())
                torch.ops.aten.threshold_backward.grad_input(raw, f, 0, grad_input=f)
            d_pre = f  # (batch, G n): the masked latent gradient
            d_x = d_W_enc = d_b_enc = None
            if ctx.needs_input_grad[0]:
                d_x = torch.mm(d_pre, W_aug[:two_d].t()).to(ctx.x_dtype)
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                d_enc = torch.mm(x_aug.t(), d_pre).to(W_dec.dtype)
                d_W_enc, d_b_enc = d_enc[:two_d], d_enc[two_d]  # (2d, G n) and the ones column's row: (G n,)
            if d_W_dec is not None:
                d_W_dec = d_W_dec.to(W_dec.dtype)
                # The penalty weights depend on the decoder norms: d||w|| / dw = w / ||w|| (0 for a zero row).
                (d_norms,) = torch.autograd.grad(weights, norms_, f_sum * scale[:, None])
                coef = torch.where(norms > 0, d_norms / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0)
                d_W_dec.addcmul_(W_dec, coef.unsqueeze(-1).to(W_dec.dtype))
            d_b_dec = g.sum(dim=(0,), dtype=torch.float32).to(W_dec.dtype) if ctx.needs_input_grad[4] else None
        return d_x, d_W_enc, d_b_enc, d_W_dec, d_b_dec, None, None


class TiedDecode(torch.autograd.Function):
    """``x_hat[:, m] = (f_shared + f_m) @ W_dec[:, m] + b_dec[m]`` for latents ``(batch, 3, n)``, with a
    hand-written backward (the tied decoder outside the training loss: analysis, splicing).

    Autograd's version (stack the two coefficient matrices, batched matmul, unbind) spent about a third of the
    decoder's time on copies; here the coefficients are one broadcast add and the backward writes the latent
    gradient into one buffer.
    """

    @staticmethod
    def forward(ctx, f: Float[Tensor, "batch 3 n"], W_dec: Tensor, b_dec: Tensor) -> Tensor:
        coeffs = f[:, 1:] + f[:, :1]  # (batch, 2, n): shared + base, shared + chat
        out = torch.baddbmm(b_dec.unsqueeze(1), coeffs.transpose(0, 1), W_dec.transpose(0, 1))  # (2, batch, d)
        ctx.save_for_backward(coeffs, W_dec)
        return out.transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        coeffs, W_dec = ctx.saved_tensors
        g = grad_out.transpose(0, 1).to(coeffs.dtype)  # (2, batch, d), in the latents' dtype (autocast: bf16)
        W = W_dec.to(coeffs.dtype)
        batch, n = coeffs.shape[0], coeffs.shape[2]
        d_f = torch.empty(batch, 3, n, dtype=coeffs.dtype, device=coeffs.device)
        for m in (0, 1):
            torch.mm(g[m], W[:, m].t(), out=d_f[:, 1 + m])
        torch.add(d_f[:, 1], d_f[:, 2], out=d_f[:, 0])  # the shared latent feeds both models
        d_W = torch.bmm(coeffs.permute(1, 2, 0), g).transpose(0, 1)  # (n, 2, d)
        return d_f, d_W.to(W_dec.dtype), grad_out.sum(dim=0, dtype=torch.float32).to(W_dec.dtype)
