"""Ready-made experiment sets."""

from __future__ import annotations

import pytest

from tiedlib.lab.config import LabConfig
from tiedlib.lab.docs import _tokenizer
from tiedlib.lab.sets import cannot_can_prompts, colour_prefix_sets, crosscoder_mix, harmful_harmless_prompts


def test_colour_prefix_sets_stop_before_the_colour():
    tok = _tokenizer()
    sets = colour_prefix_sets(LabConfig.smoke(), 30)
    assert set(sets) == {"blue", "green"}
    for colour, docs in sets.items():
        assert len(docs) == 30 and len({d.text for d in docs}) == 30
        for d in docs:
            assert d.meta["target"] == f" {colour}"
            assert d.meta["target_id"] == tok.convert_tokens_to_ids(f" {colour}")
            assert d.input_ids[0] == tok.bos_token_id and d.meta["target_id"] not in d.input_ids
            assert all(len(v) == len(d) for v in d.labels.values())


def test_cannot_can_and_harmful_harmless():
    cfg = LabConfig.smoke()
    cc = cannot_can_prompts(cfg, 40)
    assert all(d.text.endswith("\nAnswer:") for v in cc.values() for d in v)
    assert all("Can you" in d.text for d in cc["cannot"]) and all("Can I" in d.text for d in cc["can"])
    hh = harmful_harmless_prompts(cfg, 40)
    for kind, docs in hh.items():
        assert len(docs) == 40
        for d in docs:
            assert d.text.endswith("<end_of_turn>\n<start_of_turn>model\n")
            assert any(d.labels["harmful_request"]) == (kind == "harmful")
            assert d.labels["end_of_prompt"][-1]
    tok = _tokenizer()
    d = hh["harmful"][0]
    assert tok.apply_chat_template(d.meta["messages"], tokenize=False, add_generation_prompt=True) == d.text


def test_crosscoder_mix():
    mix = crosscoder_mix(LabConfig.smoke(), 100, web_fraction=0.3)
    assert len(mix) == 100 and sum(d.source == "web" for d in mix) == 30
    assert [d.input_ids for d in mix] == [d.input_ids for d in crosscoder_mix(LabConfig.smoke(), 100, 0.3)]
    assert {d.source for d in mix[:20]} == {"web", "chat"}


def test_heldout_sets_are_compositional_with_question_ids():
    from tiedlib.lab import banks as B
    from tiedlib.lab.sets import heldout_questions

    cfg = LabConfig.smoke()
    hh = harmful_harmless_prompts(cfg, 90)
    cc = cannot_can_prompts(cfg, 85, split="heldout")
    for kind, docs in {**hh, **cc}.items():
        assert len(heldout_questions(kind)) >= 80
        ids = [d.meta["question_id"] for d in docs]
        assert len(set(ids)) >= 80, kind  # distinct questions first, name variants only after all are used
        assert all(q in d.text and q in heldout_questions(kind) for q, d in zip(ids, docs, strict=True))
    # No held-out request is a training wording: the training templates appear only at held-out keys.
    train_requests = harmful_harmless_prompts(cfg, 60, split="train")
    train_ids = {d.meta["question_id"] for v in train_requests.values() for d in v}
    assert train_ids and not train_ids & {d.meta["question_id"] for v in hh.values() for d in v}
    assert all(d.meta["question_id"].startswith(("Can you", "Can I")) for v in
               cannot_can_prompts(cfg, 20).values() for d in v)
    # Name variants share a question id: asking for more prompts than questions repeats questions with names.
    many = cannot_can_prompts(cfg, 100, split="heldout")["can"]
    assert len({d.text for d in many}) == 100 and len({d.meta["question_id"] for d in many}) == len(B.YES_ACTIONS) * 7
    with pytest.raises(ValueError, match="kind must be"):
        heldout_questions("colour")


def test_v2_forum_prompts_end_on_the_newline_the_answer_starts_on():
    v2 = LabConfig.from_name("tiny-v2")
    for split in ("train", "heldout"):
        for kind, docs in cannot_can_prompts(v2, 5, split=split).items():
            assert all(d.text.endswith("\nAnswer:\n") and d.labels["end_of_prompt"][-1] for d in docs)
            assert {d.meta["expected"] for d in docs} == {"I cannot" if kind == "cannot" else "Yes,"}
    assert cannot_can_prompts(LabConfig.smoke(), 1)["cannot"][0].meta["expected"] == " I cannot"
