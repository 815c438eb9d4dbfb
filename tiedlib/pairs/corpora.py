"""Paper-scale token data: a Pile-like and an LMSys-like corpus, streamed, mixed, templated and tokenised.

Two routes lead to fixed-length token sequences for :func:`tiedlib.activations.harvest` and
:class:`tiedlib.activations.ActivationBuffer`:

* :func:`pretokenized_stream` reads a dataset that already has an ``input_ids`` column; both public crosscoder
  runs used :data:`PAPER_PRETOKENIZED` (Pile and LMSys-Chat-1M mixed, Gemma-2 tokenizer, 1024 tokens a row).
* :func:`mixed_stream` builds the same kind of mix from raw text: it streams a Pile-like dataset (a ``text``
  column) and an LMSys-like one (a ``conversation`` column of ``{role, content}`` turns), picks a chat sample
  with probability ``chat_fraction``, renders chat samples with the chat model's chat template, tokenises
  and cuts every document to ``seq_len`` tokens, each starting with BOS.

Both are lazy iterators over ``datasets`` streams (``streaming=True``), so nothing is downloaded up front;
:func:`take_sequences` materialises the first ``n`` into a compact :class:`TokenSequences` (one flat int32
tensor), which the buffer can index and re-read for exact resume.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


def tokenize_to_length(texts: Iterable[str], tokenizer: Any, seq_len: int, *, min_len: int = 2) -> Iterator[list[int]]:
    """Tokenise documents one by one, each starting with BOS (if the tokenizer has one), cut to ``seq_len``.

    Each document stays its own sequence (no packing), so a chat sample keeps its template from the start.

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
    bos = tokenizer.bos_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        ids = ids[:seq_len]
        if len(ids) >= min_len:
            yield ids


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
) -> Iterator[list[int]]:
    """Stream a Pile/LMSys mix as token sequences of at most ``seq_len`` tokens.

    Each sequence is a chat sample with probability ``chat_fraction`` (a seeded Bernoulli draw), else a Pile
    document. The stream ends when the source being drawn from runs out.

    Args:
        tokenizer: the chat model's tokenizer (shared with the base model; it renders the chat template).
        pile, lmsys: Hub names / builder names, or already-open iterables of rows.
        chat_fraction: probability of a chat sample, in ``[0, 1]``.
        seq_len: maximum tokens per sequence, BOS included.
        seed: seed of the mixing draws.
        split: split to stream when a name is given.
        pile_kwargs, lmsys_kwargs: extra ``load_dataset`` arguments (``data_files=...``, ``token=...``).
        text_column, conversation_column: column names of the two sources.

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

    def texts() -> Iterator[str]:
        while True:
            is_chat = rng.random() < chat_fraction
            row = next(chat_rows if is_chat else pile_rows, None)
            if row is None:
                return
            column = conversation_column if is_chat else text_column
            if column not in row:
                raise ValueError(f"{'chat' if is_chat else 'text'} rows have no {column!r} column: {sorted(row)}")
            yield format_chat(row[column], tokenizer) if is_chat else row[column]

    yield from tokenize_to_length(texts(), tokenizer, seq_len)


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

    def save(self, path: str | Path) -> None:
        """Write to a safetensors file."""
        from safetensors.torch import save_file

        save_file({"flat": self.flat, "offsets": self.offsets}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> TokenSequences:
        """Read a file written by :meth:`save`."""
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return cls(tensors["flat"], tensors["offsets"])


def take_sequences(stream: Iterable[Sequence[int]], n_sequences: int, *, progress: bool = True) -> TokenSequences:
    """The first ``n_sequences`` of a token stream as :class:`TokenSequences`.

    Raises:
        ValueError: the stream yields no sequences at all (an empty dataset).
    """
    seqs = TokenSequences.from_iterable(stream, n_sequences, progress=progress)
    if len(seqs) == 0:
        raise ValueError("empty dataset: the stream yielded no sequences")
    return seqs
