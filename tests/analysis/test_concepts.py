"""Ground-truth scores of latents against planted lab concepts."""

from __future__ import annotations

import pytest
import torch


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
