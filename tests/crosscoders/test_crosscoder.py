import math

import pytest
import torch

from tests.helpers import make_cfg, make_model, random_rows
from tiedlib import CrosscoderConfig, StandardCrosscoder, TiedCrosscoder, make_crosscoder

ARCHS = ["standard", "tied"]


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_match_released_layouts(arch):
    model = make_model(architecture=arch, d_model=16, n_latents=64)
    groups = (3,) if arch == "tied" else ()
    assert model.W_enc.shape == (2, 16, *groups, 64)
    assert model.b_enc.shape == (*groups, 64)
    assert model.W_dec.shape == (64, 2, 16)
    assert model.b_dec.shape == (2, 16)
    x = torch.randn(5, 2, 16)
    f = model.encode(x)
    assert f.shape == (5, *groups, 64)
    assert model.decode(f).shape == (5, 2, 16)


@pytest.mark.parametrize("arch", ARCHS)
def test_decode_of_encode_is_forward(arch):
    model = make_model(architecture=arch)
    x = torch.randn(7, 2, 16)
    out = model(x)
    torch.testing.assert_close(model.decode(model.encode(x)), out.x_hat)
    torch.testing.assert_close(model.encode(x), out.latents)


@pytest.mark.parametrize("arch", ARCHS)
def test_init_decoder_rows_have_norm_and_encoder_is_transpose(arch):
    model = make_model(architecture=arch, dec_init_norm=0.08)
    torch.testing.assert_close(model.decoder_norms(), torch.full((64, 2), 0.08))
    enc = model.W_enc if arch == "standard" else model.W_enc[:, :, 1]
    torch.testing.assert_close(enc, model.W_dec.permute(1, 2, 0))
    assert torch.all(model.b_enc == 0) and torch.all(model.b_dec == 0)


@pytest.mark.parametrize("arch", ARCHS)
def test_wrong_input_shape_is_a_clear_error(arch):
    model = make_model(architecture=arch)
    with pytest.raises(ValueError, match=r"\(batch, 2, 16\)"):
        model.encode(torch.randn(4, 16))
    with pytest.raises(ValueError, match="latents of shape"):
        model.decode(torch.randn(4, 5))


def test_eta_is_validated():
    with pytest.raises(ValueError, match="eta must be > 0"):
        CrosscoderConfig(d_model=4, n_latents=4, architecture="tied", eta=0.0)
    with pytest.raises(ValueError, match="architecture"):
        CrosscoderConfig(d_model=4, n_latents=4, architecture="sparse")
    with pytest.raises(ValueError, match="needs architecture"):
        TiedCrosscoder(make_cfg(architecture="standard"))


def _set(model, **tensors):
    with torch.no_grad():
        for name, value in tensors.items():
            getattr(model, name).copy_(torch.as_tensor(value, dtype=torch.float32))


def test_standard_two_latent_example_by_hand():
    model = StandardCrosscoder(CrosscoderConfig(d_model=2, n_latents=2))
    # latent 0 reads base dim 0; latent 1 reads chat dim 1 with bias -0.5
    _set(
        model,
        W_enc=[[[1, 0], [0, 0]], [[0, 0], [0, 1]]],
        b_enc=[0, -0.5],
        W_dec=[[[1, 0], [0, 0]], [[0, 0], [0, 3]]],
        b_dec=[[0, 0], [0, 0]],
    )
    x = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    f = model.encode(x)
    torch.testing.assert_close(f, torch.tensor([[2.0, 0.5]]))
    torch.testing.assert_close(model.decode(f), torch.tensor([[[2.0, 0.0], [0.0, 1.5]]]))
    out = model.loss(x, l1_coeff=0.1)
    assert out.reconstruction.item() == pytest.approx(0.25)  # (1.5 - 1)^2
    assert out.sparsity.item() == pytest.approx(2 * 1 + 0.5 * 3)  # f_i * (||d_base|| + ||d_chat||)
    assert out.total.item() == pytest.approx(0.25 + 0.1 * 3.5)
    assert out.l0.item() == 2
    torch.testing.assert_close(model.relative_decoder_norm(), torch.tensor([0.0, 1.0]))
    assert out.sparsity_shared is None and out.l0_base is None


def test_tied_one_triple_example_by_hand():
    model = TiedCrosscoder(CrosscoderConfig(d_model=2, n_latents=1, architecture="tied", eta=2.0))
    W_enc = torch.zeros(2, 2, 3, 1)
    W_enc[0, 0, 0, 0] = 1  # shared reads base dim 0
    W_enc[0, 1, 1, 0] = 1  # base group reads base dim 1
    W_enc[1, 1, 2, 0] = 1  # chat group reads chat dim 1
    _set(model, W_enc=W_enc, b_enc=torch.zeros(3, 1), W_dec=[[[1, 1], [0, 2]]], b_dec=torch.zeros(2, 2))
    x = torch.tensor([[[1.0, 2.0], [0.0, 3.0]]])
    f = model.encode(x)
    torch.testing.assert_close(f, torch.tensor([[[1.0], [2.0], [3.0]]]))
    # base: (1 + 2) * [1, 1]; chat: (1 + 3) * [0, 2]
    torch.testing.assert_close(model.decode(f), torch.tensor([[[3.0, 3.0], [0.0, 8.0]]]))
    out = model.loss(x, l1_coeff=1.0)
    assert out.reconstruction.item() == pytest.approx(5 + 25)
    r2 = math.sqrt(2)
    assert out.sparsity_shared.item() == pytest.approx(1 * (r2 + 2))
    assert out.sparsity_exclusive.item() == pytest.approx(2 * (2 * r2 + 3 * 2))
    assert out.sparsity.item() == pytest.approx(14 + 5 * r2)
    assert (out.l0_shared.item(), out.l0_base.item(), out.l0_chat.item()) == (1, 1, 1)
    assert out.l0.item() == 3


def test_tied_with_silent_exclusive_groups_equals_standard():
    cfg = make_cfg(architecture="tied", eta=2.0)
    tied = TiedCrosscoder(cfg)
    std = StandardCrosscoder(make_cfg())
    with torch.no_grad():
        tied.b_enc[1:] = -1e6  # base and chat encoders can never fire
        std.W_enc.copy_(tied.W_enc[:, :, 0])
        std.b_enc.copy_(tied.b_enc[0])
        std.W_dec.copy_(tied.W_dec)
        std.b_dec.copy_(torch.randn(2, 16))
        tied.b_dec.copy_(std.b_dec)
    x = random_rows(64)
    assert tied.encode(x)[:, 1:].abs().sum() == 0
    torch.testing.assert_close(tied(x).x_hat, std(x).x_hat)
    lt, ls = tied.loss(x, l1_coeff=0.7), std.loss(x, l1_coeff=0.7)
    for name in ("total", "reconstruction", "sparsity", "l0", "explained_variance", "explained_variance_base"):
        torch.testing.assert_close(getattr(lt, name), getattr(ls, name), msg=name)
    assert lt.sparsity_exclusive.item() == 0 and lt.l0_base.item() == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch):
    model = make_model(architecture=arch)
    with torch.no_grad():
        model.b_enc.fill_(0.1)  # make sure every group fires somewhere
    model.loss(random_rows(128), l1_coeff=1.0).total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        if name == "W_enc" and arch == "tied":
            for g in range(3):
                assert p.grad[:, :, g].abs().sum() > 0, f"group {g}"


@pytest.mark.parametrize("arch", ARCHS)
def test_explained_variance_is_one_for_perfect_and_zero_for_mean(arch):
    model = make_model(architecture=arch)
    x = random_rows(32)
    with torch.no_grad():
        model.W_dec.zero_()
        model.b_dec.copy_(x.mean(0))
    out = model.loss(x, l1_coeff=0.0)
    assert abs(out.explained_variance.item()) < 1e-5
    assert abs(out.explained_variance_chat.item()) < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_normalization_reads_raw_activations(arch):
    model = make_model(architecture=arch, norm_factors=[0.3, 2.5])
    with torch.no_grad():
        model.b_dec.normal_()
        model.b_enc.normal_(std=0.01)
    raw = random_rows(40)
    scaled = model.normalize(raw)
    torch.testing.assert_close(scaled[:, 0], raw[:, 0] * 0.3)
    folded = model.fold_normalization()
    assert folded.cfg.norm_factors is None
    torch.testing.assert_close(folded.encode(raw), model.encode(scaled), rtol=1e-4, atol=1e-5)
    expected = model.decode(model.encode(scaled)) / torch.tensor([0.3, 2.5])[None, :, None]
    torch.testing.assert_close(folded(raw).x_hat, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no normalisation factors"):
        folded.fold_normalization()


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_and_no_silent_overwrite(tmp_path, arch):
    model = make_model(architecture=arch, eta=1.5, norm_factors=[0.25, 0.5])
    with torch.no_grad():
        model.b_dec.normal_()
    model.save_pretrained(tmp_path / "cc")
    loaded = type(model).from_pretrained(tmp_path / "cc")
    assert loaded.cfg == model.cfg
    for name, p in model.state_dict().items():
        assert torch.equal(p, loaded.state_dict()[name]), name
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save_pretrained(tmp_path / "cc")
    model.save_pretrained(tmp_path / "cc", overwrite=True)
    other = StandardCrosscoder if arch == "tied" else TiedCrosscoder
    with pytest.raises(ValueError, match="holds a"):
        other.from_pretrained(tmp_path / "cc")


def test_make_crosscoder_dispatches():
    assert isinstance(make_crosscoder(make_cfg(architecture="tied")), TiedCrosscoder)
    assert isinstance(make_crosscoder(make_cfg()), StandardCrosscoder)


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_without_metrics_has_the_same_loss_and_nan_metrics(arch):
    model = make_model(architecture=arch)
    x = random_rows(64)
    full, fast = model.loss(x, l1_coeff=0.5), model.loss(x, l1_coeff=0.5, metrics=False)
    torch.testing.assert_close(fast.total, full.total)
    torch.testing.assert_close(fast.sparsity, full.sparsity)
    assert torch.isnan(fast.l0) and torch.isnan(fast.explained_variance_chat)
    assert not torch.isnan(full.l0)


@pytest.mark.parametrize("shared_penalty", ["sum", "max"])
def test_tied_hand_written_backward_matches_plain_autograd(shared_penalty):
    """The fused decode + penalty backward gives the gradients of the loss written with plain torch ops."""
    model = make_model(architecture="tied", eta=1.7, shared_penalty=shared_penalty)
    with torch.no_grad():
        model.b_enc.normal_(std=0.05)
        model.b_dec.normal_()
        model.W_dec.mul_(torch.rand(64, 2, 1) + 0.5)  # unequal halves: no ties where max() has no gradient
    x = random_rows(96)
    model.loss(x, l1_coeff=0.3).total.backward()
    fused = {k: p.grad.clone() for k, p in model.named_parameters()}

    params = {k: p.detach().clone().requires_grad_() for k, p in model.named_parameters()}
    f = torch.relu(torch.einsum("bmd,mdgn->bgn", x, params["W_enc"]) + params["b_enc"])
    x_hat = torch.stack(
        [(f[:, 0] + f[:, 1]) @ params["W_dec"][:, 0], (f[:, 0] + f[:, 2]) @ params["W_dec"][:, 1]], dim=1
    ) + params["b_dec"]
    norms = params["W_dec"].norm(dim=-1)
    shared_w = norms.sum(-1) if shared_penalty == "sum" else 2 * norms.max(-1).values
    penalty = f[:, 0] @ shared_w + 1.7 * (f[:, 1] @ norms[:, 0] + f[:, 2] @ norms[:, 1])
    loss = (x_hat - x).pow(2).sum(dim=(1, 2)).mean() + 0.3 * penalty.mean()
    loss.backward()
    for k, p in params.items():
        torch.testing.assert_close(fused[k], p.grad, rtol=1e-4, atol=1e-5, msg=k)


def _plain_standard_loss(params, x, l1_coeff, n_designated=0, designated_scale=1.0):
    f = torch.relu(torch.einsum("bmd,mdn->bn", x, params["W_enc"]) + params["b_enc"])
    x_hat = torch.einsum("bn,nmd->bmd", f, params["W_dec"]) + params["b_dec"]
    weights = params["W_dec"].norm(dim=-1).sum(-1)
    scale = torch.ones_like(weights)
    scale[:n_designated] = designated_scale
    penalty = f @ (weights * scale)
    return (x_hat - x).pow(2).sum(dim=(1, 2)).mean() + l1_coeff * penalty.mean()


def test_standard_fused_loss_matches_plain_autograd_with_designated_latents_and_input_gradients():
    model = make_model(n_designated_shared=5, designated_shared_penalty=0.2)
    with torch.no_grad():
        model.b_enc.normal_(std=0.05)
        model.b_dec.normal_()
    x = random_rows(96).requires_grad_()
    model.loss(x, l1_coeff=0.3).total.backward()
    fused = {k: p.grad.clone() for k, p in model.named_parameters()}
    fused_x = x.grad.clone()

    params = {k: p.detach().clone().requires_grad_() for k, p in model.named_parameters()}
    x2 = x.detach().clone().requires_grad_()
    _plain_standard_loss(params, x2, 0.3, 5, 0.2).backward()
    for k, p in params.items():
        torch.testing.assert_close(fused[k], p.grad, rtol=1e-4, atol=1e-5, msg=k)
    torch.testing.assert_close(fused_x, x2.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_loss_and_gradients_track_fp32(arch):
    model = make_model(architecture=arch, d_model=64, n_latents=256)
    x = random_rows(512, d_model=64)
    ref = model.loss(x, l1_coeff=0.5)
    ref.total.backward()
    ref_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.loss(x, l1_coeff=0.5)
    out.total.backward()
    assert out.total.dtype == torch.float32 and out.l0.dtype == torch.float32
    torch.testing.assert_close(out.total, ref.total, rtol=2e-2, atol=0)
    assert abs(out.l0 - ref.l0) <= 0.05 * ref.l0
    for k, p in model.named_parameters():
        assert p.grad.dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), ref_grads[k].flatten(), dim=0)
        assert cos > 0.99, (k, float(cos))


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_the_ones_column_for_gpu_alignment_changes_no_gradient(arch, monkeypatch):
    from tiedlib.crosscoders import fused

    model = make_model(architecture=arch)
    x = random_rows(64)
    grads = []
    for devices in (("cuda",), ("cpu", "cuda")):  # the second pads the (64, 33) rows to (64, 48) on this CPU
        monkeypatch.setattr(fused, "ALIGNED_DEVICES", devices)
        model.zero_grad()
        model.loss(x, l1_coeff=0.5).total.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], msg=k)


def test_tied_decode_backward_matches_plain_autograd():
    """decode() outside the training loss (analysis, splicing) has its own hand-written backward."""
    model = make_model(architecture="tied")
    with torch.no_grad():
        model.b_dec.normal_()
    f = torch.relu(torch.randn(32, 3, 64)).requires_grad_()
    target = torch.randn(32, 2, 16)
    (model.decode(f) - target).pow(2).sum().backward()
    W, b = model.W_dec.detach().clone().requires_grad_(), model.b_dec.detach().clone().requires_grad_()
    f2 = f.detach().clone().requires_grad_()
    x_hat = torch.stack([(f2[:, 0] + f2[:, 1]) @ W[:, 0], (f2[:, 0] + f2[:, 2]) @ W[:, 1]], dim=1) + b
    (x_hat - target).pow(2).sum().backward()
    torch.testing.assert_close(f.grad, f2.grad)
    torch.testing.assert_close(model.W_dec.grad, W.grad)
    torch.testing.assert_close(model.b_dec.grad, b.grad)
