"""Command line for long crosscoder trainings outside notebooks (e.g. on a GPU box).

The flags are generated from the same dataclasses the library uses (:class:`CrosscoderConfig`,
:class:`TrainConfig`, :class:`RunConfig`), so every setting has one name everywhere::

    python -m tiedlib.cli train --pair gemma-2-2b --architecture tied --n-latents 16384 --n-steps 61035 \\
        --batch-size 4096 --device cuda --dataset pretokenized --out-dir runs/tied_eta2
    python -m tiedlib.cli resume runs/tied_eta2
    python -m tiedlib.cli train --config runs/tied_eta2/run.json --out-dir runs/again   # same settings

A run folder holds ``run.json`` (every setting, to rebuild the data stream on resume) and ``crosscoder/``, the
trainer's run directory (weights, config with normalisation factors, resumable checkpoints, metrics).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import types
import typing
from pathlib import Path
from typing import Any

from tiedlib.config import CrosscoderConfig, RunConfig, TrainConfig

RUN_FILE = "run.json"
CROSSCODER_DIR = "crosscoder"
_SKIP = {"d_model", "norm_factors", "crosscoder", "train", "extra"}  # derived from the pair / the data, or nested


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(tp: Any) -> Any:
    """The argparse type of a dataclass field annotation (``int``, ``float``, ``str``, ``bool``, or None to skip)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _scalar_type(args[0]) if len(args) == 1 else None
    if origin is typing.Literal:
        return str
    return tp if tp in (int, float, str, bool) else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tiedlib.cli", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train_p = sub.add_parser("train", help="train a crosscoder into a new run folder")
    train_p.add_argument("--config", help="a run.json to start from (flags override it)")
    train_p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    for cls in (CrosscoderConfig, TrainConfig, RunConfig):
        group = train_p.add_argument_group(cls.__name__)
        hints = typing.get_type_hints(cls)  # resolves the string annotations of `from __future__ import annotations`
        for field in dataclasses.fields(cls):
            tp = _scalar_type(hints[field.name])
            if field.name in _SKIP or tp is None:
                continue
            if tp is bool:
                action = argparse.BooleanOptionalAction
                group.add_argument(_flag(field.name), dest=field.name, action=action, default=None)
            else:
                group.add_argument(_flag(field.name), dest=field.name, type=tp, default=None)
    resume_p = sub.add_parser("resume", help="continue an interrupted run folder")
    resume_p.add_argument("run_dir")
    resume_p.add_argument("--device", default=None)
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Merge ``--config`` (if any) with the flags that were given into a validated :class:`RunConfig`."""
    base: dict[str, Any] = json.loads(Path(args.config).read_text()) if args.config else {}
    cc = dict(base.get("crosscoder", {"d_model": 1, "n_latents": 16384}))
    tr = dict(base.get("train", {"n_steps": 1000}))
    run = {k: v for k, v in base.items() if k not in ("crosscoder", "train")}
    given = {k: v for k, v in vars(args).items() if v is not None}
    for target, cls in ((cc, CrosscoderConfig), (tr, TrainConfig), (run, RunConfig)):
        for field in dataclasses.fields(cls):
            if field.name in given and field.name not in _SKIP:
                target[field.name] = given[field.name]
    return RunConfig.from_dict({**run, "crosscoder": cc, "train": tr})


def token_sequences(cfg: RunConfig, tokenizer: Any):
    """The token sequences a run trains on: the lab mix, the public pre-tokenised mix, or a Pile/LMSys stream."""
    from tiedlib.pairs import corpora as data

    n_tokens = cfg.train.n_steps * cfg.batch_size
    n_seq = cfg.n_sequences or max(1, -(-n_tokens // max(cfg.seq_len - 1, 1)))
    if cfg.dataset == "lab":
        from tiedlib import lab

        lab_cfg = lab.LabConfig.from_name(cfg.pair)
        if cfg.n_sequences:
            return [d.input_ids for d in lab.crosscoder_mix(lab_cfg, cfg.n_sequences, split="train")]
        # Lab documents are short: draw until the harvestable tokens (BOS dropped) cover the run, with 10% slack.
        n = 64
        while True:
            seqs = [d.input_ids for d in lab.crosscoder_mix(lab_cfg, n, split="train")]
            if sum(len(s) - 1 for s in seqs) >= 1.1 * n_tokens:
                return seqs
            n *= 2
    if cfg.dataset == "pretokenized":
        stream = data.pretokenized_stream(seq_len=cfg.seq_len)
    elif cfg.dataset == "mix":
        stream = data.mixed_stream(
            tokenizer, seq_len=cfg.seq_len, chat_fraction=cfg.chat_fraction, seed=cfg.train.seed
        )
    else:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; use 'lab', 'pretokenized' or 'mix'")
    return data.take_sequences(stream, n_seq)


def make_buffer(cfg: RunConfig, pair: Any):
    from tiedlib.activations.buffer import ActivationBuffer

    sequences = token_sequences(cfg, pair.tokenizer)
    return ActivationBuffer(
        pair.base,
        pair.chat,
        sequences,
        pair.layer,
        batch_size=cfg.batch_size,
        buffer_tokens=cfg.buffer_tokens,
        model_batch_size=cfg.model_batch_size,
        on_exhausted=cfg.on_exhausted,
        seed=cfg.train.seed,
        device=cfg.train.device,
        progress=True,
    )


def _print_metrics(metrics: dict[str, float]) -> None:
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}), flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from tiedlib.crosscoders.crosscoder import make_crosscoder
    from tiedlib.pairs import load_pair
    from tiedlib.training import train

    cfg = config_from_args(args)
    out = Path(cfg.out_dir)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            msg = f"error: {out} is not empty; use `python -m tiedlib.cli resume {out}` or --overwrite"
            print(msg, file=sys.stderr)
            return 2
        shutil.rmtree(out)
    pair = load_pair(cfg.pair, device=cfg.train.device)
    cfg.crosscoder = CrosscoderConfig.from_dict({**cfg.crosscoder.to_dict(), "d_model": pair.d_model})
    buffer = make_buffer(cfg, pair)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_json(out / RUN_FILE)
    model = make_crosscoder(cfg.crosscoder)
    train(cfg.train, model, buffer, out_dir=out / CROSSCODER_DIR, log=_print_metrics)
    print(f"done: {out / CROSSCODER_DIR}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from tiedlib.pairs import load_pair
    from tiedlib.training import resume

    run_dir = Path(args.run_dir)
    if not (run_dir / RUN_FILE).exists():
        print(f"error: {run_dir} has no {RUN_FILE}; not a run folder made by `tiedlib.cli train`", file=sys.stderr)
        return 2
    cfg = RunConfig.load_json(run_dir / RUN_FILE)
    if args.device:
        cfg.train.device = args.device
    pair = load_pair(cfg.pair, device=cfg.train.device)
    resume(run_dir / CROSSCODER_DIR, make_buffer(cfg, pair), log=_print_metrics, device=args.device)
    print(f"done: {run_dir / CROSSCODER_DIR}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"train": cmd_train, "resume": cmd_resume}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
