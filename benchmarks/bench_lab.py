"""Time the full build of the tiny lab pair (corpus, tokenizer, base pretraining, chat fine-tune, save).

    python benchmarks/bench_lab.py [--config tiny|smoke|tiny-v2] [--device cpu] [--probes]

Builds into a fresh temporary cache (``TIEDLIB_CACHE`` is overridden for this process), so an existing cache is
neither used nor touched, and prints one line: ``lab_tiny_build_seconds: <value> (target <= 600)``. With
``--probes`` it then times the probe suite (:func:`tiedlib.lab.probe_table`, notebook 00's settings for the preset)
and prints ``lab_<config>_probes_seconds`` and the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", choices=["tiny", "smoke", "tiny-v2"])
    parser.add_argument("--probes", action="store_true", help="also time the probe suite on the built pair")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache folder (printed)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench_lab_")
    os.environ["TIEDLIB_CACHE"] = root
    from tiedlib.lab import LabConfig, build

    cfg = LabConfig.from_name(args.config)
    t0 = time.perf_counter()
    path = build(cfg, device=args.device, progress=False)
    seconds = time.perf_counter() - t0
    if args.probes:
        from tiedlib.lab import probe_table

        n, n_prompts = (40, 20) if args.config == "smoke" else (120, 60)
        t1 = time.perf_counter()
        table = probe_table(cfg, n=n, n_refusal_prompts=n_prompts, device=args.device)
        print(table.drop(columns="position").to_string())
        print(f"lab_{args.config}_probes_seconds: {time.perf_counter() - t1:.1f}")
    if args.keep:
        print(f"kept: {path}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(f"lab_{args.config}_build_seconds: {seconds:.1f} (target <= {600 if args.config == 'tiny' else 60})")


if __name__ == "__main__":
    main()
