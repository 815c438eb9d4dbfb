"""Vectorised firing counts (tiedlib.analysis.firing_counts) against a per-token Python loop, same data and masks.

The public code counted firings one token at a time in Python; this measures how much faster the batched count is on
a tied crosscoder of tiny-scale size, and checks that the two agree exactly.

Usage: ``python benchmarks/bench_firing.py [--tokens 4000] [--d-model 128] [--n-latents 512] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import time

import torch

from tiedlib import CrosscoderConfig, make_crosscoder
from tiedlib.activations import HarvestBatch
from tiedlib.analysis import firing_counts


@torch.no_grad()
def loop_counts(model, acts, token_ids, exclude):
    """The baseline: one encoder call per token, in Python, skipping masked tokens."""
    counts = torch.zeros(model.cfg.n_groups, model.cfg.n_latents, dtype=torch.long)
    for t in range(acts.shape[0]):
        if int(token_ids[t]) in exclude:
            continue
        f = model.encode(model.normalize(acts[t : t + 1]))
        counts += (f[0] > 0).long().reshape(counts.shape)
    return counts


def best_time(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-latents", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machines are shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CrosscoderConfig(d_model=args.d_model, n_latents=args.n_latents, architecture="tied",
                           norm_factors=[0.3, 0.25])
    model = make_crosscoder(cfg).eval()
    with torch.no_grad():
        model.b_enc.normal_(-0.05, 0.05)
    acts = torch.randn(args.tokens, 2, args.d_model) * 4
    token_ids = torch.randint(0, 50, (args.tokens,))
    exclude = {0, 2, 4}  # padding, BOS, a template token
    batches = [HarvestBatch(acts[s : s + 1024], token_ids[s : s + 1024], token_ids[s : s + 1024],
                            token_ids[s : s + 1024]) for s in range(0, args.tokens, 1024)]  # fmt: skip

    t_vec, fast = best_time(lambda: firing_counts(model, iter(batches), exclude_token_ids=exclude), args.repeats)
    t_loop, slow = best_time(lambda: loop_counts(model, acts, token_ids, exclude), max(1, args.repeats // 2))
    # Batched and single-row matrix products round differently, so a pre-activation within ~1e-6 of zero can fire in
    # one and not the other: allow a handful of such flips out of millions of (token, latent) decisions.
    flips = int((fast.counts - slow).abs().sum())
    if flips > 1e-5 * fast.n_tokens * fast.counts.numel():
        raise SystemExit(f"firing counts disagree with the per-token loop ({flips} firings differ)")
    print(f"tokens: {args.tokens} (kept {fast.n_tokens}), tied crosscoder d_model={args.d_model}, "
          f"{args.n_latents} x 3 latents, {torch.get_num_threads()} thread(s)")
    print(f"agreement: {flips} of {int(slow.sum()):,} firings differ (rounding at the ReLU threshold)")
    print(f"vectorised: {t_vec * 1e3:.1f} ms ({fast.n_tokens / t_vec:,.0f} tokens/s)")
    print(f"per-token loop: {t_loop * 1e3:.1f} ms ({fast.n_tokens / t_loop:,.0f} tokens/s)")
    print(f"firing_counts_speedup_vs_loop: {t_loop / t_vec:.0f}x (target >= 100)")


if __name__ == "__main__":
    main()
