"""Paper-scale token data: a Pile-like and an LMSys-like corpus, streamed, mixed, templated and tokenised.

Two routes lead to fixed-length token sequences for :func:`tiedlib.activations.harvest` and
:class:`tiedlib.activations.ActivationBuffer`:

* :func:`pretokenized_stream` reads a dataset that already has an ``input_ids`` column; both public crosscoder
  runs used :data:`PAPER_PRETOKENIZED` (Pile and LMSys-Chat-1M mixed, Gemma-2 tokenizer, 1024 tokens a row).
* :func:`mixed_stream` builds the same kind of mix from raw text: it streams a Pile-like dataset (a ``text``
  column) and an LMSys-like one (a ``conversation`` column of ``{role, content}`` turns), renders chat samples
  with the chat model's chat template, tokenises, and *packs* each source's documents into rows of exactly
  ``seq_len`` tokens (:func:`pack_sequences`); each row is a chat row with probability ``chat_fraction``.

BOS convention of packed rows: every document starts with BOS, and every row starts with BOS too (a row that
continues a document gets one inserted: Gemma needs its attention sink at position 0). BOS tokens are never
harvested (:mod:`tiedlib.activations.harvest` drops all of them), so a row yields ``seq_len`` minus its BOS tokens
minus any excluded template tokens; :func:`take_tokens` counts exactly those to deliver the tokens a run asks for.

Both are lazy iterators over ``datasets`` streams (``streaming=True``), so nothing is downloaded up front;
:func:`take_sequences` / :func:`take_tokens` materialise them into a compact :class:`TokenSequences` (one flat int32
tensor), which the buffer can index and re-read for exact resume, and which :func:`load_or_build_sequences` saves
once (with a checksum) and reuses on resume instead of streaming again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, overload

import torch
from torch import Tensor
from tqdm.auto import tqdm

PAPER_PRETOKENIZED = "ckkissane/pile-lmsys-mix-1m-tokenized-gemma-2"
"""Pre-tokenised Pile + LMSys mix used by the public standard and tied crosscoder runs (``seq_len`` 1024)."""
PAPER_PILE = "monology/pile-uncopyrighted"
"""An uncopyrighted Pile copy on the Hugging Face Hub (``text`` column)."""
PAPER_LMSYS = "lmsys/lmsys-chat-1m"
"""LMSys-Chat-1M (gated: needs a Hub token; ``conversation`` column)."""


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be loaded or read (offline, gated, missing files, ...); the message names it."""


def load_streaming(path: str, *, split: str = "train", **load_kwargs: Any) -> Any:
    """``datasets.load_dataset(path, split=split, streaming=True, **load_kwargs)``, checked by reading one row.

    Args:
        path: Hub name (``"lmsys/lmsys-chat-1m"``) or builder (``"json"``, ``"parquet"`` with ``data_files=``).
        split: dataset split.
        **load_kwargs: passed on (``data_files``, ``name``, ``token``, ...).

    Returns:
        A ``datasets.IterableDataset``.

    Raises:
        DatasetUnavailableError: the dataset cannot be reached or read; the message names it and the cause.
    """
    import datasets

    label = path if "data_files" not in load_kwargs else f"{path} (data_files={load_kwargs['data_files']})"
    try:
        ds = datasets.load_dataset(path, split=split, streaming=True, **load_kwargs)
        # Streaming is lazy: read one row now so that an unreachable source fails here, with its name.
        next(iter(ds))
    except StopIteration:
        raise DatasetUnavailableError(f"dataset {label!r} (split {split!r}) is empty") from None
    except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError, HfHubHTTPError...)
        raise DatasetUnavailableError(
            f"cannot reach dataset {label!r} (split {split!r}): {type(err).__name__}: {err}. "
            f"Check the name, network access / HF_HUB_OFFLINE, and a Hub token for gated datasets."
        ) from err
    return ds


def _as_stream(source: str | Iterable[Mapping[str, Any]], split: str, load_kwargs: Mapping[str, Any] | None):
    if isinstance(source, (str, Path)):
        return load_streaming(str(source), split=split, **dict(load_kwargs or {}))
    return source


def format_chat(conversation: Sequence[Mapping[str, str]], tokenizer: Any) -> str:
    """Render one LMSys-style conversation with the chat model's chat template.

    Args:
        conversation: ``[{"role": "user" | "assistant", "content": str}, ...]`` (extra keys are ignored).
        tokenizer: the chat model's tokenizer (must have a ``chat_template``).

    Returns:
        The templated text (it includes the BOS token if the template writes one, as Gemma's does).

    Raises:
        ValueError: no chat template, or a malformed conversation.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat_template: pass the chat model's tokenizer")
    if not conversation:
        raise ValueError("empty conversation")
    turns = []
    for turn in conversation:
        if not isinstance(turn, Mapping) or "role" not in turn or "content" not in turn:
            raise ValueError(f"conversation turns must be {{'role', 'content'}} mappings, got {turn!r}")
        turns.append({"role": turn["role"], "content": turn["content"]})
    return tokenizer.apply_chat_template(turns, tokenize=False)


def template_token_ids(tokenizer: Any) -> set[int]:
    """Special tokens the chat template writes (e.g. Gemma's ``<start_of_turn>``, ``<end_of_turn>``).

    Meant for ``exclude_token_ids`` when harvesting. BOS and padding are left out (they are dropped anyway),
    and so are ordinary words of the template (``user``, ``model``), which also occur in plain text.
    """
    rendered = format_chat([{"role": "user", "content": ""}, {"role": "assistant", "content": ""}], tokenizer)
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) - {tokenizer.bos_token_id, tokenizer.pad_token_id}
    return {int(i) for i in ids if i in special}


def tokenize_documents(texts: Iterable[str], tokenizer: Any) -> Iterator[list[int]]:
    """Tokenise documents one by one, each starting with exactly one BOS (if the tokenizer has one), uncut.

    A chat template that writes BOS itself (Gemma's does) keeps it; others get it prepended.
    """
    bos = tokenizer.bos_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        yield ids


def tokenize_to_length(texts: Iterable[str], tokenizer: Any, seq_len: int, *, min_len: int = 2) -> Iterator[list[int]]:
    """Tokenise documents one by one, each starting with BOS (if the tokenizer has one), cut to ``seq_len``.

    Each document stays its own sequence (no packing), so a chat sample keeps its template from the start; the tokens
    past ``seq_len`` are lost (use :func:`pack_sequences` to keep them).

    Args:
        texts: documents.
        tokenizer: the shared tokenizer.
        seq_len: maximum tokens per sequence, BOS included.
        min_len: shorter sequences are skipped (a lone BOS has nothing to harvest).

    Yields:
        Token-id lists of length ``min_len..seq_len``.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    for ids in tokenize_documents(texts, tokenizer):
        ids = ids[:seq_len]
        if len(ids) >= min_len:
            yield ids


def pack_sequences(documents: Iterable[Sequence[int]], seq_len: int, *, bos_id: int | None) -> Iterator[list[int]]:
    """Pack tokenised documents into rows of exactly ``seq_len`` tokens, so no token of a document is lost.

    Documents are laid end to end, each introduced by one BOS (a leading BOS of the document is kept, never
    doubled). Every row starts with BOS: a row that opens with a document start uses that document's BOS, and a
    row that continues a document gets a BOS inserted (Gemma's activations need BOS, the attention sink, at
    position 0). Documents that start inside a row keep their BOS there; harvesting drops every BOS. Attention
    crosses document boundaries inside a row, as in the public pre-tokenised mix. The last, incomplete row is
    dropped.

    Args:
        documents: token-id lists (empty ones and lone BOS tokens are skipped).
        seq_len: tokens per row (at least 2 when ``bos_id`` is set: a row is BOS plus content).
        bos_id: the BOS id, or ``None`` for plain concatenation.

    Yields:
        Token-id lists of length exactly ``seq_len``.
    """
    if seq_len < (2 if bos_id is not None else 1):
        raise ValueError(f"seq_len must be at least {2 if bos_id is not None else 1} to pack rows, got {seq_len}")
    row: list[int] = []
    for doc in documents:
        ids = list(doc)
        if bos_id is not None:
            ids = ids[1:] if ids and ids[0] == bos_id else ids
            if not ids:
                continue
            ids = [bos_id, *ids]
        i = 0
        while i < len(ids):
            if not row and bos_id is not None and ids[i] != bos_id:
                row.append(bos_id)  # this row continues a document: it still starts with BOS
            take = min(seq_len - len(row), len(ids) - i)
            row += ids[i : i + take]
            i += take
            if len(row) == seq_len:
                yield row
                row = []


def mixed_stream(
    tokenizer: Any,
    *,
    pile: str | Iterable[Mapping[str, Any]] = PAPER_PILE,
    lmsys: str | Iterable[Mapping[str, Any]] = PAPER_LMSYS,
    chat_fraction: float = 0.5,
    seq_len: int = 1024,
    seed: int = 0,
    split: str = "train",
    pile_kwargs: Mapping[str, Any] | None = None,
    lmsys_kwargs: Mapping[str, Any] | None = None,
    text_column: str = "text",
    conversation_column: str = "conversation",
    pack: bool = True,
) -> Iterator[list[int]]:
    """Stream a Pile/LMSys mix as token rows.

    With ``pack=True`` (the default, for training) each source's documents are packed into rows of exactly
    ``seq_len`` tokens (:func:`pack_sequences`: every row starts with BOS, documents inside it start with their own
    BOS) and each row is a chat row with probability ``chat_fraction`` (a seeded Bernoulli draw), so
    ``chat_fraction`` is also the expected share of chat *tokens*. With ``pack=False`` each row is one document cut
    to ``seq_len`` (for held-out sets, where a row should be one document). The stream ends when the source being
    drawn from runs out.

    Args:
        tokenizer: the chat model's tokenizer (shared with the base model; it renders the chat template).
        pile, lmsys: Hub names / builder names, or already-open iterables of rows.
        chat_fraction: probability of a chat row, in ``[0, 1]``.
        seq_len: tokens per row (packed), or at most (``pack=False``), BOS included.
        seed: seed of the mixing draws.
        split: split to stream when a name is given.
        pile_kwargs, lmsys_kwargs: extra ``load_dataset`` arguments (``data_files=...``, ``token=...``).
        text_column, conversation_column: column names of the two sources.
        pack: pack documents into full rows (default) or keep one document per row.

    Yields:
        Token-id lists, each starting with BOS.

    Raises:
        DatasetUnavailableError: a source cannot be reached (named in the message).
        ValueError: ``chat_fraction`` outside ``[0, 1]``, or a missing column.
    """
    if not 0.0 <= chat_fraction <= 1.0:
        raise ValueError(f"chat_fraction must be in [0, 1], got {chat_fraction}")
    # Open only the sources that can be drawn from (a pure-Pile mix must not need the gated LMSys set).
    pile_rows = iter(_as_stream(pile, split, pile_kwargs)) if chat_fraction < 1 else iter(())
    chat_rows = iter(_as_stream(lmsys, split, lmsys_kwargs)) if chat_fraction > 0 else iter(())
    rng = random.Random(seed)

    def texts(rows: Iterator[Mapping[str, Any]], is_chat: bool) -> Iterator[str]:
        column = conversation_column if is_chat else text_column
        for row in rows:
            if column not in row:
                raise ValueError(f"{'chat' if is_chat else 'text'} rows have no {column!r} column: {sorted(row)}")
            yield format_chat(row[column], tokenizer) if is_chat else row[column]

    def rows_of(rows: Iterator[Mapping[str, Any]], is_chat: bool) -> Iterator[list[int]]:
        if pack:
            return pack_sequences(tokenize_documents(texts(rows, is_chat), tokenizer), seq_len,
                                  bos_id=tokenizer.bos_token_id)  # fmt: skip
        return tokenize_to_length(texts(rows, is_chat), tokenizer, seq_len)

    sources = (rows_of(pile_rows, False), rows_of(chat_rows, True))
    while True:
        row = next(sources[rng.random() < chat_fraction], None)
        if row is None:
            return
        yield row


def pretokenized_stream(
    dataset: str | Iterable[Mapping[str, Any]] = PAPER_PRETOKENIZED,
    *,
    seq_len: int | None = None,
    split: str = "train",
    column: str = "input_ids",
    **load_kwargs: Any,
) -> Iterator[list[int]]:
    """Stream the rows of a pre-tokenised dataset (an ``input_ids`` column), cut to ``seq_len``.

    Args:
        dataset: Hub name / builder name (default: the public runs' mix), or an iterable of rows.
        seq_len: cut every row to this many tokens (``None``: keep rows whole).
        split: split to stream.
        column: the token-id column.
        **load_kwargs: extra ``load_dataset`` arguments (``data_files=...``).

    Yields:
        Token-id lists.

    Raises:
        DatasetUnavailableError: the dataset cannot be reached (named in the message).
        ValueError: the rows have no ``column``.
    """
    name = dataset if isinstance(dataset, (str, Path)) else type(dataset).__name__
    for row in _as_stream(dataset, split, load_kwargs):
        if column not in row:
            raise ValueError(f"dataset {name!r} has no {column!r} column (columns: {sorted(row)})")
        ids = row[column]
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        yield ids if seq_len is None else ids[:seq_len]


class TokenSequences(Sequence[list[int]]):
    """Variable-length token sequences stored compactly: one flat int32 tensor plus offsets.

    400M tokens take 1.6 GB here instead of tens of GB as Python lists. Indexing gives a ``list[int]``.

    Args:
        flat: ``(n_tokens,)`` all sequences concatenated.
        offsets: ``(n_sequences + 1,)`` start of each sequence in ``flat``, then ``n_tokens``.
    """

    def __init__(self, flat: Tensor, offsets: Tensor) -> None:
        if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != flat.numel():
            raise ValueError("offsets must start at 0 and end at len(flat)")
        self.flat, self.offsets = flat.to(torch.int32), offsets.to(torch.int64)

    @classmethod
    def from_iterable(
        cls, sequences: Iterable[Sequence[int]], n_sequences: int | None = None, *, progress: bool = True
    ) -> TokenSequences:
        """Take the first ``n_sequences`` (all if ``None``) from an iterable (e.g. :func:`mixed_stream`)."""
        chunks, lengths = [], []
        for ids in tqdm(islice(sequences, n_sequences), total=n_sequences, desc="sequences", disable=not progress):
            chunks.append(torch.as_tensor(list(ids), dtype=torch.int32))
            lengths.append(len(chunks[-1]))
        flat = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.int32)
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
        return cls(flat, offsets)

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    @overload
    def __getitem__(self, i: int) -> list[int]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[int]]: ...
    def __getitem__(self, i: int | slice) -> list[int] | list[list[int]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sequence index {i} out of range for {len(self)} sequences")
        return self.flat[self.offsets[i] : self.offsets[i + 1]].tolist()

    @property
    def n_tokens(self) -> int:
        return self.flat.numel()

    def checksum(self) -> str:
        """SHA-256 (hex) of the offsets and tokens: two files with the same checksum hold the same sequences."""
        h = hashlib.sha256()
        for t in (self.offsets, self.flat):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()

    def save(self, path: str | Path, *, meta: Mapping[str, Any] | None = None) -> str:
        """Write to a safetensors file, atomically (a temporary file renamed into place).

        Args:
            path: the file.
            meta: JSON-serialisable description of how the sequences were made (dataset, ``seq_len``, seed, token
                count...), stored in the file and compared by :meth:`load`.

        Returns:
            The :meth:`checksum`, also stored in the file.
        """
        from safetensors.torch import save_file

        path = Path(path)
        digest = self.checksum()
        header = {"checksum": digest, "meta": json.dumps(dict(meta or {}), sort_keys=True)}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            save_file({"flat": self.flat, "offsets": self.offsets}, str(tmp), metadata=header)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    @staticmethod
    def read_meta(path: str | Path) -> dict[str, Any]:
        """The ``meta`` a file was saved with (``{}`` if none), without reading the tokens."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return json.loads((fh.metadata() or {}).get("meta", "{}"))

    @classmethod
    def load(cls, path: str | Path, *, meta: Mapping[str, Any] | None = None) -> TokenSequences:
        """Read a file written by :meth:`save`, verifying its checksum and, if given, its ``meta``.

        Raises:
            ValueError: the tokens do not match the stored checksum (a corrupt or altered file), the file has no
                checksum, or ``meta`` differs from the stored one (the message names the differing keys).
        """
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        if "checksum" not in header:
            raise ValueError(f"{path} has no checksum: it was not written by TokenSequences.save")
        if meta is not None:
            stored = json.loads(header.get("meta", "{}"))
            want = json.loads(json.dumps(dict(meta), sort_keys=True))  # compare as JSON (tuples are lists there)
            diff = sorted(k for k in stored.keys() | want.keys() if stored.get(k) != want.get(k))
            if diff:
                details = ", ".join(f"{k}: file {stored.get(k)!r} vs asked {want.get(k)!r}" for k in diff)
                raise ValueError(f"{path} holds other sequences than asked for ({details}); "
                                 f"delete it or point to another file")  # fmt: skip
        tensors = load_file(str(path))
        seqs = cls(tensors["flat"], tensors["offsets"])
        if seqs.checksum() != header["checksum"]:
            raise ValueError(f"{path} is corrupt: its tokens do not match the checksum stored with them")
        return seqs


def take_tokens(
    stream: Iterable[Sequence[int]], n_tokens: int, *, drop_token_ids: Iterable[int] = (), progress: bool = True
) -> TokenSequences:
    """The first rows of a token stream that together hold at least ``n_tokens`` harvestable tokens.

    A token counts unless its id is in ``drop_token_ids`` (pass BOS and the chat template's tokens: the ids the
    harvester drops), so a run that asks for ``n_tokens`` activations gets them.

    Raises:
        ValueError: ``n_tokens`` is not positive, or the stream ends before enough tokens (the message says how many
            it had).
    """
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    drop = torch.tensor(sorted({int(t) for t in drop_token_ids}), dtype=torch.int32)
    chunks, lengths, kept = [], [], 0
    with tqdm(total=n_tokens, desc="tokens", unit="tok", unit_scale=True, disable=not progress) as bar:
        for ids in stream:
            row = torch.as_tensor(list(ids), dtype=torch.int32)
            n = int((~torch.isin(row, drop)).sum()) if drop.numel() else row.numel()
            chunks.append(row)
            lengths.append(row.numel())
            kept += n
            bar.update(min(n, n_tokens - bar.n))
            if kept >= n_tokens:
                break
    if kept < n_tokens:
        raise ValueError(f"the stream ended after {len(chunks)} rows with {kept} harvestable tokens, "
                         f"fewer than the {n_tokens} asked for")  # fmt: skip
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
    return TokenSequences(torch.cat(chunks), offsets)


def load_or_build_sequences(
    path: str | Path, build: Callable[[], TokenSequences], *, meta: Mapping[str, Any]
) -> TokenSequences:
    """Reuse the token file at ``path`` if it exists, else ``build()`` the sequences and save them there.

    For a run's token data: the first run streams and tokenises once and saves the result with its checksum and
    ``meta``; a resumed run reads the same file back (verified) instead of streaming again, so it trains on the very
    same tokens even if the remote dataset changed meanwhile.

    Args:
        path: the token file (its folder is created).
        build: makes the sequences when there is no file (e.g. ``lambda: take_tokens(mixed_stream(...), n)``).
        meta: JSON-serialisable description of what ``build`` makes; a file saved with another ``meta`` is refused.

    Raises:
        ValueError: the file exists but is corrupt or was saved with another ``meta`` (see :meth:`TokenSequences.load`).
    """
    path = Path(path)
    if path.exists():
        return TokenSequences.load(path, meta=meta)
    seqs = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    seqs.save(path, meta=meta)
    return seqs


def take_sequences(stream: Iterable[Sequence[int]], n_sequences: int, *, progress: bool = True) -> TokenSequences:
    """The first ``n_sequences`` of a token stream as :class:`TokenSequences`.

    Raises:
        ValueError: the stream yields no sequences at all (an empty dataset).
    """
    seqs = TokenSequences.from_iterable(stream, n_sequences, progress=progress)
    if len(seqs) == 0:
        raise ValueError("empty dataset: the stream yielded no sequences")
    return seqs
