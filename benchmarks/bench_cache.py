"""Benchmark the paired activation cache: write and read throughput, and training from the cache vs from memory.

A random Gemma2 pair (default 4 layers, d_model 256) is harvested at its middle layer on ``n_seqs`` random sequences
of up to ``seq`` tokens and written into a cache (bf16 by default) in a temporary folder. Figures, one a line as
``name: value (target)``:

* ``harvest_tok_s``: :func:`tiedlib.activations.harvest_all` alone (the forward passes, nothing stored);
* ``cache_write_tok_s``: :func:`tiedlib.activations.write_cache` (the same forwards + rounding + safetensors shards +
  sha256 + records), so the difference to the line above is the cost of storing;
* ``cache_read_tok_s`` (checksums verified on first load) and ``cache_read_noverify_tok_s``: one epoch of
  :class:`tiedlib.activations.CacheBatches`, normalised float32 batches;
* ``step_ms_from_cache`` / ``step_ms_in_memory`` / ``step_ms_from_buffer``: one crosscoder training step
  (``next(batches)`` + ``train_step``) with batches from the cache, from
  :class:`tiedlib.activations.InMemoryBatches` over the same rows in memory, and from the nnsight
  :class:`tiedlib.activations.ActivationBuffer` that harvests the same sequences on the fly (``--buffer-batches``
  batches a fill), interleaved step by step so machine noise hits all alike. Median and mean over steps: the mean
  includes the cache's window loads and the buffer's refills (the forward passes), the median mostly not.

Usage::

    python benchmarks/bench_cache.py [--layers 4] [--d-model 256] [--n-seqs 96] [--seq 128] [--seqs-per-shard 16]
        [--batch 512] [--n-latents 2048] [--steps 30] [--buffer-batches 4] [--dtype bfloat16] [--device cpu]
        [--threads 1]

On a machine shared with other jobs pass ``--threads 1``: with more torch threads than free cores every parallel op
waits for a busy core (a 512-row gather measured 15 ms with 2 threads under load 9, 0.7 ms with 1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer, wrap  # noqa: E402
from tiedlib.activations import (  # noqa: E402
    ActivationBuffer,
    CacheBatches,
    InMemoryBatches,
    bytes_per_token,
    harvest_all,
    open_cache,
    write_cache,
)
from tiedlib.config import CrosscoderConfig  # noqa: E402
from tiedlib.crosscoders.crosscoder import make_crosscoder  # noqa: E402
from tiedlib.pairs import ModelPair  # noqa: E402
from tiedlib.training import train_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-seqs", type=int, default=96)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--seqs-per-shard", type=int, default=16)
    parser.add_argument("--model-batch", type=int, default=16)
    parser.add_argument("--batch", type=int, default=512, help="training batch (tokens)")
    parser.add_argument("--n-latents", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--buffer-batches", type=int, default=4, help="batches per ActivationBuffer fill")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--window", type=int, default=2, help="shards resident in the reader")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    def sync() -> None:
        if torch.device(args.device).type == "cuda":
            torch.cuda.synchronize()

    tok = tiny_tokenizer()
    layer = args.layers // 2
    base, chat = (wrap(tiny_gemma2(n_layers=args.layers, d_model=args.d_model, seed=s).to(args.device), tok)
                  for s in (0, 1))  # fmt: skip
    pair = ModelPair("bench", base, chat, tok, layer, args.d_model)
    seqs = random_sequences(args.n_seqs, args.seq // 2, args.seq, len(tok), seed=0)
    harvest_all(base, chat, seqs[: args.model_batch], layer, batch_size=args.model_batch, progress=False)  # warm-up

    with tempfile.TemporaryDirectory() as tmp:
        sync()
        t0 = time.perf_counter()
        ref = harvest_all(base, chat, seqs, layer, batch_size=args.model_batch, progress=False, device="cpu")
        sync()
        t_harvest = time.perf_counter() - t0
        t0 = time.perf_counter()
        path = write_cache(pair, seqs, Path(tmp) / "cache", dataset="random", seqs_per_shard=args.seqs_per_shard,
                           model_batch_size=args.model_batch, dtype=args.dtype)  # fmt: skip
        t_write = time.perf_counter() - t0
        cache = open_cache(path, pair)
        n = cache.n_tokens

        read = {}
        for verify in (True, False):
            reader = CacheBatches(cache, args.batch, window_shards=args.window, device=args.device, verify=verify)
            sync()
            t0 = time.perf_counter()
            for _ in range(reader.batches_per_epoch):
                next(reader)
            sync()
            read[verify] = reader.tokens_consumed / (time.perf_counter() - t0)

        rows = (ref.acts * cache.norm_factors[None, :, None]).to(args.device)
        sources = {
            "cache": CacheBatches(cache, args.batch, window_shards=args.window, device=args.device, epochs=None,
                                  verify=False),
            "memory": InMemoryBatches(rows, args.batch, epochs=None),
            "buffer": ActivationBuffer(base, chat, seqs, layer, batch_size=args.batch,
                                       buffer_tokens=args.buffer_batches * args.batch,
                                       model_batch_size=args.model_batch, norm_factors=cache.norm_factors,
                                       on_exhausted="new_epoch", device=args.device, dtype=getattr(torch, args.dtype)),
        }  # fmt: skip
        models = {k: make_crosscoder(CrosscoderConfig(d_model=args.d_model, n_latents=args.n_latents)).to(args.device)
                  for k in sources}  # fmt: skip
        opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
        times: dict[str, list[float]] = {k: [] for k in sources}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # epoch-reuse notices: rows are reused on purpose here
            for step in range(args.steps + 3):
                for k, src in sources.items():
                    sync()
                    t0 = time.perf_counter()
                    train_step(models[k], opts[k], next(src), l1_coeff=1.0, metrics=False)
                    sync()
                    if step >= 3:  # warm-up steps not counted
                        times[k].append(time.perf_counter() - t0)
        shard_files = list(Path(path).glob("shard-*.safetensors"))
        disk = sum(f.stat().st_size for f in shard_files)

    step = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    mean = {k: 1e3 * statistics.fmean(v) for k, v in times.items()}
    print(f"# gemma2 random, {args.layers} layers, d_model {args.d_model}, layer {layer}, {args.n_seqs} seqs <= "
          f"{args.seq} tokens ({n} cached tokens, {len(shard_files)} shards, {args.dtype}), window {args.window}, "
          f"batch {args.batch}, {args.n_latents} latents, device {args.device}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    print(f"bytes_per_token: {bytes_per_token(args.d_model, args.dtype)} (disk: {disk / n:.0f} incl. headers)")
    print(f"harvest_tok_s: {n / t_harvest:.0f} (-)")
    print(f"cache_write_tok_s: {n / t_write:.0f} (>= 0.7x harvest_tok_s)")
    print(f"cache_read_tok_s: {read[True]:.0f} (>= 10x harvest_tok_s)")
    print(f"cache_read_noverify_tok_s: {read[False]:.0f} (-)")
    print(f"step_ms_from_cache: {step['cache']:.2f} median, {mean['cache']:.2f} mean (median <= 1.3x in memory)")
    print(f"step_ms_in_memory: {step['memory']:.2f} median, {mean['memory']:.2f} mean (-)")
    print(f"step_ms_from_buffer: {step['buffer']:.2f} median, {mean['buffer']:.2f} mean, refills included "
          f"(mean > cache's: the buffer runs both models)")
    print(f"paper_pair_bytes_per_token_bf16: {bytes_per_token(2304, 'bfloat16')} (about 9.2 KB)")


if __name__ == "__main__":
    main()
