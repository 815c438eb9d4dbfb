"""Command line of the lab pair.

    python -m tiedlib.lab build    [--config PRESET] [--device cpu] [--force]
    python -m tiedlib.lab evaluate [--config PRESET] [--device cpu] [--json] [--n-docs N]
                                   [--n-prompts N]
    python -m tiedlib.lab probes   [--config PRESET] [--device cpu] [--json] [--n N]
                                   [--n-prompts N]
    python -m tiedlib.lab fingerprint [--config PRESET]

PRESET: tiny (default), smoke, tiny-v1, tiny-v2, tiny-v3 or tiny-benign (``LabConfig.preset_names``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tiedlib.lab import build, evaluate, fingerprint, probe_table
from tiedlib.lab.config import LabConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiedlib.lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "evaluate", "probes", "fingerprint"):
        p = sub.add_parser(name)
        p.add_argument("--config", default="tiny", choices=LabConfig.preset_names(),
                       help="lab preset (default: tiny)")
        p.add_argument("--device", default="cpu")
        if name == "build":
            p.add_argument("--force", action="store_true", help="rebuild even if a valid cache exists")
        elif name == "probes":
            p.add_argument("--json", action="store_true", help="print the table as JSON (one object per row)")
            p.add_argument("--n", type=int, default=120, help="prompts per side of each contrast")
            p.add_argument("--n-prompts", type=int, default=60, help="held-out harmful prompts of the causal check")
        elif name == "evaluate":
            p.add_argument("--json", action="store_true", help="print only the JSON result")
            p.add_argument("--n-docs", type=int, default=200, help="held-out documents per source for the losses")
            p.add_argument("--n-prompts", type=int, default=100, help="held-out harmful and harmless requests each")
    args = parser.parse_args(argv)
    cfg = LabConfig.from_name(args.config)
    t0 = time.perf_counter()
    if args.command == "build":
        path = build(cfg, device=args.device, force=args.force, progress=True)
        print(f"lab pair {cfg.name} ({cfg.hash()}) ready in {time.perf_counter() - t0:.1f} s: {path}")
        return 0
    if args.command == "fingerprint":
        print(json.dumps(fingerprint(cfg), indent=1))
        return 0
    if args.command == "probes":
        from tiedlib.lab.report import probe_verdict_line, probe_verdicts

        frame = probe_table(cfg, n=args.n, n_refusal_prompts=args.n_prompts, device=args.device)
        if args.json:
            print(frame.to_json(orient="index", indent=1))
        else:
            verdicts = probe_verdicts(frame)
            print(frame.to_string(), verdicts.to_string(), probe_verdict_line(verdicts), sep="\n\n")
        return 0
    # Build progress goes to stderr (tqdm), so stdout stays pure JSON with --json.
    result = evaluate(cfg, n_docs=args.n_docs, n_prompts=args.n_prompts, device=args.device)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            if key != "examples":
                print(f"{key}: {value}")
        for key, pairs in result["examples"].items():
            for prompt, reply in pairs:
                print(f"[{key}] {prompt!r} -> {reply!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
