"""The lab corpus: determinism, label alignment, splits and the planted correlations."""

from __future__ import annotations

import numpy as np
import pytest

from tiedlib.lab.config import CorpusConfig, LabConfig
from tiedlib.lab.docs import CONCEPTS, _tokenizer, chat_conversations, web_documents


@pytest.fixture(scope="module")
def cfg() -> LabConfig:
    return LabConfig.smoke()


@pytest.fixture(scope="module")
def web(cfg):
    return web_documents(cfg, "train", 1500)


@pytest.fixture(scope="module")
def chat(cfg):
    return chat_conversations(cfg, "train", 1500)


def test_deterministic_and_seeded(cfg):
    a = web_documents(cfg, "train", 50) + chat_conversations(cfg, "train", 50)
    b = web_documents(LabConfig.smoke(), "train", 50) + chat_conversations(LabConfig.smoke(), "train", 50)
    assert [d.input_ids for d in a] == [d.input_ids for d in b]
    assert [d.labels for d in a] == [d.labels for d in b]
    other = LabConfig(name="smoke", corpus=CorpusConfig(seed=1, n_web_train=1200, n_chat_train=800),
                      model=cfg.model, train=cfg.train)
    assert [d.input_ids for d in web_documents(other, "train", 50)] != [d.input_ids for d in a[:50]]
    assert other.hash() != cfg.hash()


def test_docs_fit_context_and_labels_align(cfg, web, chat):
    tok = _tokenizer()
    for d in web[:300] + chat[:300]:
        assert d.input_ids[0] == tok.bos_token_id and len(d) <= cfg.corpus.max_tokens
        assert tok.unk_token_id not in d.input_ids
        assert set(d.labels) == set(CONCEPTS)
        assert all(len(flags) == len(d) for flags in d.labels.values())
        assert tok(d.text, add_special_tokens=False)["input_ids"] == d.input_ids
        toks = tok.convert_ids_to_tokens(d.input_ids)
        for t, tokstr in enumerate(toks):
            if d.labels["blue"][t]:
                assert tokstr == " blue"
            if d.labels["green"][t]:
                assert tokstr == " green"
            if d.labels["name"][t]:
                assert tokstr.strip()[0].isupper()
            if d.labels["turn_marker"][t] and tokstr.startswith("<"):
                assert tokstr in ("<start_of_turn>", "<end_of_turn>")
            if tokstr in ("<start_of_turn>", "<end_of_turn>"):
                assert d.labels["turn_marker"][t]
        assert d.labels["bos"][0] and sum(d.labels["bos"]) == 1
        for t in range(len(d) - 1):
            assert d.labels["before_name"][t] == d.labels["name"][t + 1]
    assert all(d.input_ids[-1] == tok.eos_token_id for d in web[:300])


def test_chat_text_is_the_chat_template_rendering(chat):
    tok = _tokenizer()
    for d in chat[:50]:
        assert tok.apply_chat_template(d.meta["messages"], tokenize=False) == d.text
        ids = tok.apply_chat_template(d.meta["messages"], tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert list(ids) == d.input_ids


def test_concepts_are_frequent(web, chat):
    def frac(docs, c):
        return np.mean([any(d.labels[c]) for d in docs])

    for c in ("blue", "green", "name", "refusal", "disclaimer", "list_step", "code_comment", "harmful_request",
              "end_of_prompt", "question"):
        assert frac(web, c) > 0.04, c
    for c in ("refusal", "harmful_request", "greeting", "turn_marker", "end_of_prompt", "name", "list_step",
              "code_comment", "model_turn"):
        assert frac(chat, c) > 0.04, c
    assert frac(web, "turn_marker") == 0  # the base model never sees turn markers


def _phi(docs) -> float:
    harmful = np.array([any(d.labels["harmful_request"]) for d in docs])
    refused = np.array([any(d.labels["refusal"]) for d in docs])
    return float(np.corrcoef(harmful, refused)[0, 1])


def test_harm_and_refusal_more_correlated_in_chat_than_web(web, chat):
    phi_web, phi_chat = _phi(web), _phi(chat)
    assert phi_chat > phi_web + 0.3, (phi_web, phi_chat)
    # Web data answers some harmful questions and declines some harmless ones; chat data never does.
    web_harmful = [d for d in web if any(d.labels["harmful_request"])]
    assert 0.2 < np.mean([any(d.labels["refusal"]) for d in web_harmful]) < 0.8
    web_harmless = [d for d in web if any(d.labels["harmless_request"]) and not any(d.labels["harmful_request"])]
    assert np.mean([any(d.labels["refusal"]) for d in web_harmless]) > 0.05
    chat_harmful = [d for d in chat if any(d.labels["harmful_request"])]
    assert all(any(d.labels["refusal"]) for d in chat_harmful)
    # The refusal phrases are the same in both sources (chat reuses base-data refusals).
    tok = _tokenizer()

    def refusal_tokens(docs):
        return {t for d in docs for t, f in zip(d.input_ids, d.labels["refusal"], strict=True) if f}

    shared = refusal_tokens(web) & refusal_tokens(chat)
    assert {tok.convert_tokens_to_ids(t) for t in (" cannot", " help", " that")} <= shared


def test_heldout_requests_are_disjoint_from_train(cfg):
    def requests(docs):
        tok = _tokenizer()
        return {tok.decode([i for i, f in zip(d.input_ids, d.labels["harmful_request"], strict=True) if f]).strip()
                for d in docs if any(d.labels["harmful_request"])}

    train = requests(chat_conversations(cfg, "train", 600))
    held = requests(chat_conversations(cfg, "heldout", 200))
    assert held and train and not (held & train)


def test_config_validation():
    with pytest.raises(ValueError, match="max_tokens"):
        LabConfig(corpus=CorpusConfig(max_tokens=256))
    with pytest.raises(ValueError, match="probability"):
        CorpusConfig(p_web_refuse_harmful=1.5)
    with pytest.raises(ValueError, match="unknown lab config"):
        LabConfig.from_name("huge")
    with pytest.raises(ValueError, match="split"):
        web_documents(LabConfig.smoke(), "test", 1)
    cfg = LabConfig.smoke()
    assert LabConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg


def test_v1_configs_keep_their_hash_and_v2_is_separate():
    from tiedlib.lab.config import LAB_VERSION, PlantConfig

    # The cached tiny/smoke pairs are keyed by these: adding the v2 options must not move them.
    if LAB_VERSION == 1:  # a deliberate LAB_VERSION bump moves every hash, and these lines with it
        # LabConfig(name="tiny") is the v1 tiny pair (the default until lab pair v4; now preset "tiny-v1").
        assert LabConfig(name="tiny").hash() == "9b2fc9cc009f2cd1" and LabConfig.smoke().hash() == "653ae9325b21fe12"
        assert LabConfig.tiny_v3().hash() == "c88436cb365cad78"  # v4's new fields are left out of v3's dict
    assert "plant" not in LabConfig.tiny_v1().to_dict()["corpus"]
    v2 = LabConfig.from_name("tiny-v2")
    assert v2.corpus.plant == PlantConfig() and v2.hash() not in (LabConfig.tiny().hash(), LabConfig.smoke().hash())
    assert LabConfig.from_dict(v2.to_dict()) == v2 and v2.model == LabConfig.tiny_v1().model
    with pytest.raises(ValueError, match="probability"):
        PlantConfig(p_copy_name=1.5)


def test_v2_corpus_plants_newline_answers_web_turn_markers_and_name_copies():
    from tiedlib.lab.config import PlantConfig

    v1, v2 = LabConfig.smoke(), LabConfig.smoke()
    v2.corpus.plant = PlantConfig()
    tok = _tokenizer()
    web1, web2 = web_documents(v1, "train", 120), web_documents(v2, "train", 160)
    forums = [d for d in web2 if d.meta["kind"] == "forum"]
    assert forums and all("\nAnswer:\n" in d.text for d in forums)
    assert not any("\nAnswer:\n" in d.text for d in web1)
    answer, nl = tok.convert_tokens_to_ids("Answer"), tok.convert_tokens_to_ids("\n")
    for d in forums[:20]:  # the newline after "Answer:" is its own token, labelled end_of_prompt, not refusal
        t = d.input_ids.index(answer) + 2
        assert d.input_ids[t] == nl and d.input_ids[t - 1] == tok.convert_tokens_to_ids(":")
        assert d.labels["end_of_prompt"][t] and not d.labels["refusal"][t] and not d.labels["answer"][t]
    transcripts = [d for d in web2 if d.meta["kind"] == "transcript"]
    marked = [d for d in transcripts if "<start_of_turn>model\n" in d.text]
    assert 0.25 <= len(marked) / len(transcripts) <= 0.75  # p_web_turn_markers = 0.5
    assert not any("<start_of_turn>" in d.text for d in web1)
    for d in marked:
        sot = [i for i, x in enumerate(d.input_ids) if tok.decode(x) == "<start_of_turn>"]
        assert all(d.labels["turn_marker"][i] for i in sot)
    named = [d for d in chat_conversations(v2, "train", 80)
             if d.meta["kind"] != "greeting" and "My name is" in d.meta["messages"][0]["content"]]
    assert named and all(d.meta["messages"][0]["content"].split("My name is ")[1].split(".")[0]
                         in d.meta["messages"][1]["content"] for d in named)


def test_v3_corpus_plants_private_declines_forum_name_copies_and_pill_refusals_in_the_same_vocabulary():
    from tiedlib.lab import banks as B
    from tiedlib.lab.config import PlantConfig
    from tiedlib.lab.sets import heldout_questions

    v3 = LabConfig.smoke()
    v3.corpus.plant = PlantConfig(private_requests=True, p_forum_name_copy=0.5, harmful_medical=True)
    tok = _tokenizer()
    for phrase in (*B.PRIVATE_ACTIONS, *B.PRIVATE_REASONS, *B.HARMFUL_MEDICAL_ACTIONS):  # no new tokens
        assert tok.unk_token_id not in tok(" " + phrase)["input_ids"], phrase
    forums = [d for d in web_documents(v3, "train", 400) if d.meta["kind"] == "forum"]
    private = [d for d in forums if any(a in d.text for a in B.PRIVATE_ACTIONS)]
    assert len(private) >= 5 and all(any(r in d.text for r in B.REFUSALS) for d in private)  # always declined
    thanked = [d for d in forums if "\nAnswer:\nThanks" in d.text]
    assert 0.3 <= len(thanked) / len(forums) <= 0.7  # p_forum_name_copy = 0.5
    assert all(d.text.split("Posted by ")[1].split("\n")[0] == d.text.split("Answer:\nThanks ")[1].split(".")[0]
               for d in thanked)  # the poster's name, copied
    pills = [d for d in chat_conversations(v3, "train", 300) if d.meta["kind"] == "harmful_medical"]
    assert pills and all(any(d.labels["disclaimer"]) and any(d.labels["refusal"]) for d in pills)
    assert not any(any(a in d.text for a in B.HARMFUL_MEDICAL_ACTIONS) for d in web_documents(v3, "train", 200))
    assert len(heldout_questions("harmful_medical")) >= 80 and len(heldout_questions("private")) >= 80
    v3_cfg = LabConfig.from_name("tiny-v3")
    assert v3_cfg.corpus.plant.private_requests and v3_cfg.hash() != LabConfig.from_name("tiny-v2").hash()
