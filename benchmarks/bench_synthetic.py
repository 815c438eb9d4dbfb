"""Time the default synthetic tying benchmark (issue 8) and the robustness grid (issue 15); print their results.

Usage: ``python benchmarks/bench_synthetic.py [--size small|book] [--grid full|book|smoke|none] [--threads 1]
[--json out.json] [--grid-json rows.jsonl]``.
Prints ``synthetic_benchmark_seconds: <value> (target <= 120)`` for the whole sweep, then the table of
:func:`tiedlib.experiments.exp5.tying.run_tying_benchmark` (held-out metrics of every variant at every eta); then
``synthetic_grid_<scale>_seconds`` for :func:`tiedlib.synthetic.grid.run_grid` (the full grid: 12 settings x 12
configs x 3 seeds, about 10 minutes of one core), its tied-fraction and EV-gap tables and its recommendation.
"""

from __future__ import annotations

import argparse
import json
import time

from tiedlib.experiments.exp5.tying import format_table, run_tying_benchmark
from tiedlib.synthetic.grid import STRICT_METRIC, TIED_METRIC, recommend, run_grid, summarize

TARGET_SECONDS = 120


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["small", "book"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the default run uses 1)")
    parser.add_argument("--json", default=None, help="also write the rows (without per-feature detail) here")
    parser.add_argument("--grid", default="full", choices=["full", "book", "smoke", "none"],
                        help="robustness grid scale to run after the sweep (none: skip it)")  # fmt: skip
    parser.add_argument("--grid-json", default=None, help="also write the grid's rows here (one JSON object a line)")
    args = parser.parse_args()
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = run_tying_benchmark(args.size, n_threads=args.threads)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    label = "synthetic_benchmark_seconds" if args.size == "small" else f"synthetic_benchmark_{args.size}_seconds"
    print(f"{label}: {seconds:.1f} (target <= {TARGET_SECONDS})")
    # CPU time of this process: the wall time above grows when other jobs share the cores.
    print(f"synthetic_benchmark_cpu_seconds: {cpu_seconds:.1f}")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{k: v for k, v in r.items() if k != "per_feature"} for r in rows], fh, indent=1)
    if args.grid != "none":
        bench_grid(args.grid, args.threads, args.grid_json)


def bench_grid(scale: str, threads: int, out: str | None) -> None:
    """Run one grid scale; print its cost, the config x setting tables and the recommendation."""
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = run_grid(scale, n_threads=threads)
    print(f"synthetic_grid_{scale}_seconds: {time.perf_counter() - start:.1f} ({len(rows)} crosscoders)")
    print(f"synthetic_grid_{scale}_cpu_seconds: {time.process_time() - cpu_start:.1f}")
    table = summarize(rows)
    for metric, digits in ((TIED_METRIC, 2), (STRICT_METRIC, 2), ("ev_gap", 3)):
        print(f"\n{metric} (mean over seeds):")
        print(table.pivot_table(index="config", columns="setting", values=metric, sort=False).round(digits).to_string())
    print()
    print("\n".join(recommend(rows).lines()))
    if out:
        with open(out, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
