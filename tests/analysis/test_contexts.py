"""Top contexts, latent columns and token labels of harvested samples (hand-made inputs with known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers import make_model, random_rows
from tiedlib.analysis.contexts import TokenSample, concat_samples, latent_activations, token_labels, top_k_contexts


def _sample():
    seqs = [[2, 10, 11, 12, 13], [2, 20, 21], [2, 30, 31, 32]]
    doc = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    pos = torch.tensor([1, 2, 3, 4, 1, 2, 1, 2, 3])
    ids = torch.tensor([seqs[d][p] for d, p in zip(doc.tolist(), pos.tolist(), strict=False)])
    return seqs, doc, pos, ids


class _Doc:
    def __init__(self, ids, labels):
        self.input_ids, self.labels = ids, labels


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
