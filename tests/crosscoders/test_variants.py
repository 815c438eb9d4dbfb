"""Crosscoder variants of issue 8: decoder-norm constraints, BatchTopK, designated shared latents, max shared weight."""

import math

import pytest
import torch

from tests.helpers import make_cfg, make_model, make_train_cfg, random_rows
from tiedlib import CrosscoderConfig, InMemoryBatches, TiedCrosscoder, load_crosscoder, train, train_step
from tiedlib.crosscoders.losses import standard_penalty_weights, tied_penalty_weights
from tiedlib.crosscoders.variants import (
    aux_k_activations,
    batch_topk,
    batch_topk_groups,
    project_decoder_,
    tie_designated_,
    update_dead_counter_,
    update_threshold,
)
from tiedlib.training import make_optimizer


def _steps(model, n=3, lr=1e-2, l1_coeff=0.1):
    opt, _ = make_optimizer(model, make_train_cfg(lr=lr))
    for _ in range(n):
        train_step(model, opt, random_rows(128), l1_coeff=l1_coeff)
    return model


# ---- config ---------------------------------------------------------------------------------------------------------
def test_defaults_keep_the_write_up_configuration_and_old_configs_load():
    cfg = make_cfg(architecture="tied")
    assert (cfg.decoder_norm, cfg.shared_penalty, cfg.activation, cfg.k, cfg.n_designated_shared) == (
        "free", "sum", "relu", None, 0
    )  # fmt: skip
    old = {"d_model": 4, "n_latents": 8, "architecture": "tied", "eta": 2.0, "dec_init_norm": 0.08,
           "norm_factors": None}  # fmt: skip
    assert CrosscoderConfig.from_dict(old).decoder_norm == "free"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(architecture="tied", decoder_norm="sphere"), "decoder_norm"),
        (dict(architecture="standard", decoder_norm="unit"), "need architecture='tied'"),
        (dict(architecture="tied", shared_penalty="min"), "shared_penalty"),
        (dict(architecture="tied", activation="batchtopk"), "needs k > 0"),
        (dict(architecture="tied", k=4.0), "only used with activation='batchtopk'"),
        (dict(architecture="standard", activation="batchtopk", k=65.0), "exceeds"),
        (dict(architecture="tied", n_designated_shared=4), "needs architecture='standard'"),
        (dict(architecture="standard", n_designated_shared=64), r"\[0, n_latents\)"),
        (dict(architecture="standard", n_designated_shared=4, designated_shared_penalty=0.0), "> 0"),
    ],
)
def test_variant_fields_are_validated(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_cfg(**overrides)


def test_default_apply_constraints_is_a_no_op():
    model = make_model(architecture="tied")
    with torch.no_grad():
        model.W_dec.mul_(torch.rand(64, 2, 1))
    before = model.W_dec.detach().clone()
    model.apply_constraints_()
    assert torch.equal(model.W_dec, before)


# ---- (a) decoder norms ----------------------------------------------------------------------------------------------
def test_unit_decoder_norm_holds_at_init_and_after_every_step():
    model = make_model(architecture="tied", decoder_norm="unit")
    torch.testing.assert_close(model.decoder_norms(), torch.ones(64, 2))
    _steps(model)
    torch.testing.assert_close(model.decoder_norms(), torch.ones(64, 2))


def test_equal_decoder_norm_after_steps_and_projection_keeps_the_sum():
    W = torch.randn(10, 2, 5) * torch.rand(10, 2, 1)
    total = W.norm(dim=-1).sum(-1)
    project_decoder_(W, "equal")
    norms = W.norm(dim=-1)
    torch.testing.assert_close(norms[:, 0], norms[:, 1])
    torch.testing.assert_close(norms.sum(-1), total)
    model = _steps(make_model(architecture="tied", decoder_norm="equal"))
    norms = model.decoder_norms()
    torch.testing.assert_close(norms[:, 0], norms[:, 1])
    assert not torch.allclose(norms[:, 0], torch.full((64,), 0.08))  # the norms themselves are still learned


# ---- max shared penalty ---------------------------------------------------------------------------------------------
def test_max_shared_penalty_by_hand():
    norms = torch.tensor([[1.0, 0.1], [0.5, 2.0]])
    exclusive = [[3.0, 1.5], [0.3, 6.0]]
    torch.testing.assert_close(tied_penalty_weights(norms, 3.0, "max"), torch.tensor([[2.0, 4.0], *exclusive]))
    torch.testing.assert_close(tied_penalty_weights(norms, 3.0), torch.tensor([[1.1, 2.5], *exclusive]))
    model = TiedCrosscoder(CrosscoderConfig(d_model=2, n_latents=1, architecture="tied", shared_penalty="max"))
    with torch.no_grad():
        model.W_enc.zero_()
        model.W_enc[0, 0, 0, 0] = 1  # only the shared group fires, reading base dim 0
        model.W_dec.copy_(torch.tensor([[[3.0, 0.0], [0.0, 0.5]]]))
    out = model.loss(torch.tensor([[[2.0, 0.0], [0.0, 0.0]]]), l1_coeff=1.0)
    assert out.sparsity_shared.item() == pytest.approx(2 * 2 * 3.0)  # f * 2 * max(3, 0.5), not f * (3 + 0.5)


# ---- (b) BatchTopK --------------------------------------------------------------------------------------------------
def test_batch_topk_keeps_exactly_k_times_batch_ranked_by_weighted_score():
    f = torch.tensor([[1.0, 0.0, 3.0], [2.0, 0.5, 0.1]])
    kept, min_kept = batch_topk(f, torch.tensor([1.0, 10.0, 1.0]), k=1.5)  # keep 3: scores 3, 5, 2 win over 1, 0.1
    torch.testing.assert_close(kept, torch.tensor([[0.0, 0.0, 3.0], [2.0, 0.5, 0.0]]))
    assert min_kept == pytest.approx(2.0)
    kept, _ = batch_topk(f, torch.ones(3), k=0.0, threshold=0.75)
    torch.testing.assert_close(kept, torch.tensor([[1.0, 0.0, 3.0], [2.0, 0.0, 0.0]]))
    assert update_threshold(-1.0, 2.0) == 2.0 and update_threshold(2.0, 0.0) == 2.0
    assert update_threshold(2.0, 3.0) == pytest.approx(2.01)


@pytest.mark.parametrize("arch", ["standard", "tied"])
def test_batchtopk_fires_exactly_k_times_batch_latents_in_training(arch):
    model = make_model(architecture=arch, activation="batchtopk", k=3.0)
    with torch.no_grad():
        model.b_enc.fill_(0.5)  # every latent positive: the count is set by the top-k rule alone
    x = random_rows(40)
    f = model.encode(x)
    assert int((f > 0).sum()) == 120
    assert float(model.threshold) > 0  # training forward estimated an inference threshold
    out = model.loss(x, l1_coeff=0.0)
    assert out.l0.item() == pytest.approx(3.0)
    out.total.backward()
    assert model.W_enc.grad.abs().sum() > 0


def test_batchtopk_eval_uses_threshold_and_round_trips(tmp_path):
    cfg = make_train_cfg(n_steps=20, lr=3e-3, l1_coeff=0.0)
    model = make_model(architecture="tied", activation="batchtopk", k=4.0)
    train(cfg, model, InMemoryBatches(random_rows(640), 32))
    thr = float(model.threshold)
    assert thr > 0
    model.eval()
    x = random_rows(64, seed=1)
    f = model.encode(x)
    w = tied_penalty_weights(model.decoder_norms(), 1.0).reshape(-1)
    scores = f.reshape(64, -1) * w
    assert torch.all((scores == 0) | (scores > thr))  # threshold rule, not a fixed count per batch
    model.save_pretrained(tmp_path / "m")
    loaded = load_crosscoder(tmp_path / "m").eval()
    assert float(loaded.threshold) == thr
    torch.testing.assert_close(loaded.encode(x), f)


# ---- (c) designated shared latents ----------------------------------------------------------------------------------
def test_designated_shared_latents_keep_one_decoder_and_a_reduced_penalty():
    model = make_model(n_designated_shared=8, designated_shared_penalty=0.15)
    assert torch.equal(model.W_dec[:8, 0], model.W_dec[:8, 1])
    _steps(model, n=5)
    assert torch.equal(model.W_dec[:8, 0], model.W_dec[:8, 1])
    assert not torch.allclose(model.W_dec[8:, 0], model.W_dec[8:, 1])
    norms = model.decoder_norms()
    weights = standard_penalty_weights(norms, 8, 0.15)[0]
    torch.testing.assert_close(weights[:8], 0.15 * norms[:8].sum(-1))
    torch.testing.assert_close(weights[8:], norms[8:].sum(-1))
    x = random_rows(32)
    f = model.encode(x)
    expected = (f.sum(0) * weights).sum() / 32
    torch.testing.assert_close(model.loss(x, l1_coeff=1.0).sparsity, expected)


def test_tie_designated_averages_the_halves():
    W = torch.randn(4, 2, 3)
    mean = W[:2].mean(1)
    tie_designated_(W, 2)
    torch.testing.assert_close(W[:2, 0], mean)
    torch.testing.assert_close(W[:2, 1], mean)
    assert not math.isclose(float(W[2, 0, 0]), float(W[2, 1, 0]))


# ---- issue 15: contrast init and the written-disagreement penalty ---------------------------------------------------
def test_contrast_init_starts_exclusive_groups_where_only_their_model_has_the_direction():
    from tiedlib.crosscoders.variants import contrast_init_

    model = make_model(architecture="tied", n_latents=8)
    contrast_init_(model.W_enc)
    d = model.W_dec.detach()[3]  # index 3's two decoder halves (the encoder is their transpose)
    both = torch.stack([d[0], d[1]]).unsqueeze(0) / 0.08**2  # both models have the direction
    base_only = torch.stack([d[0], torch.zeros_like(d[1])]).unsqueeze(0) / 0.08**2
    with torch.no_grad():
        pre_both = model._pre_activations(both).reshape(3, 8)[:, 3]
        pre_base = model._pre_activations(base_only).reshape(3, 8)[:, 3]
    # shared reads +base +chat; base reads +base -chat; chat reads -base +chat (zero bias)
    torch.testing.assert_close(pre_both, torch.tensor([2.0, 0.0, 0.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(pre_base, torch.tensor([1.0, 1.0, -1.0]), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="tied encoder"):
        contrast_init_(make_model(n_latents=8).W_enc)


def test_written_disagreement_penalty_by_hand():
    from tiedlib.crosscoders.losses import written_disagreement_penalty

    norms = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # index 0 equal halves, index 1 one-sided (chat half gone)
    f = torch.zeros(1, 3, 2)
    f[0, 0, 0] = 3.0  # shared firing on equal halves: write-up's shared term 3 * (1 + 1)
    assert float(written_disagreement_penalty(f, norms, 2.0)) == pytest.approx(6.0)
    g = torch.zeros(1, 3, 2)
    g[0, 1, 0] = 3.0  # base-alone firing on equal halves: eta * 3 * 1, as in the write-up
    assert float(written_disagreement_penalty(g, norms, 1.5)) == pytest.approx(4.5)
    h = torch.zeros(1, 3, 2)
    h[0, 0, 1] = 1.0  # the loophole: shared group of a one-sided triple writes base only; pays eta * 2, not 2
    assert float(written_disagreement_penalty(h, norms, 2.0)) == pytest.approx(4.0)
    assert float(tied_penalty_weights(norms, 2.0)[0, 1]) == pytest.approx(2.0)  # the write-up charges 2
    both = f + g + h  # eta = 2: 2 max(w_base, w_chat) per index
    w = torch.tensor([[6.0, 3.0], [2.0, 0.0]])  # (index, model) written amounts
    assert float(written_disagreement_penalty(both, norms, 2.0)) == pytest.approx(float(2 * w.max(-1).values.sum()))
    with pytest.raises(ValueError, match="need f"):
        written_disagreement_penalty(torch.zeros(1, 2, 2), norms, 2.0)


def test_written_penalty_tied_trains_with_its_own_penalty(tmp_path):
    from tiedlib.crosscoders.crosscoder import WrittenTiedCrosscoder, make_crosscoder, recommended_tied
    from tiedlib.crosscoders.losses import written_disagreement_penalty

    # the config names the penalty, so make_crosscoder, loading and resume all rebuild the same class
    model = make_crosscoder(make_cfg(architecture="tied", n_latents=16, eta=1.5, shared_penalty="written"))
    assert type(model) is WrittenTiedCrosscoder
    x = random_rows(64)
    out = model.loss(x, l1_coeff=0.3)
    expected = written_disagreement_penalty(model.encode(x), model.decoder_norms(), 1.5)
    torch.testing.assert_close(out.sparsity, expected.detach())
    torch.testing.assert_close(out.total, out.reconstruction + 0.3 * expected)
    first = float(out.total.detach())
    _steps(model, n=5)
    assert float(model.loss(x, l1_coeff=0.3).total) < first
    model.save_pretrained(tmp_path / "w")
    loaded = load_crosscoder(tmp_path / "w")
    assert type(loaded) is WrittenTiedCrosscoder and loaded.cfg.shared_penalty == "written"
    torch.testing.assert_close(loaded.encode(x), model.encode(x))
    torch.testing.assert_close(loaded.loss(x, l1_coeff=0.3).total, model.loss(x, l1_coeff=0.3).total)
    assert type(TiedCrosscoder.from_pretrained(tmp_path / "w")) is WrittenTiedCrosscoder
    rec = recommended_tied(16, 8, norm_factors=[1.0, 2.0])
    assert type(rec) is WrittenTiedCrosscoder and (rec.cfg.architecture, rec.cfg.eta) == ("tied", 1.5)
    assert rec.cfg.norm_factors == [1.0, 2.0] and rec.cfg.decoder_norm == "free"
    assert rec.cfg.shared_penalty == "written"
    with pytest.raises(ValueError, match="written"):
        make_cfg(architecture="tied", n_latents=16, shared_penalty="written", activation="batchtopk")


def test_cli_selects_the_recommended_tied_penalty():
    from tiedlib.cli import build_parser

    args = build_parser().parse_args(["train", "--pair", "smoke", "--architecture", "tied", "--shared-penalty",
                                      "written", "--eta", "1.5", "--out-dir", "x"])
    from tiedlib.cli import config_from_args
    from tiedlib.crosscoders.crosscoder import WrittenTiedCrosscoder, make_crosscoder

    cfg = config_from_args(args).crosscoder
    assert cfg.shared_penalty == "written" and cfg.eta == 1.5
    assert type(make_crosscoder(CrosscoderConfig.from_dict({**cfg.to_dict(), "d_model": 8, "n_latents": 4}))) \
        is WrittenTiedCrosscoder


def test_dedicated_crosscoder_keeps_one_model_latents_one_sided():
    from tiedlib.synthetic.dedicated import DedicatedCrosscoder

    model = DedicatedCrosscoder(make_cfg(n_latents=20), n_base_only=4, n_chat_only=6)
    norms = model.decoder_norms()
    assert (norms[:4, 1] == 0).all() and (norms[4:10, 0] == 0).all() and (norms[10:] > 0).all()
    _steps(model, n=3)
    norms = model.decoder_norms()
    assert (norms[:4, 1] == 0).all() and (norms[4:10, 0] == 0).all()
    assert (norms[:4, 0] > 0).all() and (norms[4:10, 1] > 0).all()
    r = model.relative_decoder_norm()
    assert (r[:4] == 0).all() and (r[4:10] == 1).all()
    with pytest.raises(ValueError, match="shared latent"):
        DedicatedCrosscoder(make_cfg(n_latents=10), n_base_only=5, n_chat_only=5)


# ---- issue 15: BatchTopK per group, auxiliary-k loss -----------------------------------------------------------------
def test_new_fields_keep_old_saved_json_and_validate():
    assert set(make_cfg(architecture="tied").to_dict()).isdisjoint({"k_groups", "aux_k", "aux_alpha",
                                                                    "dead_after_tokens"})  # fmt: skip
    cfg = make_cfg(architecture="tied", activation="batchtopk", k_groups=(2, 1, 1), aux_k=3)
    assert cfg.k == 4.0 and CrosscoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="k_groups needs architecture='tied'"):
        make_cfg(activation="batchtopk", k_groups=(1, 1, 1))
    with pytest.raises(ValueError, match="differs from the sum"):
        make_cfg(architecture="tied", activation="batchtopk", k=5.0, k_groups=(1, 1, 1))
    with pytest.raises(ValueError, match="aux_k must be"):
        make_cfg(aux_k=-1)


def test_batch_topk_groups_counts_per_group_and_thresholds():
    f = torch.rand(10, 3 * 4) + 0.1  # every score positive
    kept, mins = batch_topk_groups(f, torch.ones(3, 4), (2.0, 0.5, 0.0))
    per_group = (kept.reshape(10, 3, 4) > 0).sum(dim=(0, 2))
    assert per_group.tolist() == [20, 5, 0] and mins[2] == 0.0
    kept, _ = batch_topk_groups(f, torch.ones(3, 4), (1.0, 1.0, 1.0), thresholds=[0.5, 2.0, 0.0])
    kg = kept.reshape(10, 3, 4)
    fg = f.reshape(10, 3, 4)
    assert torch.equal(kg[:, 0] > 0, fg[:, 0] > 0.5) and not kg[:, 1].any() and torch.equal(kg[:, 2], fg[:, 2])


def test_per_group_batchtopk_model_trains_with_k_g_per_group_and_evals_on_thresholds(tmp_path):
    model = make_model(architecture="tied", activation="batchtopk", k_groups=(2.0, 1.0, 0.5))
    with torch.no_grad():
        model.b_enc.fill_(0.5)  # every latent positive: the counts are set by the top-k rule alone
    x = random_rows(40)
    f = model.encode(x)
    assert (f > 0).sum(dim=(0, 2)).tolist() == [80, 40, 20]
    thr = model.threshold.clone()
    assert thr.shape == (3,) and bool((thr > 0).all())
    model.eval()
    f = model.encode(random_rows(64, seed=1))
    w = tied_penalty_weights(model.decoder_norms(), 1.0)  # (3, n)
    scores = f * w
    assert torch.all((scores == 0) | (scores > thr[None, :, None]))
    assert torch.equal(model.threshold, thr)  # eval does not move the thresholds
    model.save_pretrained(tmp_path / "m")
    assert torch.equal(load_crosscoder(tmp_path / "m").threshold, thr)


def test_dead_counter_and_aux_k_activations():
    counter = torch.tensor([5, 5, 5])
    update_dead_counter_(counter, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    assert counter.tolist() == [7, 0, 7]
    pre = torch.tensor([[-1.0, -3.0, -2.0], [-5.0, -0.5, -4.0]], requires_grad=True)
    acts, chosen = aux_k_activations(pre, 2)
    assert chosen.tolist() == [[True, False, True], [False, True, True]]
    torch.testing.assert_close(acts[0, 0], torch.nn.functional.softplus(torch.tensor(-1.0)))
    acts.sum().backward()
    assert bool((pre.grad[chosen] > 0).all()) and bool((pre.grad[~chosen] == 0).all())


def test_aux_k_term_is_zero_when_nothing_is_dead_and_the_counter_round_trips(tmp_path):
    model = make_model(architecture="tied", aux_k=4, dead_after_tokens=1000)
    x = random_rows(64)
    out = model.loss(x, l1_coeff=0.1)
    assert float(out.aux_k) == 0.0
    ref = make_model(architecture="tied")
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if k != "tokens_since_fired"})
    torch.testing.assert_close(out.total, ref.loss(x, l1_coeff=0.1).total)  # no term: the same loss
    with torch.no_grad():
        model.b_enc[2].fill_(-100.0)  # the chat group never fires
    model.loss(x, l1_coeff=0.1)
    counts = model.tokens_since_fired.reshape(3, -1)
    assert bool((counts[2] == 64).all()) and int(counts[0].max()) <= 128
    model.save_pretrained(tmp_path / "m")
    assert torch.equal(load_crosscoder(tmp_path / "m").tokens_since_fired, model.tokens_since_fired)


@pytest.mark.parametrize("aux_k", [0, 2])
def test_aux_k_revives_an_exclusive_group_dead_by_construction(aux_k):
    """Rows with a base-only direction; the base group starts with bias -3 so it never fires, and a ReLU latent that
    never fires gets no gradient: without the auxiliary loss it stays dead, with it the base group learns to fire."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(128, 2, 4)
    x[:, 0, 0] = 2 * torch.rand(128, generator=gen) ** 2  # base model only, along e0
    model = make_model(architecture="tied", d_model=4, n_latents=2, aux_k=aux_k, dead_after_tokens=128)
    with torch.no_grad():
        model.b_enc.fill_(-3.0)  # nothing fires at the start
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(60):
        opt.zero_grad()
        model.loss(x, l1_coeff=0.0).total.backward()
        opt.step()
    with torch.no_grad():
        fires = (model.encode(x)[:, 1] > 0).any(dim=0).sum().item()
    assert (fires > 0) == (aux_k > 0)
