"""A paired activation cache on disk: harvest once, train many crosscoders from it.

Layout of a cache folder::

    manifest.json                 the header (pair, layer, d_model, dataset, tokenizer hash, dtype, shard plan, and
                                  the pair's ``source``: its ModelPair.fingerprint, absent in older caches) and,
                                  once finalised, the shard list and the normalisation statistics
    shard-000000.safetensors      tensors ``acts (n, 2, d_model)`` in bf16 or fp32 (raw, unnormalised; base then
    shard-000001.safetensors      chat on axis 1), ``token_ids``, ``doc_index``, ``position`` (int32, each ``(n,)``)
    records/shard-000000.json     one record a completed shard: its sequences, token count, sha256, norm statistics

Shard ``k`` holds the kept tokens (BOS, padding and ``exclude_token_ids`` dropped, exactly as
:func:`tiedlib.activations.harvest.harvest` and the buffer drop them) of sequences ``[k * S, (k + 1) * S)`` for
``S = seqs_per_shard``, in sequence then position order, harvested in model batches that start at the shard's first
sequence. The shard plan depends only on the sequences and ``S``, so a shard is bitwise the same whichever process
writes it and however often the writing was interrupted.

Why safetensors (rather than numpy memmap or zarr): it is already a dependency (crosscoder weights and token
sequences are stored in it); a file is self-describing (dtype, shape and a JSON header, so bf16 needs no side
channel, which ``np.memmap`` lacks: numpy has no bfloat16); loading memory-maps the file and builds tensors without
pickle, so a cache from someone else cannot run code; one file a shard is one unit that is written to a temporary
name and renamed into place, and whose sha256 is recorded, so a half-written or corrupt shard is detected rather
than read. Zarr would add a dependency and a chunk store of many small files for no feature used here (the reader
loads whole shards; it never slices inside one).

Resumable, multi-process writing: :func:`write_cache` harvests the shards of ``shard_range`` that have no record
yet. Each shard is written to ``.shard-K.safetensors.<pid>.tmp``, renamed to its final name, and only then recorded
(its record also written to a temporary name and renamed). A shard without a record, or a temporary file, is never
read and is redone. Several processes may write disjoint (or even overlapping) shard ranges of one folder at once;
:func:`finalize_cache` (called automatically by the process that records the last shard) merges the records into
``manifest.json``. Normalisation factors are computed from per-shard running statistics (token count and sum of
activation norms per model, summed in float64, BOS excluded), so they never need a second pass over the data.

The shuffling reader lives in :mod:`tiedlib.activations.cache_reader`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tiedlib.activations.harvest import _harvest_batch, _make_spec, as_ids
from tiedlib.pairs import ModelPair

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "records"
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
_INDEX_BYTES = 3 * 4  # token id, document index and position, int32 each
_HEADER_KEYS = ("format", "pair", "layer", "d_model", "dataset", "tokenizer_sha256", "dtype", "n_sequences",
                "seqs_per_shard", "n_shards", "model_batch_size", "exclude_token_ids")  # fmt: skip


class CacheMismatchError(ValueError):
    """A cache was opened (or resumed) with another pair, layer, tokenizer or settings than it was written with."""


class CacheCorruptError(ValueError):
    """A shard's bytes do not match the sha256 recorded for it, or a recorded shard is missing."""


class ShardData(NamedTuple):
    """The rows of one shard, as stored (raw activations in the cache's dtype)."""

    acts: Float[Tensor, "n_tokens n_models d_model"]
    token_ids: Int[Tensor, " n_tokens"]
    doc_index: Int[Tensor, " n_tokens"]
    """Index of the source sequence in the whole dataset (not in the shard)."""
    position: Int[Tensor, " n_tokens"]


# ----------------------------------------------------------------------------------------------------
# Sizes
# ----------------------------------------------------------------------------------------------------


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = _DTYPES.get(dtype.removeprefix("torch."), dtype)  # type: ignore[arg-type]
    if dtype not in _DTYPES.values():
        raise ValueError(f"cache dtype must be torch.bfloat16 or torch.float32 (or their names), got {dtype!r}")
    return dtype  # type: ignore[return-value]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def bytes_per_token(d_model: int, dtype: torch.dtype | str = torch.bfloat16) -> int:
    """Bytes one cached token takes: both models' activations plus three int32 indices.

    Example: Gemma-2-2b (``d_model = 2304``) in bf16 takes ``2 * 2304 * 2 + 12 = 9228`` bytes, about 9.2 KB.

    Raises:
        ValueError: ``d_model`` not positive or a dtype other than bf16/fp32.
    """
    if d_model <= 0:
        raise ValueError(f"d_model must be positive, got {d_model}")
    return 2 * d_model * _dtype(dtype).itemsize + _INDEX_BYTES


def cache_size(n_tokens: int, d_model: int, dtype: torch.dtype | str = torch.bfloat16) -> int:
    """Bytes of a cache of ``n_tokens`` tokens (the shards' tensors; headers and records add a few KB a shard)."""
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be non-negative, got {n_tokens}")
    return n_tokens * bytes_per_token(d_model, dtype)


# ----------------------------------------------------------------------------------------------------
# Hashes, files
# ----------------------------------------------------------------------------------------------------


def tokenizer_hash(tokenizer: Any) -> str:
    """SHA-256 (hex) of a tokenizer's vocabulary (token -> id pairs, sorted by id): equal hashes, equal token ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 (hex) of a file, read in ``chunk``-byte pieces (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def shard_name(k: int) -> str:
    return f"shard-{k:06d}.safetensors"


def _record_path(root: Path, k: int) -> Path:
    return root / RECORDS / f"shard-{k:06d}.json"


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary name in the same folder, then rename it into place (readers never see half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _header_diff(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    stored, wanted = json.loads(json.dumps(dict(stored))), json.loads(json.dumps(dict(wanted)))  # tuples -> lists
    return [f"{k}: cache has {stored.get(k)!r}, asked for {wanted.get(k)!r}"
            for k in _HEADER_KEYS if stored.get(k) != wanted.get(k)]  # fmt: skip


def _source_diff(stored: Mapping[str, Any], source: str | None) -> list[str]:
    """The manifest's pair ``source`` against ``source``; not compared when either is missing (a cache written before
    sources were recorded, or a caller that names none)."""
    if source is None or stored.get("source", source) == source:
        return []
    return [f"source: cache has {stored['source']!r}, asked for {source!r}"]


# ----------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------


def _write_shard(root: Path, k: int, rows: ShardData, seq_range: tuple[int, int], stats: dict[str, Any]) -> dict:
    """Write shard ``k`` atomically and return its record (not yet written)."""
    from safetensors.torch import save_file

    final = root / shard_name(k)
    tmp = root / f".{final.name}.{os.getpid()}.tmp"
    tensors = {f: getattr(rows, f).contiguous() for f in ShardData._fields}
    # One metadata key only: safetensors stores metadata as a map, and a single key keeps the bytes deterministic.
    meta = {"tiedlib_cache": json.dumps({"format": FORMAT_VERSION, "shard": k, "seq_range": list(seq_range)})}
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return {"shard": k, "file": final.name, "seq_range": list(seq_range), "n_tokens": int(rows.acts.shape[0]),
            "sha256": file_sha256(final), **stats}  # fmt: skip


def _write_record(root: Path, record: dict) -> None:
    _write_json_atomic(_record_path(root, record["shard"]), record)


def _harvest_shard(pair: ModelPair, sequences: Sequence[Any], spec: Any, seq_range: tuple[int, int],
                   model_batch_size: int, dtype: torch.dtype) -> tuple[ShardData, dict[str, Any]]:  # fmt: skip
    """Harvest the sequences of one shard (model batches aligned to its start) into storage dtype, with stats."""
    parts: list[ShardData] = []
    count = 0
    norm_sum = torch.zeros(2, dtype=torch.float64)
    norm_sq_sum = torch.zeros(2, dtype=torch.float64)
    for first in range(seq_range[0], seq_range[1], model_batch_size):
        stop = min(first + model_batch_size, seq_range[1])
        seqs = [as_ids(sequences[i]) for i in range(first, stop)]
        for i, s in enumerate(seqs):
            if not s:
                raise ValueError(f"empty sequence at index {first + i}")
        hb = _harvest_batch(pair.base, pair.chat, seqs, spec, "cpu")
        # Running statistics from the float32 activations, before rounding to the storage dtype (the same sums as
        # estimate_norm_factors: mean L2 norm per model, BOS already dropped by the harvest).
        norms = hb.acts.double().norm(dim=-1)
        count += norms.shape[0]
        norm_sum += norms.sum(0)
        norm_sq_sum += (norms**2).sum(0)
        parts.append(ShardData(acts=hb.acts.to(dtype), token_ids=hb.token_ids.to(torch.int32),
                               doc_index=(hb.doc_index + first).to(torch.int32),
                               position=hb.position.to(torch.int32)))  # fmt: skip
    rows = ShardData(*(torch.cat([getattr(p, f) for p in parts]) for f in ShardData._fields))
    stats = {"count": count, "norm_sum": norm_sum.tolist(), "norm_sq_sum": norm_sq_sum.tolist()}
    return rows, stats


def write_cache(
    pair: ModelPair,
    sequences: Sequence[Any],
    path: str | Path,
    *,
    dataset: str | Mapping[str, Any],
    seqs_per_shard: int,
    model_batch_size: int = 8,
    dtype: torch.dtype | str = torch.bfloat16,
    exclude_token_ids: Iterable[int] = (),
    shard_range: tuple[int, int] | None = None,
    progress: bool = False,
) -> Path:
    """Harvest ``pair`` on ``sequences`` into a cache folder (resumable; one shard range per process).

    Args:
        pair: the model pair; its ``name``, ``layer``, ``d_model``, tokenizer and ``fingerprint`` (``"source"``: which
            lab build or Hub models, e.g. the ``TIEDLIB_LAB_SEED`` of ``"tiny"``) are recorded in the manifest.
        sequences: token-id sequences with ``len`` and indexing (lists, a 2-D tensor,
            :class:`tiedlib.pairs.corpora.TokenSequences`), each starting with BOS.
        path: the cache folder (created if missing).
        dataset: a description of the sequences (name, split, seed, token count...); a resumed or parallel writer
            must pass the same one.
        seqs_per_shard: sequences per shard (a shard holds about ``seqs_per_shard * seq_len`` tokens).
        model_batch_size: sequences per forward pass.
        dtype: storage dtype, ``torch.bfloat16`` (default, half the bytes) or ``torch.float32``.
        exclude_token_ids: token ids dropped besides BOS and padding (e.g. chat-template tokens).
        shard_range: ``(start, stop)`` shard indices this process writes (default: all shards). Shard ``k`` covers
            sequences ``[k * seqs_per_shard, (k + 1) * seqs_per_shard)``; see :func:`n_shards`.
        progress: show a tqdm bar over this process's shards.

    Returns:
        ``path``. Once every shard of the plan has a record, the manifest is finalised (:func:`finalize_cache`).

    Raises:
        CacheMismatchError: the folder holds a cache written with another pair (or pair source), layer, tokenizer,
            dataset, dtype or shard plan (the message lists each differing field).
        ValueError: empty dataset or sequence, bad ``seqs_per_shard`` or ``shard_range``.
    """
    from tqdm.auto import tqdm

    n = len(sequences)
    if n == 0:
        raise ValueError("empty dataset: no sequences to cache")
    if seqs_per_shard <= 0 or model_batch_size <= 0:
        raise ValueError(f"seqs_per_shard and model_batch_size must be positive, got {seqs_per_shard}, "
                         f"{model_batch_size}")  # fmt: skip
    dtype = _dtype(dtype)
    total = n_shards(n, seqs_per_shard)
    start, stop = shard_range if shard_range is not None else (0, total)
    if not 0 <= start <= stop <= total:
        raise ValueError(f"shard_range must satisfy 0 <= start <= stop <= {total} (the number of shards), "
                         f"got {shard_range}")  # fmt: skip
    exclude = sorted({int(t) for t in exclude_token_ids})
    spec = _make_spec(pair.base, pair.chat, pair.layer, drop_bos=True, exclude_token_ids=exclude, pad_id=None)
    header = {"format": FORMAT_VERSION, "pair": pair.name, "layer": pair.layer, "d_model": spec.d_model,
              "dataset": dataset, "tokenizer_sha256": tokenizer_hash(pair.tokenizer), "dtype": _dtype_name(dtype),
              "n_sequences": n, "seqs_per_shard": seqs_per_shard, "n_shards": total,
              "model_batch_size": model_batch_size, "exclude_token_ids": exclude}  # fmt: skip
    root = Path(path)
    (root / RECORDS).mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST
    source = pair.fingerprint
    if manifest_path.exists():
        stored = json.loads(manifest_path.read_text())
        diff = _header_diff(stored, header) + _source_diff(stored, source)
        if diff:
            raise CacheMismatchError(f"{root} holds a cache written with other settings ({'; '.join(diff)}); "
                                     "use another folder or delete it")  # fmt: skip
    else:
        # Parallel writers race here with identical headers; the rename makes either one win whole.
        _write_json_atomic(manifest_path, {**header, "source": source, "complete": False})
    for k in tqdm(range(start, stop), desc=f"cache shards {start}-{stop}", disable=not progress):
        if _record_path(root, k).exists() and (root / shard_name(k)).exists():
            continue  # completed by an earlier (interrupted) run or another process
        seq_range = (k * seqs_per_shard, min((k + 1) * seqs_per_shard, n))
        rows, stats = _harvest_shard(pair, sequences, spec, seq_range, model_batch_size, dtype)
        _write_record(root, _write_shard(root, k, rows, seq_range, stats))
    if all(_record_path(root, k).exists() for k in range(total)):
        finalize_cache(root)
    return root


def n_shards(n_sequences: int, seqs_per_shard: int) -> int:
    """Number of shards of a cache of ``n_sequences`` sequences (the last shard may hold fewer)."""
    return math.ceil(n_sequences / seqs_per_shard)


def finalize_cache(path: str | Path) -> dict[str, Any]:
    """Merge the shard records of a cache folder into its manifest and compute the normalisation factors.

    Run it once after the processes that wrote disjoint shard ranges have all finished (:func:`write_cache` runs it
    itself when it records the last shard). Safe to run again.

    Returns:
        The finalised manifest: the header plus ``shards`` (records in shard order), ``n_tokens``, ``norm_stats``
        (per model: ``count``, ``mean_norm``, ``std_norm``) and ``norm_factors`` (``sqrt(d_model) / mean_norm``
        per model, base then chat; the write-up's normalisation, BOS excluded, see REFERENCE.md).

    Raises:
        CacheCorruptError: shards without a record (listed) or a record whose shard file is missing.
    """
    root = Path(path)
    manifest = json.loads((root / MANIFEST).read_text())
    total = manifest["n_shards"]
    missing = [k for k in range(total) if not _record_path(root, k).exists()]
    if missing:
        raise CacheCorruptError(f"{root}: {len(missing)} of {total} shards are not written yet (first: "
                                f"{missing[:8]}); run write_cache with the shard ranges covering them")  # fmt: skip
    records = [json.loads(_record_path(root, k).read_text()) for k in range(total)]
    for r in records:
        if not (root / r["file"]).exists():
            raise CacheCorruptError(f"{root}: shard {r['file']} is recorded but its file is missing")
    count = sum(r["count"] for r in records)
    if count == 0:
        raise ValueError(f"{root}: the cache holds zero tokens, so no normalisation factors can be computed")
    norm_sum = [math.fsum(r["norm_sum"][m] for r in records) for m in range(2)]
    norm_sq = [math.fsum(r["norm_sq_sum"][m] for r in records) for m in range(2)]
    mean = [s / count for s in norm_sum]
    std = [math.sqrt(max(q / count - mu**2, 0.0)) for q, mu in zip(norm_sq, mean, strict=True)]
    if not all(math.isfinite(mu) and mu > 0 for mu in mean):
        raise ValueError(f"{root}: mean activation norms must be finite and positive, got {mean}")
    # Scale each model so that its mean L2 norm is sqrt(d_model) (REFERENCE.md, "Normalisation").
    factors = [math.sqrt(manifest["d_model"]) / mu for mu in mean]
    out = {k: manifest[k] for k in _HEADER_KEYS} | {k: manifest[k] for k in ("source",) if k in manifest} | {
        "complete": True,
        "shards": [{k: r[k] for k in ("shard", "file", "seq_range", "n_tokens", "sha256")} for r in records],
        "n_tokens": sum(r["n_tokens"] for r in records),
        "norm_stats": {"count": count, "mean_norm": mean, "std_norm": std},
        "norm_factors": factors,
    }
    _write_json_atomic(root / MANIFEST, out)
    return out


# ----------------------------------------------------------------------------------------------------
# Opening
# ----------------------------------------------------------------------------------------------------


class ActivationCache:
    """A finalised cache folder, checked against the pair it is used with.

    Use :func:`open_cache` to build one. Attributes mirror the manifest: ``d_model``, ``layer``, ``pair``, ``dtype``,
    ``n_tokens``, ``shards`` (records in shard order), ``norm_factors`` (``(2,)`` float32, base then chat).
    """

    def __init__(self, path: str | Path, manifest: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = dict(manifest)
        self.d_model: int = manifest["d_model"]
        self.layer: int = manifest["layer"]
        self.pair: str = manifest["pair"]
        self.source: str | None = manifest.get("source")
        """The writing pair's ``fingerprint`` (None for a cache written before it was recorded)."""
        self.dtype = _dtype(manifest["dtype"])
        self.n_tokens: int = manifest["n_tokens"]
        self.shards: list[dict[str, Any]] = list(manifest["shards"])
        self.norm_factors = torch.tensor(manifest["norm_factors"], dtype=torch.float32)

    def __repr__(self) -> str:
        return (f"ActivationCache({str(self.path)!r}, pair={self.pair!r}, layer={self.layer}, "
                f"{len(self.shards)} shards, {self.n_tokens} tokens, {_dtype_name(self.dtype)})")  # fmt: skip

    @property
    def nbytes(self) -> int:
        """Bytes of the shards' tensors (:func:`cache_size` of ``n_tokens``)."""
        return cache_size(self.n_tokens, self.d_model, self.dtype)

    def verify_shard(self, k: int) -> None:
        """Check shard ``k``'s file against its recorded sha256 (reads the whole file once).

        Raises:
            CacheCorruptError: the file is missing or its hash differs (the message names the shard).
        """
        rec = self.shards[k]
        file = self.path / rec["file"]
        if not file.exists():
            raise CacheCorruptError(f"shard {rec['file']} of {self.path} is missing")
        digest = file_sha256(file)
        if digest != rec["sha256"]:
            raise CacheCorruptError(
                f"shard {rec['file']} of {self.path} is corrupt: sha256 {digest[:16]}... but the manifest records "
                f"{rec['sha256'][:16]}...; re-harvest it (delete the file and records/{Path(rec['file']).stem}.json, "
                "then run write_cache again)"
            )

    def verify(self) -> None:
        """Check every shard (see :meth:`verify_shard`)."""
        for k in range(len(self.shards)):
            self.verify_shard(k)

    def load_shard(self, k: int, *, verify: bool = True) -> ShardData:
        """The rows of shard ``k`` as stored (``acts`` raw, in the cache dtype; indices int32), on the CPU.

        Raises:
            CacheCorruptError: ``verify`` and the file does not match its sha256.
        """
        from safetensors import safe_open

        if verify:
            self.verify_shard(k)
        rec = self.shards[k]
        with safe_open(str(self.path / rec["file"]), framework="pt") as fh:
            rows = ShardData(*(fh.get_tensor(f) for f in ShardData._fields))
        if rows.acts.shape != (rec["n_tokens"], 2, self.d_model):
            raise CacheCorruptError(f"shard {rec['file']} of {self.path} holds acts of shape {tuple(rows.acts.shape)}"
                                    f", the manifest says ({rec['n_tokens']}, 2, {self.d_model})")  # fmt: skip
        return rows


def open_cache(
    path: str | Path,
    pair: ModelPair | None = None,
    *,
    layer: int | None = None,
    tokenizer: Any = None,
    dataset: str | Mapping[str, Any] | None = None,
    pair_name: str | None = None,
    d_model: int | None = None,
    source: str | None = None,
) -> ActivationCache:
    """Open a finalised cache, refusing it when it was written for another pair, layer, tokenizer or dataset.

    Args:
        path: the cache folder.
        pair: the pair the cache will be used with; its ``name``, ``layer``, ``d_model`` and tokenizer are compared
            with the manifest.
        layer: the layer to compare (default: ``pair.layer``).
        tokenizer: a tokenizer to compare (default: ``pair.tokenizer``).
        dataset: the dataset description to compare (default: not compared).
        pair_name, d_model: the pair's name and residual width to compare without loading the pair (the command
            line checks a cache this way before training from it).
        source: the pair's fingerprint to compare (:func:`tiedlib.pairs.pair_source`; e.g. the lab build behind
            ``"tiny"``), when the manifest records one (caches written before it was recorded are not compared).

    Raises:
        FileNotFoundError: no manifest in ``path``.
        CacheMismatchError: a compared field differs (the message names each one, with both values).
        CacheCorruptError: the cache is not finalised (some shards are missing).
    """
    root = Path(path)
    if not (root / MANIFEST).exists():
        raise FileNotFoundError(f"no activation cache at {root} ({MANIFEST} is missing)")
    manifest = json.loads((root / MANIFEST).read_text())
    if not manifest.get("complete"):
        raise CacheCorruptError(f"the cache at {root} is not complete: finish write_cache over every shard range, "
                                "then finalize_cache")  # fmt: skip
    wanted: dict[str, Any] = {}
    if pair is not None:
        wanted |= {"pair": pair.name, "layer": pair.layer, "d_model": pair.d_model}
    if layer is not None:
        wanted["layer"] = layer
    if pair_name is not None:
        wanted["pair"] = pair_name
    if d_model is not None:
        wanted["d_model"] = d_model
    tok = tokenizer if tokenizer is not None else (pair.tokenizer if pair is not None else None)
    if tok is not None:
        wanted["tokenizer_sha256"] = tokenizer_hash(tok)
    if dataset is not None:
        wanted["dataset"] = dataset
    diff = _header_diff({k: manifest.get(k) for k in wanted}, wanted) + _source_diff(manifest, source)
    if diff:
        raise CacheMismatchError(f"the activation cache at {root} does not match: {'; '.join(diff)}")
    return ActivationCache(root, manifest)
