"""Analysis functions against hand-made inputs with known answers (and against naive loops / sklearn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers import make_model, random_rows
from tiedlib.activations.harvest import HarvestBatch
from tiedlib.analysis.contexts import TokenSample, concat_samples, latent_activations, token_labels, top_k_contexts
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


def _sample():
    seqs = [[2, 10, 11, 12, 13], [2, 20, 21], [2, 30, 31, 32]]
    doc = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    pos = torch.tensor([1, 2, 3, 4, 1, 2, 1, 2, 3])
    ids = torch.tensor([seqs[d][p] for d, p in zip(doc.tolist(), pos.tolist(), strict=False)])
    return seqs, doc, pos, ids


def test_top_k_contexts_order_windows_and_one_per_doc():
    seqs, doc, pos, _ = _sample()
    values = torch.tensor([0.0, 3.0, 5.0, 1.0, 4.0, 0.0, 0.0, 0.0, 2.0])
    ctx = top_k_contexts(values, doc, pos, seqs, k=5, before=2, after=1)
    assert [(c.doc, c.position, c.value) for c in ctx] == [(0, 3, 5.0), (1, 1, 4.0), (2, 3, 2.0)]
    assert ctx[0].token_ids == [10, 11, 12, 13]  # positions 1..4: two before, one after
    assert ctx[0].token_ids[ctx[0].target] == 12
    assert ctx[0].values == [0.0, 3.0, 5.0, 1.0]
    assert math.isnan(ctx[1].values[0]) and ctx[1].token_ids[0] == 2  # BOS was never harvested
    many = top_k_contexts(values, doc, pos, seqs, k=3, one_per_doc=False)
    assert [c.value for c in many] == [5.0, 4.0, 3.0]
    assert top_k_contexts(torch.zeros(9), doc, pos, seqs, k=3) == []


def test_latent_activations_select_columns_of_encode():
    model = make_model(architecture="tied", norm_factors=[2.0, 0.5])
    with torch.no_grad():
        model.b_enc.normal_(0, 0.3)
    acts = random_rows(40)
    got = latent_activations(model, [acts[:25], acts[25:]], [(0, 3), (2, 7), (1, 0)], chunk_size=10)
    with torch.no_grad():
        f = model.encode(model.normalize(acts))
    assert torch.allclose(got, torch.stack([f[:, 0, 3], f[:, 2, 7], f[:, 1, 0]], dim=1), atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        latent_activations(model, [acts], [(3, 0)])


class _Doc:
    def __init__(self, ids, labels):
        self.input_ids, self.labels = ids, labels


def test_token_labels_align_rows_and_concat_samples():
    seqs, doc, pos, ids = _sample()
    docs = [_Doc(s, {"a": [t % 2 == 0 for t in s], "b": [t > 20 for t in s]}) for s in seqs]
    lab = token_labels(docs, doc, pos, ["a", "b"])
    assert lab[:, 0].tolist() == [t % 2 == 0 for t in ids.tolist()]
    assert lab[:, 1].tolist() == [t > 20 for t in ids.tolist()]
    s = TokenSample(torch.zeros(9, 2, 4), ids, doc, pos, seqs, "x", docs)
    both = concat_samples([s, s])
    assert len(both) == 18 and both.doc_index[9:].tolist() == (doc + 3).tolist()
    assert torch.equal(token_labels(both.docs, both.doc_index, both.position, ["a"])[9:, 0], lab[:, 0])
    assert sum(len(b.acts) for b in s.batches(4)) == 9
    assert np.array_equal(torch.cat([b.doc_index for b in s.batches(4)]).numpy(), doc.numpy())


def test_refusal_triple_best_concepts_and_source_only():
    from tiedlib.analysis.concepts import best_concepts, refusal_triple, source_only_concepts

    concepts = ["refusal", "disclaimer", "other"]
    n = 4  # columns: shared 0-3, base 4-7, chat 8-11
    auc_chat = torch.full((3, 12), 0.5)
    auc_web = torch.full((3, 12), 0.5)
    auc_chat[0, 8 + 2] = 0.95  # triple 2: chat part detects chat refusals
    auc_chat[0, 8 + 1] = 0.99  # triple 1: even better chat part, but its base part detects nothing
    auc_web[1, 4 + 2] = 0.85  # triple 2: base part detects web disclaimers
    out = refusal_triple(auc_web, auc_chat, concepts, n)
    assert out["triple"] == 2 and out["base_concept"] == "disclaimer"
    assert out["joint_auroc"] == pytest.approx(0.85) and out["chat_auroc"] == pytest.approx(0.95)
    assert best_concepts(auc_chat, torch.tensor([9, 0]), concepts)[0] == "refusal"
    here = torch.tensor([[True, False, True], [False, False, True]])
    there = torch.tensor([[False, False, True]])
    assert source_only_concepts(here, there, concepts) == ["refusal"]
