"""Time the full build of the tiny lab pair (corpus, tokenizer, base pretraining, chat fine-tune, save).

    python benchmarks/bench_lab.py [--config tiny|smoke] [--device cpu]

Builds into a fresh temporary cache (``TIEDLIB_CACHE`` is overridden for this process), so an existing cache is
neither used nor touched, and prints one line: ``lab_tiny_build_seconds: <value> (target <= 600)``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", choices=["tiny", "smoke"])
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
    if args.keep:
        print(f"kept: {path}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(f"lab_{args.config}_build_seconds: {seconds:.1f} (target <= {600 if args.config == 'tiny' else 60})")


if __name__ == "__main__":
    main()
