"""New chat latents (write-up next step 8): the rule on a hand-built firing pattern, the streaming count on a tiny
random tied crosscoder, and the concept matching on hand-made labels."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import make_model, random_rows
from tiedlib.analysis.novel import NewChatLatents, coactivation, match_concepts, new_chat_latents
from tiedlib.config import CHAT_ONLY, SHARED


def test_rule_on_a_hand_built_firing_pattern():
    # 10 tokens, 4 triples. Triple 0: chat fires on 6 tokens, shared never (new). Triple 1: chat on 6, shared on the
    # same 6 plus 2 more (the write-up's pattern: not new, shared dominates). Triple 2: chat on 10, shared on 1 of
    # them (10% overlap: new at max_overlap 0.1). Triple 3: chat fires twice only (too rare to judge).
    f_chat, f_shared = torch.zeros(10, 4), torch.zeros(10, 4)
    f_chat[:6, 0] = 1.0
    f_chat[:6, 1], f_shared[:8, 1] = 0.5, 2.0
    f_chat[:, 2], f_shared[3, 2] = 0.1, 1.0
    f_chat[:2, 3] = 1.0
    f_shared[6:, 0] = 3.0  # the shared part of triple 0 fires elsewhere: no overlap
    news = coactivation(f_shared, f_chat, min_fires=5, max_overlap=0.1)
    assert news.chat_fires.tolist() == [6, 6, 10, 2]
    assert news.overlap.tolist() == [0, 6, 1, 0]
    assert news.is_new.tolist() == [True, False, True, False]
    assert news.latents.tolist() == [0, 2]
    assert news.shared_dominates.tolist() == [False, True, False, False]
    assert torch.allclose(news.overlap_fraction, torch.tensor([0.0, 1.0, 0.1, 0.0]))
    assert coactivation(f_shared, f_chat, min_fires=5, max_overlap=0.05).latents.tolist() == [0]
    assert torch.isnan(coactivation(f_shared, torch.zeros(10, 4), min_fires=1, max_overlap=0).overlap_fraction).all()
    with pytest.raises(ValueError, match="max_overlap in"):
        coactivation(f_shared, f_chat, min_fires=5, max_overlap=1.0)
    with pytest.raises(ValueError, match="two \\(n_tokens, n_latents\\)"):
        coactivation(f_shared, f_chat[:, :3], min_fires=5, max_overlap=0.1)


def test_streaming_counts_match_the_dense_ones_on_a_tiny_tied_crosscoder():
    torch.manual_seed(0)
    model = make_model(n_latents=12, architecture="tied").eval()
    with torch.no_grad():  # make the three groups differ (they start as copies of one encoder)
        model.W_enc.add_(0.3 * torch.randn_like(model.W_enc))
        model.b_enc.add_(0.1 * torch.randn_like(model.b_enc))
    x = random_rows(300, seed=3)
    news = new_chat_latents(model, [x[:170], x[170:]], min_fires=3, max_overlap=0.2, chunk_size=64)
    with torch.no_grad():
        f = model.encode(model.normalize(x))
    dense = coactivation(f[:, SHARED], f[:, CHAT_ONLY], min_fires=3, max_overlap=0.2)
    assert news.chat_fires.tolist() == dense.chat_fires.tolist() and news.overlap.tolist() == dense.overlap.tolist()
    assert news.chat_fires.sum() > 0 and news.is_new.tolist() == dense.is_new.tolist()
    with pytest.raises(ValueError, match="need a tied crosscoder"):
        new_chat_latents(make_model(n_latents=4), [x], min_fires=1, max_overlap=0.1)


def test_match_concepts_names_the_planted_concept_against_chance():
    # 40 tokens; concept "greet" on tokens 0-9 (chance 0.25), "turn" on 0-19 (chance 0.5).
    carries = torch.zeros(40, 2, dtype=torch.bool)
    carries[:10, 0], carries[:20, 1] = True, True
    scored = torch.ones_like(carries)
    acts = torch.zeros(40, 3)
    acts[:10, 0] = torch.arange(10, 0, -1).float()  # fires exactly on "greet": matched, chat-only
    acts[::2, 1] = 1.0  # fires on every other token: at chance for both concepts
    acts[10:20, 2] = 1.0  # fires on "turn" but not "greet" tokens: matched to "turn"
    out = match_concepts(acts, carries, scored, ["greet", "turn"], k=5, min_precision=0.5, min_purity=0.5,
                         chat_only={"greet"}, latents=[7, 8, 9])  # fmt: skip
    assert out.index.tolist() == [7, 8, 9]
    assert out["concept"].tolist()[0] == "greet" and out["concept"].tolist()[2] == "turn"
    assert out.loc[7, "precision"] == 1.0 and out.loc[7, "chance"] == pytest.approx(0.25)
    assert out.loc[7, "purity"] == pytest.approx(1.0)
    assert out["matched"].tolist() == [True, False, True]
    assert out["chat_only"].tolist() == [True, False, False]
    assert out.loc[8, "purity"] == pytest.approx(0.0, abs=1e-9)
    assert match_concepts(acts[:, :0], carries, scored, ["greet", "turn"], k=5, min_precision=0.5,
                          min_purity=0.5).empty  # fmt: skip
    with pytest.raises(ValueError, match="3 latent indices for 2"):
        match_concepts(acts[:, :2], carries, scored, ["greet", "turn"], k=5, min_precision=0.5, min_purity=0.5,
                       latents=[1, 2, 3])  # fmt: skip


def test_new_chat_latents_validates_its_rule():
    z = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="min_fires >= 1"):
        NewChatLatents(z, z, z, 0, 0.1)
