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
    load_or_build_sequences,
    load_streaming,
    mixed_stream,
    pack_sequences,
    pretokenized_stream,
    take_sequences,
    take_tokens,
    template_token_ids,
    tokenize_documents,
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


def test_unpacked_mixed_stream_fraction_length_and_bos(files):
    seqs = take_sequences(mix(files, pack=False), 200, progress=False)
    assert len(seqs) == 200
    is_chat = [s[1] == START for s in seqs]
    assert 0.2 < sum(is_chat) / 200 < 0.4  # 0.3 +- 3.5 sigma
    assert all(s[0] == BOS and 2 <= len(s) <= 16 for s in seqs)
    assert any(len(s) == 16 for s in seqs)  # long documents are cut to seq_len
    # Chat samples were templated (turn markers present) and Pile documents never contain them.
    assert all((START in s) == c for s, c in zip(seqs, is_chat, strict=True))
    # Deterministic for a seed; another seed gives another mix.
    assert list(take_sequences(mix(files, pack=False), 50, progress=False)) == list(seqs[:50])
    assert list(take_sequences(mix(files, seed=1, pack=False), 50, progress=False)) != list(seqs[:50])


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_mixed_stream_pure(files, fraction):
    # The unused source is never opened: a bogus path for it must not matter.
    other = {"lmsys_kwargs": {"data_files": "/nonexistent.jsonl"}} if fraction == 0 else {"pile": "/nonexistent/pile"}
    seqs = take_sequences(mix(files, chat_fraction=fraction, pack=False, **other), 40, progress=False)
    assert all((s[1] == START) == bool(fraction) for s in seqs)


def test_mixed_stream_ends_with_source(files):
    assert len(list(mix(files, chat_fraction=1.0, pack=False))) == 300
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
    assert out.acts.shape[0] == sum(sum(t not in (START, END, BOS) for t in s) for s in seqs)
    buf = ActivationBuffer(base, chat, seqs, 1, batch_size=4, buffer_tokens=16, model_batch_size=4)
    assert next(buf).shape == (4, 2, 32)


def test_pack_sequences_by_hand():
    a, b, c, d, e, f = 10, 11, 12, 13, 14, 15
    rows = list(pack_sequences([[BOS, a, b, c], [BOS, d], [BOS], [], [e, f]], 4, bos_id=BOS))
    # Documents are laid end to end, each after one BOS (added to the one without); the row that continues a document
    # starts with an inserted BOS; the incomplete last row ([BOS, f]) is dropped.
    assert rows == [[BOS, a, b, c], [BOS, d, BOS, e]]
    assert list(pack_sequences([[a, b, c], [d, e]], 2, bos_id=None)) == [[a, b], [c, d]]
    with pytest.raises(ValueError, match="seq_len"):
        next(pack_sequences([[BOS, a]], 1, bos_id=BOS))


@pytest.mark.parametrize("seq_len", [2, 5, 16])
def test_pack_sequences_loses_no_token(seq_len):
    rng = random.Random(seq_len)
    docs = [[BOS] * rng.randint(0, 1) + [rng.randint(6, 40) for _ in range(rng.randint(0, 30))] for _ in range(50)]
    rows = list(pack_sequences(docs, seq_len, bos_id=BOS))
    assert rows and all(len(r) == seq_len and r[0] == BOS for r in rows)
    content = [t for d in docs for t in d if t != BOS]
    packed = [t for r in rows for t in r if t != BOS]
    assert packed == content[: len(packed)]  # in order, nothing skipped ...
    assert len(content) - len(packed) < seq_len  # ... and only the incomplete last row is left out


def test_packed_mixed_stream_rows_are_full_and_mixed(files):
    seqs = take_sequences(mix(files), 200, progress=False)
    assert len(seqs) == 200 and all(len(s) == 16 and s[0] == BOS for s in seqs)
    # Rows come whole from one source: with at most 11 tokens between turn markers, every chat row has a marker.
    is_chat = [any(t in (START, END) for t in s) for s in seqs]
    assert 0.2 < sum(is_chat) / 200 < 0.4  # 0.3 +- 3.5 sigma
    assert list(take_sequences(mix(files), 50, progress=False)) == list(seqs[:50])


def test_packed_chat_stream_keeps_every_token(files):
    """Unpacked, long conversations were cut to seq_len; packed, every token of every conversation is in a row."""
    tok = tiny_tokenizer()
    convs = [json.loads(line)["conversation"] for line in open(files["lmsys"])]
    n_content = sum(len(ids) - 1 for ids in tokenize_documents([format_chat(c, tok) for c in convs], tok))
    packed = list(mix(files, chat_fraction=1.0))
    cut = list(mix(files, chat_fraction=1.0, pack=False))
    n_packed, n_cut = (sum(sum(t != BOS for t in r) for r in rows) for rows in (packed, cut))
    assert n_content - 16 < n_packed <= n_content
    assert n_cut < 0.9 * n_content  # what the old stream lost


def test_take_tokens_delivers_the_harvestable_tokens_asked_for(files):
    tok = tiny_tokenizer()
    drop = {BOS, START, END}
    seqs = take_tokens(mix(files, chat_fraction=0.5), 500, drop_token_ids=drop, progress=False)
    counts = [sum(t not in drop for t in s) for s in seqs]
    assert sum(counts) >= 500 > sum(counts[:-1])  # just enough rows
    base, chat = wrap(tiny_gemma2(n_layers=2, seed=0), tok), wrap(tiny_gemma2(n_layers=2, seed=1), tok)
    out = harvest_all(base, chat, seqs, 1, exclude_token_ids={START, END}, batch_size=16, progress=False)
    assert out.acts.shape[0] == sum(counts)  # the harvester drops exactly the ids counted out
    with pytest.raises(ValueError, match="fewer than the 100000"):
        take_tokens(mix(files, chat_fraction=1.0), 100_000, drop_token_ids=drop, progress=False)


def test_load_or_build_sequences_reuses_and_verifies(tmp_path):
    path = tmp_path / "run" / "tokens.safetensors"
    meta = {"dataset": "mix", "seq_len": 4, "seed": 0, "n_tokens": 7}
    built = []

    def build():
        built.append(1)
        return TokenSequences.from_iterable([[1, 2, 3, 4], [1, 5, 6, 7]], progress=False)

    first = load_or_build_sequences(path, build, meta=meta)
    again = load_or_build_sequences(path, build, meta=dict(meta))
    assert len(built) == 1 and list(again) == list(first) and again.checksum() == first.checksum()
    assert TokenSequences.read_meta(path) == meta
    with pytest.raises(ValueError, match="seed: file 0 vs asked 1"):
        load_or_build_sequences(path, build, meta=meta | {"seed": 1})
    # A file whose tokens were altered after saving is refused.
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        header, flat, offsets = fh.metadata(), fh.get_tensor("flat"), fh.get_tensor("offsets")
    flat[3] += 1
    save_file({"flat": flat, "offsets": offsets}, str(path), metadata=header)
    with pytest.raises(ValueError, match="corrupt"):
        load_or_build_sequences(path, build, meta=meta)
    save_file({"flat": flat, "offsets": offsets}, str(path))
    with pytest.raises(ValueError, match="no checksum"):
        TokenSequences.load(path)
    assert len(built) == 1
