"""Crosscoder training-step benchmarks, measured side by side (interleaved repeats, median).

Prints one line per figure, ``name: value (target)``: each ratio is taken within a round (the two workloads ran
seconds apart, so a slow phase of a shared machine hits both) and the median over rounds is printed:
- tied step time / standard step time at equal n (latents per group = standard latents): target <= 2.4;
- step time (loss, backward, clip, Adam) / time of the same matrix products alone, per architecture: target <= 1.3.

Run: ``.venv/bin/python benchmarks/bench_crosscoder.py [--d-model 256 --n-latents 4096 --batch 1024 --threads 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tiedlib import CrosscoderConfig, make_crosscoder
from tiedlib.training import TrainConfig, make_optimizer, train_step


def matmuls_alone(x: torch.Tensor, n: int, groups: int) -> callable:
    """The forward and backward matrix products of one step, on preallocated tensors, with nothing else.

    Forward: encoder ``(b, 2d) @ (2d, G n)`` and decoder ``(b, n) @ (n, 2d)`` (tied: two ``(b, n) @ (n, d)``).
    Backward: ``dW_enc = x^T dpre``, ``df = dx_hat W_dec^T``, ``dW_dec = coeff^T dx_hat``.
    """
    b, _, d = x.shape
    xf = x.reshape(b, 2 * d)
    W_enc = torch.randn(2 * d, groups * n) * 0.01
    W_dec = torch.randn(n, 2, d) * 0.01
    dpre = torch.randn(b, groups * n)
    coeff = torch.randn(2, b, n) if groups == 3 else torch.randn(b, n)
    dxh = torch.randn(b, 2, d)
    Wt = W_dec.transpose(0, 1)  # (2, n, d) strided view, as in TiedCrosscoder.decode

    def run() -> None:
        xf @ W_enc
        xf.t() @ dpre
        if groups == 3:
            torch.bmm(coeff, Wt)
            torch.bmm(dxh.transpose(0, 1), Wt.transpose(1, 2))
            torch.bmm(coeff.transpose(1, 2), dxh.transpose(0, 1))
        else:
            coeff @ W_dec.reshape(n, 2 * d)
            dxh.reshape(b, 2 * d) @ W_dec.reshape(n, 2 * d).t()
            coeff.t() @ dxh.reshape(b, 2 * d)

    return run


def step_fn(arch: str, x: torch.Tensor, n: int) -> callable:
    model = make_crosscoder(CrosscoderConfig(d_model=x.shape[-1], n_latents=n, architecture=arch))
    opt, _ = make_optimizer(model, TrainConfig(n_steps=10))
    # metrics=False: the trainer's steady-state step (L0/EV are computed only on logging steps)
    return lambda: train_step(model, opt, x, l1_coeff=2.0, grad_clip=1.0, metrics=False)


def median_time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-latents", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4096, help="tokens per step (paper: 4096)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds")
    parser.add_argument("--block", type=int, default=3, help="timed calls per workload and round")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 is steadier on a shared machine")  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 2, args.d_model)
    fns = {
        "standard": step_fn("standard", x, args.n_latents),
        "tied": step_fn("tied", x, args.n_latents),
        "standard_mm": matmuls_alone(x, args.n_latents, 1),
        "tied_mm": matmuls_alone(x, args.n_latents, 3),
    }
    # Rounds of blocks: in each round every workload runs a warm-up call and then `block` timed calls back to back
    # (steady state, as in training); rounds alternate the workloads, so slow phases of the machine hit all alike.
    # Interleaving single calls instead made each big-allocation workload pay for the previous one's memory.
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            fn()
            times[k].append(statistics.median(median_time(fn, args.block)))
    med = {k: statistics.median(v) for k, v in times.items()}

    def ratio(a: str, b: str) -> str:
        per_round = [x / y for x, y in zip(times[a], times[b], strict=True)]
        return f"{statistics.median(per_round):.2f} (rounds {min(per_round):.2f}-{max(per_round):.2f})"

    print(f"# d_model={args.d_model} n_latents={args.n_latents} batch={args.batch} threads={torch.get_num_threads()}")
    print("# median seconds: " + ", ".join(f"{k}={v:.4f}" for k, v in med.items()))
    print(f"tied_step_over_standard_step: {ratio('tied', 'standard')} (target <= 2.4)")
    print(f"standard_step_over_matmuls: {ratio('standard', 'standard_mm')} (target <= 1.3)")
    print(f"tied_step_over_matmuls: {ratio('tied', 'tied_mm')} (target <= 1.3)")


if __name__ == "__main__":
    main()
