"""A stand-in for the paper pair on CPU: two tiny random Gemma-2 models under the paper pair's name, and the public
corpora replaced by a few in-memory rows, so a notebook's paper-preset pipeline runs through the same code path
(``is_lab(pair)`` is False: streamed training data, Pile/LMSys held-out rows, no concept labels)."""

from __future__ import annotations

import random

import torch

import tiedlib.pairs.corpora as corpora
from tests.helpers_models import WORDS, tiny_gemma2, tiny_tokenizer, wrap
from tiedlib.pairs import ModelPair

PAPER_NAME = "gemma-2-2b"


def paper_stand_in(n_layers: int = 2, layer: int = 1, dtype: torch.dtype = torch.float32) -> ModelPair:
    """Random base (seed 0) and chat (seed 1) Gemma-2 models of width 32, named like the paper pair, with weights in
    ``dtype`` (``load_pair`` reads the paper pair in bfloat16 on CUDA, float32 elsewhere)."""
    tok = tiny_tokenizer()
    base, chat = (tiny_gemma2(n_layers=n_layers, seed=seed).to(dtype) for seed in (0, 1))
    hub = {"base": "google/gemma-2-2b", "chat": "google/gemma-2-2b-it"}  # as load_pair records a paper pair's source
    return ModelPair(PAPER_NAME, wrap(base, tok), wrap(chat, tok), tok, layer=layer, d_model=32, base_hf=base,
                     chat_hf=chat, config=hub)  # fmt: skip


def offline_corpora(monkeypatch, n_rows: int = 200, seed: int = 0) -> None:
    """Point the paper pair's streams (pre-tokenised training mix, Pile and LMSys held-out rows) at in-memory rows of
    the tiny vocabulary; the real stream functions still tokenise, template, cut and pack them."""
    rng = random.Random(seed)
    words = [w for w in WORDS if w not in (".", ",", "?", "!")]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    pile = [{"text": text(4, 30)} for _ in range(n_rows)]
    lmsys = [{"conversation": [{"role": "user", "content": text(2, 8)}, {"role": "assistant", "content": text(2, 12)}]}
             for _ in range(n_rows)]  # fmt: skip
    tok = tiny_tokenizer()
    pretok = [{"input_ids": [tok.bos_token_id] + tok(text(20, 40), add_special_tokens=False)["input_ids"]}
              for _ in range(n_rows)]  # fmt: skip
    real_mixed, real_pretok = corpora.mixed_stream, corpora.pretokenized_stream

    def mixed_stream(tokenizer, **kw):
        kw.pop("pile", None), kw.pop("lmsys", None)
        return real_mixed(tokenizer, pile=iter(pile), lmsys=iter(lmsys), **kw)

    def pretokenized_stream(dataset=None, **kw):
        return real_pretok(iter(pretok), **kw)

    monkeypatch.setattr(corpora, "mixed_stream", mixed_stream)
    monkeypatch.setattr(corpora, "pretokenized_stream", pretokenized_stream)
