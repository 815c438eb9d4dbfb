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


def _doc_labels(seq: int, **spans: list[int]) -> dict[str, list[bool]]:
    names = ["end_of_prompt", "harmful_request", "refusal", "colour"]
    return {c: [t in spans.get(c, []) for t in range(seq)] for c in names}


def test_positional_labels_read_the_prompt_before_and_the_reply_after_each_end_of_prompt():
    from tiedlib.analysis.concepts import document_positional_labels, positional_labels

    concepts = ["harmful_request", "refusal", "colour"]
    # tokens: 0 bos | 1-2 harmful request | 3-4 end of prompt | 5-6 refusal | 7 colour | 8 end of prompt | 9 reply
    labels = _doc_labels(10, end_of_prompt=[3, 4, 8], harmful_request=[1, 2], refusal=[5, 6], colour=[7])
    carries, scored = document_positional_labels(labels, concepts)
    assert scored[:, 0].tolist() == scored[:, 1].tolist() == labels["end_of_prompt"]  # positional: end of prompt
    assert scored[:, 2].all()  # token-level: every token
    assert carries[:, 0].nonzero()[0].tolist() == [3, 4]  # the first prompt was harmful, the second (5-7) not
    assert carries[:, 1].nonzero()[0].tolist() == [3, 4]  # the first reply refused, the second (9) did not
    assert carries[:, 2].nonzero()[0].tolist() == [7]
    doc = type("Doc", (), {"labels": labels})()
    c, s = positional_labels([doc, doc], torch.tensor([1, 0]), torch.tensor([4, 7]), concepts)
    assert c.tolist() == [[True, True, False], [False, False, True]] and s.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="positional kind"):
        document_positional_labels(labels, concepts, positional={"refusal": "after"})


def test_precision_at_k_and_p_concept_given_fires_on_hand_built_activations():
    from tiedlib.analysis.concepts import part_scores

    carries = torch.tensor([[1], [1], [0], [0], [0], [0]], dtype=torch.bool)  # 2 of 6 positions carry the concept
    scored = torch.ones(6, 1, dtype=torch.bool)
    acts = torch.tensor([
        [5.0, 0.0, 1.0, 0.0],  # col 0: top-2 both positive -> precision 1; fires on 2 of them only -> P = 1
        [4.0, 0.0, 1.0, 0.0],  # col 1: fires once, on a negative -> precision 0, P 0
        [0.0, 0.0, 1.0, 0.0],  # col 2: fires everywhere -> P = 2/6; precision from ties of equal value
        [0.0, 0.0, 1.0, 0.0],  # col 3: never fires -> precision 0, P NaN
        [0.0, 3.0, 1.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ])  # fmt: skip
    s = part_scores(acts, carries, scored, k=5)  # k_c = min(5, 2 positives) = 2
    assert s.precision[0, 0] == 1.0 and s.precision[0, 1] == 0.0 and s.precision[0, 3] == 0.0
    assert s.p_fires[0, 0] == 1.0 and s.p_fires[0, 1] == 0.0 and s.p_fires[0, 2] == pytest.approx(2 / 6)
    assert torch.isnan(s.p_fires[0, 3]) and s.fires[0].tolist() == [2, 1, 6, 0] and s.n_positive.tolist() == [2]
    assert s.chance.tolist() == pytest.approx([2 / 6])
    # A part firing once, on a positive: P(concept | fires) = 1 but precision at k only 1/2 (rare is not enough).
    rare = part_scores(torch.tensor([[1.0], [0.0], [0.0], [0.0], [0.0], [0.0]]), carries, scored, k=2)
    assert rare.p_fires[0, 0] == 1.0 and rare.precision[0, 0] == 0.5
    # Scored positions restrict both scores: only rows 1 (positive) and 4 count; column 1 now ranks row 4 first.
    only = torch.tensor([[0], [1], [0], [0], [1], [0]], dtype=torch.bool)
    r = part_scores(acts, carries, only, k=5)
    assert r.precision[0, 0] == 1.0 and r.precision[0, 1] == 0.0 and r.p_fires[0, 2] == 0.5
    assert r.p_fires[0, 1] == 0.0 and r.fires[0].tolist() == [1, 1, 2, 0] and r.n_positive.tolist() == [1]
    with pytest.raises(ValueError, match="k >= 1"):
        part_scores(acts, carries, scored, k=0)


def test_joint_triple_names_its_scores_generically():
    from tiedlib.analysis.concepts import joint_triple

    web, chat = torch.zeros(2, 6), torch.zeros(2, 6)  # 2 triples: shared 0-1, base 2-3, chat 4-5
    chat[0, 4 + 1], web[1, 2 + 1] = 0.9, 0.6
    out = joint_triple(web, chat, ["refusal", "disclaimer"], 2)
    assert out == {"triple": 1, "joint": pytest.approx(0.6), "chat": pytest.approx(0.9), "base": pytest.approx(0.6),
                   "base_concept": "disclaimer"}  # fmt: skip
