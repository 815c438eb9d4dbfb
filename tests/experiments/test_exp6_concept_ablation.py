"""Notebook 06's per-concept ablation check: the ground-truth rule on planted synthetic activations, the scoring of
matched triples and the findings (the whole pipeline runs in the smoke notebook test)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import make_model
from tiedlib.analysis.ablation import ablation_costs
from tiedlib.experiments.exp6 import concept_ablation as ca


def test_rule_verdicts_and_validation():
    rule = ca.TruthRule()
    assert rule.verdict(0.6, 0.7, 0.9, 0.5) == "not present"
    assert rule.verdict(0.95, 0.9, 0.1, 0.0) == "representation"
    assert rule.verdict(0.95, 0.6, 0.1, 0.0) == "unclear"  # a changed direction one model does not read
    assert rule.verdict(0.95, 0.9, 0.9, -0.3) == "timing"
    assert rule.verdict(0.95, 0.9, 0.9, 0.1) == "same"
    assert rule.verdict(0.95, 0.9, 0.65, 0.5) == "unclear"
    with pytest.raises(ValueError, match="changed_cos < same_cos"):
        ca.TruthRule(same_cos=0.4)


def _planted(n=4000, d=16, seed=0):
    """Two concepts on the same tokens of two models: ``timing`` (one direction; chat fires it on every concept token,
    base on a third) and ``representation`` (orthogonal directions, both fire on every concept token)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, d, generator=g)
    e = torch.eye(d)
    y = torch.rand(n, 2, generator=g) < 0.2
    base_fires = y[:, 0] & (torch.rand(n, generator=g) < 1 / 3)
    x[:, 0] += 4 * base_fires[:, None] * e[0]
    x[:, 1] += 4 * y[:, 0, None] * e[0]
    x[:, 0] += 4 * y[:, 1, None] * e[1]
    x[:, 1] += 4 * y[:, 1, None] * e[2]
    return x, y, torch.arange(n) % 2 == 0


def test_ground_truth_finds_the_planted_mechanisms():
    x, y, fit = _planted()
    table = ca.ground_truth(x, y, torch.ones_like(y), ["timing", "representation"], fit)
    assert list(table.columns) == list(ca.TRUTH_COLUMNS) and list(table.index) == ["timing", "representation"]
    t, r = table.loc["timing"], table.loc["representation"]
    assert t.truth == "timing" and t.cosine > 0.9 and t.timing_signal > 0.4 and t.active_chat > 0.9
    assert r.truth == "representation" and abs(r.cosine) < 0.3 and abs(r.timing_signal) < 0.1
    assert min(r.auroc_base, r.auroc_chat) > 0.95
    # Each model scaled differently: every measure is scale-free.
    scaled = ca.ground_truth(x * torch.tensor([1.0, 7.0])[None, :, None], y, torch.ones_like(y),
                             ["timing", "representation"], fit)  # fmt: skip
    pd.testing.assert_frame_equal(scaled[["truth"]], table[["truth"]])
    # Too few concept tokens: left out; bad shapes: a clear error.
    assert ca.ground_truth(x, y & (torch.arange(len(y)) < 8)[:, None], torch.ones_like(y), ["a", "b"], fit).empty
    with pytest.raises(ValueError, match="concepts for labels"):
        ca.ground_truth(x, y, torch.ones_like(y), ["only one"], fit)


def test_reuse_rule_verdicts_and_validation():
    rule = ca.ReuseRule()
    assert rule.verdict(0.55, 0.93, 0.7) == "timing (reuse)"
    assert rule.verdict(0.55, 0.93, 0.3) == "direction differs"
    assert rule.verdict(0.8, 0.93, 0.9) == "base reads it too"  # gain 0.13 < 0.2
    assert rule.verdict(0.3, 0.75, 0.9) == "not read in chat"
    assert rule.verdict(0.5, math.nan, 0.9) == "not read in chat"
    with pytest.raises(ValueError, match="min_gain in"):
        ca.ReuseRule(min_gain=0.0)


def _planted_reuse(n=4000, d=16, seed=0):
    """Web then chat tokens (half each) of two models, two concepts: ``reuse`` (base fires direction 0 on its concept
    tokens in web documents only; chat fires it on every concept token: the same vector at new times) and
    ``representation`` (base fires direction 1, chat the orthogonal direction 2, on every concept token)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, d, generator=g)
    e = torch.eye(d)
    y = torch.rand(n, 2, generator=g) < 0.2
    chat = torch.arange(n) >= n // 2
    x[:, 0] += 4 * (y[:, 0] & ~chat)[:, None] * e[0]
    x[:, 1] += 4 * y[:, 0, None] * e[0]
    x[:, 0] += 4 * y[:, 1, None] * e[1]
    x[:, 1] += 4 * y[:, 1, None] * e[2]
    return x, y, torch.arange(n) % 2 == 0, chat


def test_reuse_truth_finds_the_planted_mechanisms():
    x, y, fit, chat = _planted_reuse()
    names = ["reuse", "representation"]
    table = ca.reuse_truth(x, y, torch.ones_like(y), names, fit, chat)
    assert list(table.columns) == list(ca.REUSE_COLUMNS) and list(table.index) == names
    r, p = table.loc["reuse"], table.loc["representation"]
    assert r.truth == "timing (reuse)" and r.auroc_chat > 0.95 and abs(r.auroc_base - 0.5) < 0.1 and r.cosine > 0.9
    assert p.truth == "not read in chat" and abs(p.auroc_chat - 0.5) < 0.1 and abs(p.cosine) < 0.3
    assert r.n_web + r.n_chat == int(y[:, 0].sum())
    # The first rule, on the same tokens, does not call the reuse concept representation.
    assert ca.ground_truth(x, y, torch.ones_like(y), names, fit).loc["reuse", "truth"] != "representation"
    # Scale-free per model; no web tokens (or too few): left out; bad shapes: a clear error.
    scaled = ca.reuse_truth(x * torch.tensor([1.0, 7.0])[None, :, None], y, torch.ones_like(y), names, fit, chat)
    pd.testing.assert_frame_equal(scaled[["truth"]], table[["truth"]])
    assert ca.reuse_truth(x, y, torch.ones_like(y), names, fit, torch.ones_like(chat)).empty
    with pytest.raises(ValueError, match="fit and chat masks"):
        ca.reuse_truth(x, y, torch.ones_like(y), names, fit, chat[1:])


def test_last_of_runs():
    got = ca.last_of_runs(np.array([0, 1, 1, 0, 1, 0, 1, 1, 1], dtype=bool))
    assert got.tolist() == [False, False, True, False, True, False, False, False, True]


def test_concept_triples_need_precision_and_purity():
    # 40 tokens, concept on the first 10; triple 0 fires on them only, 1 everywhere, 2 on half of them and on 10 others.
    carries = (torch.arange(40) < 10)[:, None]
    writes = torch.zeros(40, 3)
    writes[:10, 0] = 1.0
    writes[:, 1] = 1.0
    writes[:5, 2], writes[20:30, 2] = 2.0, 1.0
    got = ca.concept_triples(writes, carries, torch.ones_like(carries), k=5, min_precision=0.5, min_purity=0.5)
    assert got.tolist() == [[True, False, False]]  # 1: no purity; 2: precision 1 but P(concept | fires) = 1/3


def test_score_concepts_outcomes_tables_and_findings():
    torch.manual_seed(0)
    model = make_model(n_latents=4, architecture="tied").eval()
    costs = ablation_costs(model, torch.randn(256, 2, 16))
    truth = pd.DataFrame({"auroc_base": 0.9, "auroc_chat": 0.9, "truth": ["timing", "representation", "same", "timing"],
                          "cosine": [0.9, 0.1, 0.95, 0.9], "timing_signal": [0.5, 0.0, 0.0, 0.3]},
                         index=["a", "b", "c", "d"])  # fmt: skip
    carriers = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    active = int(costs.n_active.min())
    scores = ca.score_concepts(truth, carriers, list(truth.index), costs, min_active=active)
    share = costs.summary(torch.tensor([True, False, False, True]))["timing_share"]
    assert scores.loc["a", "triples"] == [0, 3] and scores.loc["a", "timing_share"] == pytest.approx(share)
    assert scores.loc["a", "outcome"] == ("agrees" if share >= 0.5 else "ablation disagrees")
    b = costs.summary(torch.tensor([False, True, False, False]))["timing_share"]
    assert scores.loc["b", "outcome"] == ("agrees" if b < 0.5 else "ablation disagrees")
    assert scores.loc["c", "outcome"] == "ground truth not clear" and scores.loc["c", "expected"] == "none"
    assert scores.loc["d", "outcome"] == "no triple matches" and math.isnan(scores.loc["d", "timing_share"])
    # Triples firing too rarely are not counted.
    rare = ca.score_concepts(truth, carriers, list(truth.index), costs, min_active=int(costs.n_active.max()) + 1)
    assert rare.loc["a", "outcome"] == "no triple matches"
    empty = ca.score_concepts(truth.iloc[:0], carriers, list(truth.index), costs, min_active=1)
    assert list(empty.columns) == ["triples", "timing_share", "expected", "outcome"]

    table = truth.copy()
    for name in ca.CROSSCODERS:
        for col in ("triples", "timing_share", "outcome"):
            table[f"{name}: {col.replace('_', ' ')}"] = scores[col]
    tables = {"all": table, "chat": table.iloc[1:]}
    out = ca.concept_findings(tables)
    keys = {f"exp6_concept_ablation_{n}_{s}" for n in ("truth", *ca.CROSSCODERS) for s in tables}
    reuse_keys = {f"exp6_concept_ablation_reuse_{k}" for k in ("rule", "truth", *ca.CROSSCODERS)}
    assert set(out) == {"exp6_concept_ablation_rule", *keys, *reuse_keys}
    assert "2 timing, 1 representation, 1 same" in out["exp6_concept_ablation_truth_all"]
    assert "timing: a (cosine 0.90, timing signal +0.50), d (" in out["exp6_concept_ablation_truth_all"]
    assert "of 3 concepts with a clear ground truth" in out["exp6_concept_ablation_tied_all"]
    assert "d: 0 triples, timing share n/a (no triple matches)" in out["exp6_concept_ablation_tied_all"]
    assert "of 2 concepts with a clear ground truth" in out["exp6_concept_ablation_recommended_chat"]
    text = ca.concept_paragraph(tables)
    assert "On all held-out tokens, 3 of 4 planted concepts have a clear ground truth (2 timing, 1" in text
    assert "On chat held-out tokens, 2 of 3" in text
    compact = ca.compact_table(tables)
    assert compact.index.tolist() == [("all", "a"), ("all", "b"), ("all", "d"), ("chat", "b"), ("chat", "d")]
    assert compact.loc[("all", "a"), "tied: triples"] == 2
    none = ca.concept_findings(None)
    assert none["exp6_concept_ablation_rule"] == "n/a (no planted concepts on this pair)"
    assert none["exp6_concept_ablation_reuse_truth"] == "n/a (no planted concepts on this pair)"
    assert "reuse criterion" in none["exp6_concept_ablation_reuse_rule"]
    assert ca.compact_table(None) is None and "no planted concepts" in ca.concept_paragraph(None)


def test_sources_and_triple_writes():
    n = 6
    labels = ca.HeldOutConcepts(["a"], torch.zeros(n, 1, dtype=torch.bool), torch.ones(n, 1, dtype=torch.bool),
                                torch.arange(n) % 2 == 0, torch.arange(n) >= 4)  # fmt: skip
    assert labels.rows("chat").tolist() == [False] * 4 + [True] * 2 and bool(labels.rows("all").all())
    assert labels.select(labels.rows("web")).fit.tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="source must be one of"):
        labels.rows("lmsys")
    model = make_model(n_latents=4, architecture="tied").eval()
    x = torch.randn(10, 2, 16)
    with torch.no_grad():
        f = model.encode(model.normalize(x)).reshape(10, 3, 4)
    expected = 2 * f[:, 0] + f[:, 1] + f[:, 2]  # (f_shared + f_base) + (f_shared + f_chat)
    torch.testing.assert_close(ca.triple_writes(model, x, chunk_size=3), expected)
    with pytest.raises(ValueError, match="need a tied crosscoder"):
        ca.triple_writes(make_model(n_latents=4), x)


def test_reuse_scoring_findings_and_tables():
    torch.manual_seed(0)
    model = make_model(n_latents=4, architecture="tied").eval()
    costs = ablation_costs(model, torch.randn(256, 2, 16))
    truth = pd.DataFrame({"auroc_base": [0.55, 0.9, 0.5], "auroc_chat": [0.95, 0.92, 0.6], "cosine": 0.7,
                          "truth": ["timing (reuse)", "base reads it too", "not read in chat"]},
                         index=["a", "b", "c"])  # fmt: skip
    carriers = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    scores = ca.score_concepts(truth, carriers, list(truth.index), costs, min_active=1)
    share = costs.summary(torch.tensor([True, True, False, False]))["timing_share"]
    assert scores.loc["a", "expected"] == ">= 1/2" and scores.loc["b", "outcome"] == "ground truth not clear"
    assert scores.loc["a", "outcome"] == ("agrees" if share >= 0.5 else "ablation disagrees")
    table = truth.copy()
    for name in ca.CROSSCODERS:
        for col in ("triples", "timing_share", "outcome"):
            table[f"{name}: {col.replace('_', ' ')}"] = scores[col]
    out = ca.reuse_findings(table)
    assert out["exp6_concept_ablation_reuse_truth"].startswith(
        "3 planted concepts with web and chat tokens: 1 timing (reuse), 1 base reads it too, 0 direction differs, "
        "1 not read in chat; timing (reuse): a (chat AUROC 0.95, base 0.55, cosine 0.70)")
    assert f"a: 2 triples, timing share {share:.0%}" in out["exp6_concept_ablation_reuse_tied"]
    assert "of 1 timing (reuse) concepts" in out["exp6_concept_ablation_reuse_recommended"]
    assert ca.compact_reuse(table).index.tolist() == ["a"] and ca.compact_reuse(table).loc["a", "tied: triples"] == 2
    assert "1 of 3 planted concepts with web and chat tokens are timing concepts (`a`;" in ca.reuse_paragraph(table)
    assert ca.compact_reuse(None) is None and "no planted concepts" in ca.reuse_paragraph(None)
