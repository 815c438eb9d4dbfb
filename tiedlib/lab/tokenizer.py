"""The lab tokenizer: a word-level vocabulary built offline with `tokenizers`, wrapped as `PreTrainedTokenizerFast`.

Every word with its leading space (" blue"), every punctuation mark, newline and run of spaces is one token, so concept
labels of the corpus map to tokens one-to-one. Special tokens follow Gemma's ids: ``<pad>`` 0, ``<eos>`` 1, ``<bos>``
2, ``<unk>`` 3, then ``<start_of_turn>`` / ``<end_of_turn>``. The vocabulary is read off the phrase banks and a fixed
sample of generated documents (it does not depend on the config), so it is identical wherever it is built.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tiedlib.lab import banks as B

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK, START_OF_TURN, END_OF_TURN)
PRETOKENIZE_PATTERN = r"\n| ?[A-Za-z0-9_']+| ?[^\sA-Za-z0-9_']| +"
"""One token per newline, per word with its optional leading space, per punctuation mark, per run of spaces."""

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma-style chat template ("assistant" is rendered as the role word "model", as in Gemma-2-it)."""

_PIECE_RE = re.compile(PRETOKENIZE_PATTERN)


def _bank_strings() -> list[str]:
    out: list[str] = []
    for name in dir(B):
        value = getattr(B, name)
        if isinstance(value, tuple):
            stack = list(value)
            while stack:
                item = stack.pop()
                if isinstance(item, str):
                    out.append(item)
                elif isinstance(item, (tuple, list)):
                    stack.extend(item)
                elif isinstance(item, dict):
                    stack.extend(item)
    return out


def build_vocab(n_sample: int = 1500) -> list[str]:
    """The sorted list of non-special pieces (bank words in both spacings plus a fixed corpus sample)."""
    from tiedlib.lab import corpus as C
    from tiedlib.lab.config import CorpusConfig

    texts = _bank_strings()
    ccfg = CorpusConfig()
    for split in C.SPLITS:
        rng = C.make_rng(12345, "vocab", split)
        for _ in range(n_sample):
            _, spans = C.sample_web(rng, ccfg, split)
            texts.append("".join(t for t, _ in spans))
            _, msgs = C.sample_chat(rng, ccfg, split)
            texts += ["".join(t for t, _ in content) for _, content in msgs]
    texts += ["user", "model", "Question:", "Answer:"]
    pieces: set[str] = set()
    for text in texts:
        for piece in _PIECE_RE.findall(text):
            pieces.add(piece)
            word = piece.lstrip(" ")
            if word and word[0].isalnum():
                # A word may start a line (no space) or follow one: keep both spellings in the vocabulary.
                pieces.update({word, " " + word})
    return sorted(pieces)


def _make_fast(vocab_pieces: list[str]) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for piece in vocab_pieces:
        vocab.setdefault(piece, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated")
    tk.decoder = decoders.Fuse()  # pieces carry their own spaces: decoding is plain concatenation
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tk.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens=[START_OF_TURN, END_OF_TURN],
        chat_template=CHAT_TEMPLATE,
        padding_side="left",  # as Gemma and nnsight: generation appends on the right
        clean_up_tokenization_spaces=False,  # " ." and " +" are real tokens; never rewrite them
        model_max_length=4096,
    )


@lru_cache(maxsize=1)
def _cached_vocab() -> tuple[str, ...]:
    return tuple(build_vocab())


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the lab tokenizer in memory (about a second; identical to the one saved in a lab cache folder)."""
    return _make_fast(list(_cached_vocab()))


def template_token_ids(tokenizer) -> set[int]:
    """Ids of chat-template tokens, to mask them out of activation harvesting.

    The turn markers and the role words that follow them (``user``, ``model``: spelled without a leading space, which
    only happens right after ``<start_of_turn>`` in the lab corpus). BOS and padding are not included: mask them
    separately (``tokenizer.bos_token_id``, the attention mask).
    """
    ids = {tokenizer.convert_tokens_to_ids(t) for t in (START_OF_TURN, END_OF_TURN, "user", "model")}
    ids.discard(tokenizer.unk_token_id)
    return ids
