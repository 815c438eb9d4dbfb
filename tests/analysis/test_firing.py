"""Analysis functions against hand-made inputs with known answers (and against naive loops / sklearn)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import make_model, random_rows
from tiedlib.activations.harvest import HarvestBatch
from tiedlib.analysis.firing import (
    FiringCounts,
    auroc,
    best_joint,
    best_per_group,
    decoder_cosine_neighbours,
    evaluate,
    exclusive_latents,
    firing_counts,
    firing_ratios,
    select_corners,
)


def naive_counts(model, acts, keep):
    """Per-token Python loop (the public code's approach), on normalised activations."""
    counts = torch.zeros(model.cfg.n_groups, model.cfg.n_latents, dtype=torch.long)
    for t in range(acts.shape[0]):
        if not keep[t]:
            continue
        f = model.encode(model.normalize(acts[t : t + 1])).reshape(model.cfg.n_groups, -1)
        counts += (f[0 if f.ndim == 3 else slice(None)] > 0).long().reshape(counts.shape)
    return counts


@pytest.mark.parametrize("architecture", ["standard", "tied"])
def test_firing_counts_equal_naive_loop_with_masks(architecture):
    model = make_model(architecture=architecture, norm_factors=[0.5, 2.0])
    with torch.no_grad():
        model.b_enc.normal_(0, 0.3)
    acts = random_rows(300)
    token_ids = torch.randint(0, 10, (300,))
    bos, pad, template = 1, 0, 7
    keep = ~torch.isin(token_ids, torch.tensor([bos, pad, template]))
    with torch.no_grad():
        expected = naive_counts(model, acts, keep)
    # HarvestBatch input in uneven batches and chunks, the mask from token ids
    batches = [HarvestBatch(acts[s : s + 70], token_ids[s : s + 70], token_ids[s : s + 70], token_ids[s : s + 70])
               for s in range(0, 300, 70)]  # fmt: skip
    got = firing_counts(model, iter(batches), exclude_token_ids=[bos, pad, template], chunk_size=33)
    assert got.n_tokens == int(keep.sum())
    assert torch.equal(got.counts, expected)
    # (acts, keep) pairs give the same; a plain tensor counts every row
    got2 = firing_counts(model, [(acts, keep)])
    assert torch.equal(got2.counts, expected)
    assert firing_counts(model, [acts]).n_tokens == 300
    assert expected.sum() > 0


def test_firing_counts_apply_normalisation():
    model = make_model(norm_factors=[3.0, 3.0])
    acts = random_rows(50)
    raw = firing_counts(model, [acts])
    pre = firing_counts(model, [acts * 3.0], normalized=True)
    assert torch.equal(raw.counts, pre.counts)


@pytest.mark.parametrize("threshold", [0.0, 0.05, -0.01])
@pytest.mark.parametrize("architecture", ["standard", "tied"])
def test_firing_counts_raw_product_path_keeps_relu_semantics(architecture, threshold, monkeypatch):
    """ReLU models count on the encoder product (no encode call) for threshold >= 0, with the same answer as
    ``encode(...) > threshold``; a negative threshold, where ReLU's zeros fire, still goes through encode."""
    model = make_model(architecture=architecture, norm_factors=[0.7, 1.3])
    with torch.no_grad():
        model.b_enc.normal_(0, 0.3)
    acts = random_rows(200)
    with torch.no_grad():
        f = model.encode(model.normalize(acts)).reshape(200, model.cfg.n_groups, -1)
    expected = (f > threshold).sum(dim=0).reshape(model.cfg.n_groups, -1)
    calls = []
    real_encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x: calls.append(1) or real_encode(x))
    got = firing_counts(model, [acts[:120], acts[120:]], threshold=threshold, chunk_size=50)
    assert torch.equal(got.counts, expected)
    assert bool(calls) == (threshold < 0)
    if threshold < 0:
        assert int(got.counts.min()) == 200  # every latent "fires" above a negative threshold
    else:
        assert 0 < int(expected.sum()) < expected.numel() * 200


@pytest.mark.parametrize("architecture", ["standard", "tied"])
def test_firing_counts_batchtopk_use_encode(architecture):
    """BatchTopK keeps a batch-dependent set of latents: the counts are those of ``encode`` in eval mode."""
    model = make_model(architecture=architecture, activation="batchtopk", k=4.0)
    acts = random_rows(96)
    model.train()
    model(acts)  # a training forward estimates the inference threshold
    model.eval()
    with torch.no_grad():
        expected = (model.encode(acts) > 0).sum(dim=0).reshape(model.cfg.n_groups, -1)
        relu_only = (torch.relu(model._pre_activations(acts)) > 0).sum(dim=0).reshape(model.cfg.n_groups, -1)
    got = firing_counts(model, [acts], chunk_size=40)
    assert torch.equal(got.counts, expected)
    assert not torch.equal(got.counts, relu_only)  # the raw-product shortcut would have been wrong here


def test_firing_counts_refuse_wrong_width():
    model = make_model()
    with pytest.raises(ValueError, match=r"\(n_tokens, 2, 16\)"):
        firing_counts(model, [random_rows(10, d_model=8)])


def test_evaluate_matches_whole_batch_loss_metrics():
    model = make_model(architecture="tied")
    acts = random_rows(256)
    m = evaluate(model, [acts[:100], acts[100:]], chunk_size=37)
    with torch.no_grad():
        out = model.loss(acts, l1_coeff=1.0)
    assert m.explained_variance[0] == pytest.approx(float(out.explained_variance_base), abs=1e-4)
    assert m.explained_variance[1] == pytest.approx(float(out.explained_variance_chat), abs=1e-4)
    assert m.l0.tolist() == pytest.approx([float(out.l0_shared), float(out.l0_base), float(out.l0_chat)], abs=1e-5)
    d = m.as_dict()
    assert set(d) >= {"explained_variance_base", "l0_shared", "dead_chat", "n_tokens"}


def test_ratios_handle_zero_shared_explicitly():
    counts = torch.tensor([[10, 0, 0, 4, 100], [5, 3, 0, 0, 20], [20, 0, 0, 8, 1]])  # shared, base, chat
    r = firing_ratios(FiringCounts(counts, 1000), min_frequency=5e-3)
    assert r.base_over_shared[0] == 0.5 and r.chat_over_shared[0] == 2.0
    assert math.isinf(r.base_over_shared[1]) and math.isnan(r.chat_over_shared[1])  # exclusive only / never
    assert math.isnan(r.base_over_shared[2]) and math.isnan(r.chat_over_shared[2])  # never fires at all
    assert r.zero_shared.tolist() == [False, True, True, False, False]
    assert r.kept.tolist() == [True, False, False, True, True]  # 3/1000 and 0/1000 < 0.5%
    assert r.finite.tolist() == [True, False, False, True, True]
    corners = select_corners(r, k=2)
    assert corners.top_left.tolist() == [3, 0]  # chat/shared - base/shared: 2.0, 1.5, -0.19
    assert corners.bottom_right.tolist() == [4, 0]


def test_ratios_need_tied_counts():
    with pytest.raises(ValueError, match="tied"):
        firing_ratios(FiringCounts(torch.zeros(1, 5, dtype=torch.long), 10))


def test_decoder_cosine_neighbours_known_geometry():
    W = torch.zeros(4, 2, 3)
    W[0, 1] = torch.tensor([1.0, 0, 0])  # chat vector of latent 0
    W[0, 0] = torch.tensor([1.0, 0, 0])  # its own base vector: excluded
    W[1, 0] = torch.tensor([0.9, 0.1, 0])
    W[2, 0] = torch.tensor([0, 1.0, 0])
    W[3, 0] = torch.tensor([-1.0, 0, 0])
    idx, cos = decoder_cosine_neighbours(W, 0, k=3)
    assert idx.tolist() == [1, 2, 3]
    assert cos[0] == pytest.approx(0.9 / math.sqrt(0.82))
    assert cos[2] == pytest.approx(-1.0)


def test_exclusive_latents_thresholds():
    model = make_model(n_latents=3)
    with torch.no_grad():
        model.W_dec.copy_(torch.zeros(3, 2, 16))
        model.W_dec[0, 0, 0], model.W_dec[0, 1, 0] = 1.0, 9.0  # r = 0.9
        model.W_dec[1, 0, 0], model.W_dec[1, 1, 0] = 1.0, 1.0  # r = 0.5
        model.W_dec[2, 0, 0], model.W_dec[2, 1, 0] = 9.0, 1.0  # r = 0.1
    assert exclusive_latents(model, "chat").tolist() == [0]
    assert exclusive_latents(model, "base").tolist() == [2]


def test_auroc_matches_sklearn_with_ties_and_perfect_latent():
    from sklearn.metrics import roc_auc_score

    gen = torch.Generator().manual_seed(1)
    labels = torch.rand(500, 3, generator=gen) < torch.tensor([0.1, 0.5, 0.3])
    scores = torch.relu(torch.randn(500, 6, generator=gen)).round(decimals=1)  # many ties (zeros)
    scores[:, 0] = labels[:, 0].float() * 2.5  # a planted perfect detector of concept 0
    got = auroc(scores, labels, max_elements=700)  # several column chunks
    for c in range(3):
        for j in range(6):
            assert got[c, j] == pytest.approx(roc_auc_score(labels[:, c].numpy(), scores[:, j].numpy()), abs=1e-6)
    assert got[0, 0] == 1.0
    empty = auroc(scores, torch.zeros(500, 1, dtype=torch.bool))
    assert torch.isnan(empty).all()


def test_best_per_group_and_best_joint():
    auc = torch.tensor([[0.5, 0.9, 0.6, 0.7, float("nan"), 0.55]])  # 1 concept, 3 groups x 2 latents
    v, i = best_per_group(auc, 3)
    assert v.tolist() == [[pytest.approx(0.9), pytest.approx(0.7), pytest.approx(0.55)]]
    assert i.tolist() == [[1, 1, 1]]
    assert best_joint(torch.tensor([0.9, 0.8, 0.99]), torch.tensor([0.6, 0.75, 0.5])) == (1, pytest.approx(0.75))
