"""Paper-scale data source, exercised on local json/parquet files streamed through `datasets`."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tests.helpers_models import WORDS, tiny_gemma2, tiny_tokenizer, wrap
from tiedlib.activations.buffer import ActivationBuffer
from tiedlib.activations.harvest import harvest_all
from tiedlib.pairs.corpora import (
    DatasetUnavailableError,
    TokenSequences,
    format_chat,
    load_streaming,
    mixed_stream,
    pretokenized_stream,
    take_sequences,
    template_token_ids,
)

START, END, BOS = 4, 5, 1


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    rng = random.Random(0)
    pile, lmsys = root / "pile.jsonl", root / "lmsys.jsonl"
    with pile.open("w") as fh:
        for _ in range(300):
            fh.write(json.dumps({"text": words(rng, rng.randint(1, 40)), "meta": {"pile_set_name": "x"}}) + "\n")
    with lmsys.open("w") as fh:
        for i in range(300):
            conv = [
                {"role": "user", "content": words(rng, rng.randint(1, 10))},
                {"role": "assistant", "content": words(rng, rng.randint(1, 10))},
            ]
            fh.write(json.dumps({"conversation_id": str(i), "model": "m", "conversation": conv}) + "\n")
    import datasets

    pretok = root / "pretok.parquet"
    datasets.Dataset.from_dict(
        {"input_ids": [[BOS] + [6 + (i + j) % 40 for j in range(19)] for i in range(30)]}
    ).to_parquet(str(pretok))
    return {"pile": str(pile), "lmsys": str(lmsys), "pretok": str(pretok)}


def mix(files, **kw):
    args = dict(
        pile="json", lmsys="json", pile_kwargs={"data_files": files["pile"]},
        lmsys_kwargs={"data_files": files["lmsys"]}, chat_fraction=0.3, seq_len=16, seed=0,
    )  # fmt: skip
    return mixed_stream(tiny_tokenizer(), **(args | kw))


def test_format_chat_uses_template():
    tok = tiny_tokenizer()
    text = format_chat([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi", "x": 1}], tok)
    assert text == "<bos><start_of_turn> user hello <end_of_turn> <start_of_turn> model hi <end_of_turn> "
    assert template_token_ids(tok) == {START, END}
    with pytest.raises(ValueError, match="role"):
        format_chat([{"text": "no role"}], tok)
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        format_chat([{"role": "user", "content": "a"}], tok)


def test_mixed_stream_fraction_length_and_bos(files):
    seqs = take_sequences(mix(files), 200, progress=False)
    assert len(seqs) == 200
    is_chat = [s[1] == START for s in seqs]
    assert 0.2 < sum(is_chat) / 200 < 0.4  # 0.3 +- 3.5 sigma
    assert all(s[0] == BOS and 2 <= len(s) <= 16 for s in seqs)
    assert any(len(s) == 16 for s in seqs)  # long documents are cut to seq_len
    # Chat samples were templated (turn markers present) and Pile documents never contain them.
    assert all((START in s) == c for s, c in zip(seqs, is_chat, strict=True))
    # Deterministic for a seed; another seed gives another mix.
    assert list(take_sequences(mix(files), 50, progress=False)) == list(seqs[:50])
    assert list(take_sequences(mix(files, seed=1), 50, progress=False)) != list(seqs[:50])


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_mixed_stream_pure(files, fraction):
    # The unused source is never opened: a bogus path for it must not matter.
    other = {"lmsys_kwargs": {"data_files": "/nonexistent.jsonl"}} if fraction == 0 else {"pile": "/nonexistent/pile"}
    seqs = take_sequences(mix(files, chat_fraction=fraction, **other), 40, progress=False)
    assert all((s[1] == START) == bool(fraction) for s in seqs)


def test_mixed_stream_ends_with_source(files):
    assert len(list(mix(files, chat_fraction=1.0))) == 300
    with pytest.raises(ValueError, match="chat_fraction"):
        next(mix(files, chat_fraction=1.5))
    with pytest.raises(ValueError, match="'body' column"):
        next(mix(files, chat_fraction=0.0, text_column="body"))


def test_pretokenized_stream(files):
    seqs = take_sequences(pretokenized_stream("parquet", data_files=files["pretok"], seq_len=12), 10, progress=False)
    assert len(seqs) == 10 and all(len(s) == 12 and s[0] == BOS for s in seqs)
    whole = list(pretokenized_stream("parquet", data_files=files["pretok"]))
    assert len(whole) == 30 and len(whole[0]) == 20
    with pytest.raises(ValueError, match="no 'tokens' column"):
        next(pretokenized_stream("parquet", data_files=files["pretok"], column="tokens"))


def test_unreachable_dataset_is_named(tmp_path, monkeypatch):
    missing = str(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetUnavailableError, match="missing.jsonl"):
        load_streaming("json", data_files=missing)
    with pytest.raises(DatasetUnavailableError, match="nobody/no-such-dataset"):
        next(pretokenized_stream("nobody/no-such-dataset"))  # offline (HF_HUB_OFFLINE in conftest) or 404


def test_token_sequences_roundtrip(tmp_path):
    seqs = TokenSequences.from_iterable([[1, 2, 3], [1], [1, 9, 9, 9]], progress=False)
    assert len(seqs) == 3 and seqs.n_tokens == 8 and seqs[2] == [1, 9, 9, 9] and seqs[-2] == [1]
    assert seqs[0:2] == [[1, 2, 3], [1]]
    with pytest.raises(IndexError):
        seqs[3]
    seqs.save(tmp_path / "s.safetensors")
    assert list(TokenSequences.load(tmp_path / "s.safetensors")) == list(seqs)
    with pytest.raises(ValueError, match="empty dataset"):
        take_sequences(iter([]), 5, progress=False)


def test_end_to_end_mix_into_harvest_and_buffer(files):
    """Templated chat samples flow into harvesting, with the template's special tokens masked."""
    tok = tiny_tokenizer()
    base, chat = wrap(tiny_gemma2(n_layers=2, seed=0), tok), wrap(tiny_gemma2(n_layers=2, seed=1), tok)
    seqs = take_sequences(mix(files, chat_fraction=0.5), 12, progress=False)
    out = harvest_all(base, chat, seqs, 1, exclude_token_ids=template_token_ids(tok), progress=False)
    assert not torch.isin(out.token_ids, torch.tensor([START, END, BOS])).any()
    assert out.acts.shape[0] == sum(len(s) - 1 - sum(t in (START, END) for t in s) for s in seqs)
    buf = ActivationBuffer(base, chat, seqs, 1, batch_size=4, buffer_tokens=16, model_batch_size=4)
    assert next(buf).shape == (4, 2, 32)
