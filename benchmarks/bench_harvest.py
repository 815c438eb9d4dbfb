"""Benchmark paired harvesting: early stop vs full forwards, and nnsight vs plain PyTorch hooks.

A random Gemma2 pair (default 8 layers, d_model 256) is harvested at its middle layer on one batch of
``batch x seq`` tokens. Three ways are timed side by side in each repeat (so machine noise hits all alike),
and the median over repeats is reported:

* ``harvest``: :func:`tiedlib.activations.harvest` (nnsight, stops at the layer, masks BOS/padding);
* ``hooks``: the same with plain forward pre-hooks that raise to stop the forward, and the same masking;
* ``full``: two plain full forwards (what harvesting costs without an early stop).

Prints one line per figure, ``name: value (target)``. Usage::

    python benchmarks/bench_harvest.py [--layers 8] [--d-model 256] [--batch 32] [--seq 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer, wrap  # noqa: E402
from tiedlib.activations.harvest import decoder_layers, harvest_all, pad_left  # noqa: E402


class _Stop(Exception):
    """Raised by the plain pre-hook to end the forward at the layer, as nnsight's tracer.stop() does."""


def hook_harvest(models, seqs, layer, pad_id, bos_id):
    """Baseline: plain PyTorch pre-hooks on ``layers[layer]``, early stop, same padding and masking."""
    ids, mask, position = pad_left(seqs, pad_id)
    out = []
    for model in models:
        box = {}

        def pre_hook(module, args, kwargs, box=box):
            box["h"] = args[0] if args else kwargs["hidden_states"]
            raise _Stop

        handle = decoder_layers(model)[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)
        try:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, position_ids=position)
        except _Stop:
            pass
        finally:
            handle.remove()
        out.append(box["h"].float())
    keep = mask.bool() & ~((position == 0) & (ids == bos_id))
    return torch.stack([out[0][keep], out[1][keep]], dim=1)


def full_forwards(models, seqs, pad_id):
    """Two complete forwards (every layer and the unembedding)."""
    ids, mask, position = pad_left(seqs, pad_id)
    with torch.no_grad():
        for model in models:
            model(input_ids=ids, attention_mask=mask, position_ids=position)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tok = tiny_tokenizer()
    models = [tiny_gemma2(n_layers=args.layers, d_model=args.d_model, seed=s).to(args.device) for s in (0, 1)]
    base, chat = (wrap(m, tok) for m in models)
    layer = args.layers // 2
    # Lengths seq/2..seq: realistic left padding inside the batch.
    seqs = random_sequences(args.batch, args.seq // 2, args.seq, len(tok), seed=0)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run_harvest():
        return harvest_all(base, chat, seqs, layer, batch_size=args.batch, progress=False).acts

    def run_hooks():
        return hook_harvest(models, seqs, layer, tok.pad_token_id, tok.bos_token_id)

    def run_full():
        full_forwards(models, seqs, tok.pad_token_id)

    # Same numbers both ways (a benchmark of a wrong harvest would be meaningless).
    torch.testing.assert_close(run_harvest().cpu(), run_hooks().cpu(), atol=1e-4, rtol=1e-4)
    times: dict[str, list[float]] = {"harvest": [], "hooks": [], "full": []}
    fns = {"harvest": run_harvest, "hooks": run_hooks, "full": run_full}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    n_tokens = sum(map(len, seqs))
    print(
        f"# gemma2 random, {args.layers} layers, d_model {args.d_model}, layer {layer}, batch {args.batch} x "
        f"<= {args.seq} ({n_tokens} tokens), {args.repeats} repeats, median, device {args.device}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"harvest_s: {med['harvest']:.4f} (-)")
    print(f"hooks_s: {med['hooks']:.4f} (-)")
    print(f"two_full_forwards_s: {med['full']:.4f} (-)")
    print(f"speedup_stop_vs_full: {med['full'] / med['harvest']:.2f}x (>= 1.4x)")
    print(f"overhead_nnsight_vs_hooks: {med['harvest'] / med['hooks']:.3f}x (<= 1.15x)")


if __name__ == "__main__":
    main()
