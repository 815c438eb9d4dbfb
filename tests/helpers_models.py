"""Tiny, randomly initialised models and an offline tokenizer for tests and benchmarks.

Nothing here touches the network: the tokenizer is a word-level ``tokenizers`` model wrapped in
``PreTrainedTokenizerFast``, and the models are built from config classes with random weights.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
WORDS = [
    "the", "a", "cat", "dog", "sat", "on", "mat", "user", "model", "hello", "how", "are", "you",
    "i", "am", "fine", "what", "is", "this", "that", "run", "jump", "red", "blue", "big", "small",
    "and", "or", "not", "yes", "no", "can", "cannot", "help", "with", "it", ".", ",", "?", "!",
]  # fmt: skip

# Gemma-style chat template (turn markers are single tokens in the tiny vocabulary).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn> {{ 'model' if m['role'] == 'assistant' else m['role'] }} "
    "{{ m['content'] }} <end_of_turn> {% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn> model {% endif %}"
)


def tiny_tokenizer(extra_words: int = 0) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer with Gemma-like special tokens and a chat template.

    Args:
        extra_words: number of filler words ``w0, w1, ...`` added to the vocabulary (to change its size).

    Returns:
        A ``PreTrainedTokenizerFast`` whose ``bos_token`` is ``<bos>`` and ``pad_token`` is ``<pad>``.
    """
    vocab_list = SPECIAL_TOKENS + WORDS + [f"w{i}" for i in range(extra_words)]
    vocab = {w: i for i, w in enumerate(vocab_list)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    # Turn markers are special tokens (as in Gemma), so they are split out of text before whitespace splitting.
    fast.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_gemma2(
    n_layers: int = 4, d_model: int = 32, vocab_size: int | None = None, seed: int = 0
) -> Gemma2ForCausalLM:
    """A random ``Gemma2ForCausalLM`` (eager attention, fp32, eval mode).

    Args:
        n_layers: number of decoder layers.
        d_model: residual width (``hidden_size``).
        vocab_size: defaults to the size of :func:`tiny_tokenizer`'s vocabulary.
        seed: torch seed for the random weights (two seeds give a "base" and a "chat" model).
    """
    if vocab_size is None:
        vocab_size = len(tiny_tokenizer())
    n_heads = max(1, d_model // 16)
    cfg = Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return Gemma2ForCausalLM(cfg).eval()


def tiny_gpt2(n_layers: int = 4, d_model: int = 32, vocab_size: int | None = None, seed: int = 0) -> GPT2LMHeadModel:
    """A random ``GPT2LMHeadModel`` (layers at ``transformer.h``), fp32, eval mode.

    Args:
        n_layers: number of blocks.
        d_model: residual width (``n_embd``).
        vocab_size: defaults to the size of :func:`tiny_tokenizer`'s vocabulary.
        seed: torch seed for the random weights.
    """
    if vocab_size is None:
        vocab_size = len(tiny_tokenizer())
    cfg = GPT2Config(
        vocab_size=vocab_size,
        n_embd=d_model,
        n_layer=n_layers,
        n_head=max(1, d_model // 16),
        n_positions=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg).eval()


def wrap(model, tokenizer):
    """Wrap a HF model for nnsight (``LanguageModel``; the tokenizer is switched to left padding)."""
    import warnings

    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0.8.1 deprecation notice for LanguageModel
        return LanguageModel(model, tokenizer=tokenizer)


def random_sequences(n: int, min_len: int, max_len: int, vocab_size: int, bos_id: int = 1, seed: int = 0):
    """``n`` lists of token ids, each starting with ``bos_id``, lengths in ``[min_len, max_len]``.

    Ids are drawn from ``[6, vocab_size)`` so they never hit the special tokens.
    """
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(min_len, max_len + 1, (n,), generator=g)
    return [[bos_id] + torch.randint(6, vocab_size, (int(L) - 1,), generator=g).tolist() for L in lens]
