"""GPU throughput at the paper's shapes: harvesting, the crosscoder step in fp32/TF32/bf16, end to end.

Random Gemma-2 models with Gemma-2-2b's config (``transformers.Gemma2Config`` defaults: d_model 2304, 8 heads,
MLP 9216, vocabulary 256k) but only ``--layers`` decoder layers (default 15: harvesting reads the input of layer 14
and stops there, so deeper layers never run), in bf16 on the GPU, wrapped for nnsight as the paper pair is. The
tied crosscoder has 3 x 16,384 latents and trains on batches of 4,096 tokens. Figures, one per line:

- ``harvest``: tokens/s of an :class:`~tiedlib.activations.ActivationBuffer` refill (both models, ``--model-batch``
  sequences of ``--seq`` tokens per forward pass);
- ``step``: ms per tied (and standard) training step with fp32 products, TF32 products and bf16 autocast, with the
  peak GPU memory of each;
- ``end to end``: tokens/s of :func:`tiedlib.train` reading that buffer (refills included), the tied and standard
  crosscoders trained together on one stream with :func:`tiedlib.training.train_many`, the peak memory, and the
  hours 250M tokens would take at that rate.

Runs in about 2-4 minutes on one A100/H100 class GPU. Without CUDA it stops at once with an error that says so
(``--device cpu --tiny`` runs the same code at toy sizes, for tests).

Usage: ``python benchmarks/bench_gpu.py [--layers 15] [--steps 10] [--e2e-steps 64] [--tokens 250e6]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

PAPER = dict(hidden_size=2304, intermediate_size=9216, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
             vocab_size=256_000)  # fmt: skip
"""Gemma-2-2b's shapes (the Gemma2Config defaults, spelled out so a changed default cannot change the benchmark)."""
TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
            vocab_size=512)  # fmt: skip


def require_cuda(device: str) -> None:
    """Stop with a clear message when ``device`` is CUDA and torch sees no CUDA GPU."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"bench_gpu.py needs a CUDA GPU: torch {torch.__version__} sees none on this machine "
            f"(torch.cuda.is_available() is False{'; CPU-only build' if torch.version.cuda is None else ''}). "
            "Run it on a GPU machine, or with --device cpu --tiny for a toy-size run of the same code"
        )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")


def random_pair(shapes: dict, layers: int, device: torch.device, dtype: torch.dtype):
    """Two random Gemma-2 models of ``shapes`` with ``layers`` layers, built on ``device`` in ``dtype``, wrapped."""
    from transformers import AutoModelForCausalLM, Gemma2Config

    from tests.helpers_models import tiny_tokenizer
    from tiedlib.pairs import wrap

    tok = tiny_tokenizer()  # only its pad and BOS ids are used: the token ids below are drawn directly
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = Gemma2Config(num_hidden_layers=layers, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                           **shapes)  # fmt: skip
        with torch.device(device):
            models.append(AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval())
    return wrap(models[0], tok), wrap(models[1], tok), tok


def random_sequences(n: int, seq: int, vocab: int, bos: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    body = torch.randint(16, vocab, (n, seq - 1), generator=gen)  # above the special tokens
    return [[bos, *row] for row in body.tolist()]


def time_calls(fn, n: int, device: torch.device) -> float:
    """Median seconds of ``n`` calls after one warm-up."""
    fn()
    out = []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def harvest_rate(base, chat, seqs, layer: int, args, device: torch.device) -> float:
    """Tokens/s of one buffer refill (after a first, warm-up fill)."""
    from tiedlib.activations.buffer import ActivationBuffer

    buf = ActivationBuffer(base, chat, seqs, layer, batch_size=args.batch, buffer_tokens=args.buffer_tokens,
                           model_batch_size=args.model_batch, norm_factors=torch.ones(2), dtype=torch.bfloat16,
                           device=device)  # fmt: skip
    per_fill = buf.buffer_tokens // args.batch
    for _ in range(per_fill):  # the first fill: warm-up
        next(buf)
    sync(device)
    t0 = time.perf_counter()
    next(buf)  # the second fill, then one batch served from it
    sync(device)
    return buf.buffer_tokens / (time.perf_counter() - t0)


def step_times(d_model: int, args, device: torch.device) -> list[tuple[str, float, float]]:
    """(mode, ms per step, peak GB) of tied and standard training steps in each precision."""
    from tiedlib import CrosscoderConfig, make_crosscoder
    from tiedlib.training import TrainConfig, make_optimizer, train_step

    x = torch.randn(args.batch, 2, d_model, device=device)
    rows = []
    modes = (("fp32", False, False), ("tf32", True, False), ("bf16", True, True))
    for arch in ("tied", "standard"):
        torch.manual_seed(0)
        model = make_crosscoder(CrosscoderConfig(d_model=d_model, n_latents=args.n_latents,
                                                 architecture=arch)).to(device)  # fmt: skip
        opt, _ = make_optimizer(model, TrainConfig(n_steps=10))

        def step(bf16: bool, model=model, opt=opt) -> None:
            train_step(model, opt, x, l1_coeff=2.0, metrics=False, bf16=bf16)

        for name, tf32, bf16 in modes if arch == "tied" else modes[1:2]:
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                reset_peak(device)
                t = time_calls(lambda bf16=bf16: step(bf16), args.steps, device)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = before
            rows.append((f"{arch} {name}", 1e3 * t, peak_gb(device)))
    return rows


def end_to_end(base, chat, seqs, layer: int, d_model: int, args, device: torch.device, *, both: bool):
    """Tokens/s of training from the buffer (tied alone, or tied + standard on one stream) and the peak GB."""
    import warnings

    from tiedlib import CrosscoderConfig, make_crosscoder
    from tiedlib.activations.buffer import ActivationBuffer
    from tiedlib.training import TrainConfig, train_many

    archs = ("tied", "standard") if both else ("tied",)
    torch.manual_seed(0)
    models = [make_crosscoder(CrosscoderConfig(d_model=d_model, n_latents=args.n_latents, architecture=a))
              for a in archs]  # fmt: skip
    cfgs = [TrainConfig(n_steps=args.e2e_steps, device=str(device), tf32=True, progress=False, checkpoint_minutes=0,
                        log_every=args.e2e_steps) for _ in archs]  # fmt: skip
    buf = ActivationBuffer(base, chat, seqs, layer, batch_size=args.batch, buffer_tokens=args.buffer_tokens,
                           model_batch_size=args.model_batch, norm_factors=torch.ones(2), dtype=torch.bfloat16,
                           device=device)  # fmt: skip
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_many(cfgs, models, buf)
    sync(device)
    return args.e2e_steps * args.batch / (time.perf_counter() - t0), peak_gb(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=15, help="decoder layers of the random models")
    parser.add_argument("--layer", type=int, default=14, help="harvested layer (its input)")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--model-batch", type=int, default=8, help="sequences per harvesting forward pass")
    parser.add_argument("--batch", type=int, default=4096, help="tokens per training step")
    parser.add_argument("--n-latents", type=int, default=16384)
    parser.add_argument("--buffer-tokens", type=int, default=2**17)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per precision")
    parser.add_argument("--e2e-steps", type=int, default=64, help="steps of each end-to-end run")
    parser.add_argument("--tokens", type=float, default=250e6, help="run length for the projection")
    parser.add_argument("--tiny", action="store_true", help="toy shapes (for a CPU test of this script)")
    args = parser.parse_args(argv)
    require_cuda(args.device)
    device = torch.device(args.device)
    shapes = TINY if args.tiny else PAPER
    layer = min(args.layer, args.layers - 1)
    t_start = time.perf_counter()
    base, chat, tok = random_pair(shapes, args.layers, device, torch.bfloat16 if device.type == "cuda" else
                                  torch.float32)  # fmt: skip
    n_seqs = 4 * args.buffer_tokens // (args.seq - 1) + 4 * args.model_batch
    seqs = random_sequences(n_seqs, args.seq, shapes["vocab_size"], tok.bos_token_id)
    d = shapes["hidden_size"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {name}, torch {torch.__version__}; random Gemma-2 ({'toy' if args.tiny else 'Gemma-2-2b'} shapes, "
          f"{args.layers} layers, bf16), layer {layer}; crosscoder 3 x {args.n_latents:,} latents, batch {args.batch}")
    rate = harvest_rate(base, chat, seqs, layer, args, device)
    print(f"harvest: {rate:,.0f} tokens/s (buffer refill of {args.buffer_tokens:,} tokens, "
          f"{args.model_batch} x {args.seq} tokens per forward)")
    for mode, ms, gb in step_times(d, args, device):
        print(f"step {mode}: {ms:.1f} ms ({args.batch / ms * 1e3:,.0f} tokens/s), peak {gb:.1f} GB")
    for both in (False, True):
        tps, gb = end_to_end(base, chat, seqs, layer, d, args, device, both=both)
        what = "tied + standard on one stream" if both else "tied"
        print(f"end to end, {what}: {tps:,.0f} tokens/s, peak {gb:.1f} GB; "
              f"{args.tokens:,.0f} tokens in {args.tokens / tps / 3600:.1f} h")
    print(f"# benchmark took {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
