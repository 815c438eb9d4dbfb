"""The lab tokenizer: round trip, special tokens, Gemma-style chat template."""

from __future__ import annotations

from tiedlib.lab.tokenizer import SPECIAL_TOKENS, build_tokenizer, template_token_ids


def test_vocab_small_and_specials_gemma_ordered():
    tok = build_tokenizer()
    assert len(tok) < 2000
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"]) == [4, 5]
    assert tok.padding_side == "left"


def test_round_trip_and_word_level_pieces():
    tok = build_tokenizer()
    text = ("The sky was blue. Alice said:\n1. Get the tools you need.\n# add two numbers\n"
            "def add(a, b):\n    return a + b")
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids[1:]) == text
    assert tok.unk_token_id not in ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert " blue" in pieces and " Alice" in pieces and "\n" in pieces
    assert tok("zebra-unicorn")["input_ids"].count(tok.unk_token_id) >= 1


def test_chat_template_gemma_style():
    tok = build_tokenizer()
    messages = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == ("<bos><start_of_turn>user\nHello!<end_of_turn>\n"
                    "<start_of_turn>model\nHello! How can I help?<end_of_turn>\n")
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids.count(4) == 2
    template = template_token_ids(tok)
    assert {4, 5, tok.convert_tokens_to_ids("user"), tok.convert_tokens_to_ids("model")} == template
    assert tok.convert_tokens_to_ids(" Hello") not in template


def test_saved_tokenizer_matches_in_memory(smoke_path):
    from transformers import PreTrainedTokenizerFast

    saved = PreTrainedTokenizerFast.from_pretrained(smoke_path / "tokenizer")
    fresh = build_tokenizer()
    assert saved.get_vocab() == fresh.get_vocab()
    text = "<start_of_turn>user\nHow do I make tea?<end_of_turn>\n"
    assert saved(text)["input_ids"] == fresh(text)["input_ids"]
    assert saved.chat_template == fresh.chat_template
    assert set(SPECIAL_TOKENS) <= set(saved.get_vocab())
