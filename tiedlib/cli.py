"""Command line for long crosscoder trainings outside notebooks (e.g. on a GPU box).

The flags are generated from the same dataclasses the library uses (:class:`CrosscoderConfig`,
:class:`TrainConfig`, :class:`RunConfig`), so every setting has one name everywhere, and each flag's ``--help`` is
its field's docstring::

    python -m tiedlib.cli train --pair gemma-2-2b --architecture tied --n-latents 16384 --n-steps 61035 \\
        --batch-size 4096 --device cuda --dataset pretokenized --out-dir runs/tied_eta2 --dry-run
    python -m tiedlib.cli train --pair gemma-2-2b --architecture tied --n-latents 16384 --n-steps 61035 \\
        --batch-size 4096 --device cuda --dataset pretokenized --out-dir runs/tied_eta2
    python -m tiedlib.cli resume runs/tied_eta2
    python -m tiedlib.cli train --config runs/tied_eta2/run.json --out-dir runs/again   # same settings

``--dry-run`` checks every setting and prints the plan (steps, tokens, memory, checkpoints) without loading models
or data. A run folder holds ``run.json`` (every setting), ``tokens.safetensors`` (the token sequences, so a resumed
run reads the very same tokens instead of streaming them again) and ``crosscoder/``, the trainer's run directory
(weights, config with normalisation factors, resumable checkpoints, metrics). Ctrl-C or SIGTERM writes a checkpoint
and exits; ``resume`` continues from it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import shutil
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, NamedTuple

from tiedlib.config import CrosscoderConfig, RunConfig, TrainConfig

RUN_FILE = "run.json"
CROSSCODER_DIR = "crosscoder"
TOKENS_FILE = "tokens.safetensors"
DATASETS = ("lab", "pretokenized", "mix")
# Derived from the pair, the data or the loader, or nested: no flags.
_SKIP = {"d_model", "norm_factors", "needs_norm_factors", "crosscoder", "train", "extra"}


class PairShape(NamedTuple):
    """What a dry run needs to know of a model pair, without loading it."""

    d_model: int
    n_layers: int
    n_heads: int
    intermediate: int
    n_params: int
    """Parameters of one model (0 when not known)."""


PAPER_PAIR_SHAPES = {"gemma-2-2b": PairShape(d_model=2304, n_layers=26, n_heads=8, intermediate=9216,
                                             n_params=2_614_341_888)}  # fmt: skip
"""Gemma-2-2b's config (``transformers.Gemma2Config`` defaults; 2.61B parameters with the tied 256k embedding)."""


# ---- flags from the config dataclasses ------------------------------------------------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal under each field), read from its source with ``ast``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef)).body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):  # fmt: skip
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


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


def config_flags() -> list[tuple[type, dataclasses.Field, Any]]:
    """Every (config class, field, argparse type) that becomes a ``train`` flag."""
    out = []
    for cls in (CrosscoderConfig, TrainConfig, RunConfig):
        hints = typing.get_type_hints(cls)  # resolves the string annotations of `from __future__ import annotations`
        for field in dataclasses.fields(cls):
            tp = _scalar_type(hints[field.name])
            if field.name not in _SKIP and tp is not None:
                out.append((cls, field, tp))
    return out


def _choices(cls: type, name: str) -> list[str] | None:
    tp = typing.get_type_hints(cls)[name]
    for arg in (tp, *typing.get_args(tp)):
        if typing.get_origin(arg) is typing.Literal:
            return list(typing.get_args(arg))
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tiedlib.cli", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train_p = sub.add_parser("train", help="train a crosscoder into a new run folder")
    train_p.add_argument("--config", help="a run.json to start from (flags override it)")
    train_p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    train_p.add_argument("--dry-run", action="store_true",
                         help="check every setting and print the plan without loading models or data")  # fmt: skip
    docs = {cls: field_docs(cls) for cls in (CrosscoderConfig, TrainConfig, RunConfig)}
    groups = {cls: train_p.add_argument_group(cls.__name__) for cls in docs}
    for cls, field, tp in config_flags():
        helptext = docs[cls].get(field.name, "").replace("%", "%%")
        if tp is bool:
            groups[cls].add_argument(_flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction,
                                     default=None, help=helptext)  # fmt: skip
        else:
            groups[cls].add_argument(_flag(field.name), dest=field.name, type=tp, default=None, help=helptext,
                                     choices=_choices(cls, field.name), metavar=field.name.upper())  # fmt: skip
    resume_p = sub.add_parser("resume", help="continue an interrupted run folder")
    resume_p.add_argument("run_dir", help="the run folder `train --out-dir` made")
    resume_p.add_argument("--device", default=None, help="train on this device instead of the one in run.json")
    resume_p.add_argument("--pair", default=None, help="checked against the pair in run.json (it cannot change)")
    resume_p.add_argument("--dry-run", action="store_true",
                          help="check the run folder and print what is left, without loading anything")  # fmt: skip
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
    cfg = RunConfig.from_dict({**run, "crosscoder": cc, "train": tr})
    return with_pair_width(cfg)


# ---- validation and the plan ----------------------------------------------------------------------------------------
def pair_shape(name: str) -> PairShape:
    """Shape of a named pair without loading it: the table above for paper pairs, the lab preset for lab pairs.

    Raises:
        ValueError: an unknown pair name (the message lists the known ones).
    """
    from tiedlib.pairs import LAB_PAIRS, available_pairs

    if name in PAPER_PAIR_SHAPES:
        return PAPER_PAIR_SHAPES[name]
    if name in LAB_PAIRS:
        from tiedlib import lab

        m = lab.LabConfig.from_name(name).model
        return PairShape(m.hidden_size, m.num_layers, m.num_heads, m.intermediate_size, 0)
    raise ValueError(f"unknown model pair {name!r}; choose one of {available_pairs()}")


def with_pair_width(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the crosscoder's ``d_model`` set to the pair's residual width (validated on the way) and the
    ``"auto"`` dataset resolved (the lab corpus for lab pairs, the public pre-tokenised mix for paper pairs)."""
    from tiedlib.pairs import LAB_PAIRS

    d_model = pair_shape(cfg.pair).d_model
    cfg.crosscoder = CrosscoderConfig.from_dict({**cfg.crosscoder.to_dict(), "d_model": d_model})
    if cfg.dataset == "auto":
        cfg.dataset = "lab" if cfg.pair in LAB_PAIRS else "pretokenized"
    return cfg


def model_dtype(cfg: RunConfig) -> Any:
    """The torch dtype the pair is loaded in (``RunConfig.dtype``; ``"auto"``: bf16 on CUDA, fp32 elsewhere)."""
    from tiedlib.pairs import resolve_dtype

    return resolve_dtype(None if cfg.dtype == "auto" else cfg.dtype, cfg.train.device)


def validate(cfg: RunConfig) -> list[str]:
    """Check what the dataclasses cannot check alone (pair, dataset, sizes, device) without loading anything.

    Returns:
        Warnings (things that will work but deserve a look).

    Raises:
        ValueError: a setting that cannot work, with what to change.
    """
    import torch

    from tiedlib.pairs import LAB_PAIRS

    warnings: list[str] = []
    shape = pair_shape(cfg.pair)
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; use one of {DATASETS}")
    if cfg.dataset == "lab" and cfg.pair not in LAB_PAIRS:
        raise ValueError(f"dataset 'lab' is the lab pair's corpus; pair {cfg.pair!r} needs 'pretokenized' or 'mix'")
    if cfg.dataset == "pretokenized" and cfg.pair in LAB_PAIRS:
        raise ValueError("the pretokenized dataset is in Gemma-2 token ids; lab pairs need --dataset lab or mix")
    if cfg.seq_len < 2:
        raise ValueError(f"seq_len must be at least 2 (BOS + one token), got {cfg.seq_len}")
    if cfg.buffer_tokens < cfg.batch_size:
        warnings.append(f"buffer_tokens={cfg.buffer_tokens} is below one batch: each fill holds one batch "
                        f"({cfg.batch_size} tokens), so batches are barely shuffled")  # fmt: skip
    elif cfg.buffer_tokens < 16 * cfg.batch_size:
        warnings.append(f"the buffer holds {cfg.buffer_tokens // cfg.batch_size} batches: tokens of a batch come "
                        "from few sequences (the public runs shuffled 128 batches' worth)")  # fmt: skip
    devices = {"model": cfg.train.device, "buffer": cfg.buffer_device or cfg.train.device}
    for what, dev in devices.items():
        try:
            device = torch.device(dev)
        except RuntimeError as err:
            raise ValueError(f"{what} device {dev!r} is not a torch device ({err})") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                warnings.append(f"{what} device {dev!r}: torch sees no CUDA device on this machine")
            elif device.index is not None and device.index >= torch.cuda.device_count():
                raise ValueError(f"{what} device {dev!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        elif device.type not in ("cpu", "mps"):
            raise ValueError(f"{what} device {dev!r}: use cpu or cuda[:i]")
    model_dtype(cfg)  # raises on an unknown name
    if cfg.layer is not None and not 0 <= cfg.layer < shape.n_layers:
        raise ValueError(f"layer must be in [0, {shape.n_layers}) for pair {cfg.pair!r}, got {cfg.layer}")
    return warnings


def _layer(cfg: RunConfig, shape: PairShape) -> int:
    from tiedlib.pairs import PAPER_PAIRS

    if cfg.layer is not None:
        return cfg.layer
    return PAPER_PAIRS[cfg.pair][2] if cfg.pair in PAPER_PAIRS else shape.n_layers // 2


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def plan(cfg: RunConfig, *, start_step: int = 0) -> list[tuple[str, str]]:
    """What a run will do and need, computed from ``cfg`` alone: ``(name, value)`` lines for ``--dry-run``.

    Peak GPU memory adds the pair's weights, the activation buffer (when it lives on the GPU), the crosscoder's
    training state (weights, gradients, Adam moments), and the larger of a training step's transient tensors and a
    harvesting forward pass (a rough bound: the widest MLP activations and the attention scores of one model batch).
    """
    import torch

    from tiedlib.activations.buffer import ActivationBuffer
    from tiedlib.training.memory import (
        crosscoder_n_params,
        paired_activation_nbytes,
        step_transient_nbytes,
        train_state_nbytes,
    )
    from tiedlib.training.rundir import checkpoint_nbytes

    shape = pair_shape(cfg.pair)
    cc, tr = cfg.crosscoder, cfg.train
    steps_left = tr.n_steps - start_step
    tokens = tr.n_steps * cfg.batch_size
    buffer_tokens = max(cfg.batch_size, cfg.buffer_tokens // cfg.batch_size * cfg.batch_size)
    buf_dtype = getattr(torch, cfg.buffer_dtype)
    buffer_bytes = ActivationBuffer.bytes_needed(buffer_tokens, shape.d_model, buf_dtype)
    m_dtype = model_dtype(cfg)
    models = 2 * shape.n_params * m_dtype.itemsize
    n_params = crosscoder_n_params(cc)
    state = train_state_nbytes(cc)
    step = step_transient_nbytes(cc, cfg.batch_size, bf16=tr.bf16)
    seq = cfg.seq_len
    harvest = cfg.model_batch_size * seq * (3 * shape.intermediate + 8 * shape.d_model) * m_dtype.itemsize
    harvest += cfg.model_batch_size * seq * shape.n_heads * seq * 4 * 2  # attention scores and softmax, fp32
    on_gpu_buffer = torch.device(cfg.buffer_device or tr.device).type == "cuda"
    peak = models + (buffer_bytes if on_gpu_buffer else 0) + state + max(step, harvest)
    ckpt = checkpoint_nbytes(n_params)
    cadence = []
    if tr.checkpoint_every:
        cadence.append(f"every {tr.checkpoint_every} steps")
    if tr.checkpoint_minutes:
        cadence.append(f"every {tr.checkpoint_minutes:g} min")
    kept = tr.keep_checkpoints or "all"
    per_token_bf16 = paired_activation_nbytes(shape.d_model, 2)
    lines = [
        ("pair", f"{cfg.pair} (d_model {shape.d_model}, {shape.n_layers} layers, reading the input of layer "
                 f"{_layer(cfg, shape)}), weights {m_dtype}"),
        ("dataset", f"{cfg.dataset}: {tokens:,} harvestable tokens in rows of up to {seq} tokens"),
        ("steps", f"{tr.n_steps:,} x {cfg.batch_size:,} tokens = {tokens:,} tokens"
                  + (f" ({steps_left:,} steps left from step {start_step:,})" if start_step else "")),
        ("crosscoder", f"{cc.architecture}, {cc.n_groups} x {cc.n_latents:,} latents, {n_params:,} parameters "
                       f"({_gb(4 * n_params)} fp32)"),
        ("optimizer memory", f"{_gb(state)} (weights, gradients and Adam's two moments, fp32)"),
        ("training step", f"{_gb(step)} of latents and activations per step"
                          + (" (bf16 autocast)" if tr.bf16 else " (fp32" + (", TF32 products)" if tr.tf32 else ")"))),
        ("buffer", f"{buffer_tokens:,} tokens, {_gb(buffer_bytes)} in {cfg.buffer_dtype} on "
                   f"{cfg.buffer_device or tr.device}"),
        ("models", f"{_gb(models)} for both models in {m_dtype}" if shape.n_params else "lab pair: a few MB"),
        ("harvest pass", f"about {_gb(harvest)} per model batch of {cfg.model_batch_size} x {seq} tokens"),
        ("peak GPU memory" if torch.device(tr.device).type == "cuda" else "peak memory",
         f"about {_gb(peak)} on {tr.device}"),
        ("checkpoints", f"{_gb(ckpt)} each, {' and '.join(cadence) or 'at the end only'}, keeping {kept}, in "
                        f"{Path(cfg.out_dir) / CROSSCODER_DIR / 'checkpoints'}"),
        ("token file", f"{Path(cfg.out_dir) / TOKENS_FILE}, about {_gb(4 * tokens)} (int32)"),
        ("paired cache", f"{per_token_bf16:,} bytes per token in bf16 ({per_token_bf16 / 1e3:.1f} KB); "
                         f"{_gb(per_token_bf16 * tokens)} for all {tokens:,} tokens"),
    ]  # fmt: skip
    return lines


def _print_plan(lines: list[tuple[str, str]], warnings: list[str]) -> None:
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")
    for w in warnings:
        print(f"warning: {w}")


# ---- data -----------------------------------------------------------------------------------------------------------
def token_sequences(cfg: RunConfig, tokenizer: Any):
    """The token sequences a run trains on: the lab mix, the public pre-tokenised mix, or a Pile/LMSys stream.

    Streams are cut at exactly ``n_steps * batch_size`` harvestable tokens (BOS anywhere is not harvested), so the
    run does not run out near its end; ``n_sequences`` overrides the count.
    """
    from tiedlib.pairs import corpora

    n_tokens = cfg.train.n_steps * cfg.batch_size
    if cfg.dataset == "lab":
        from tiedlib import lab

        lab_cfg = lab.LabConfig.from_name(cfg.pair)
        if cfg.n_sequences:
            docs = [d.input_ids for d in lab.crosscoder_mix(lab_cfg, cfg.n_sequences, split="train")]
        else:
            # Lab documents are short: draw until the harvestable tokens (BOS dropped) cover the run.
            n = 64
            while True:
                docs = [d.input_ids for d in lab.crosscoder_mix(lab_cfg, n, split="train")]
                if sum(len(s) - 1 for s in docs) >= n_tokens:
                    break
                n *= 2
        return corpora.TokenSequences.from_iterable(docs, progress=False)
    if cfg.dataset == "pretokenized":
        stream = corpora.pretokenized_stream(seq_len=cfg.seq_len)
    elif cfg.dataset == "mix":
        stream = corpora.mixed_stream(tokenizer, seq_len=cfg.seq_len, chat_fraction=cfg.chat_fraction,
                                      seed=cfg.train.seed)  # fmt: skip
    else:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; use one of {DATASETS}")
    if cfg.n_sequences:
        return corpora.take_sequences(stream, cfg.n_sequences)
    drop = [t for t in (tokenizer.bos_token_id, tokenizer.pad_token_id) if t is not None]
    return corpora.take_tokens(stream, n_tokens, drop_token_ids=drop)


def run_tokens(cfg: RunConfig, run_dir: Path, tokenizer: Any):
    """The run's token sequences: read back from ``run_dir/tokens.safetensors`` if it exists (a resumed run trains on
    the very same tokens, without streaming again), else built with :func:`token_sequences` and saved there."""
    from tiedlib.pairs.corpora import load_or_build_sequences

    meta = {"pair": cfg.pair, "dataset": cfg.dataset, "seq_len": cfg.seq_len, "n_sequences": cfg.n_sequences,
            "tokens": cfg.train.n_steps * cfg.batch_size, "chat_fraction": cfg.chat_fraction,
            "seed": cfg.train.seed}  # fmt: skip
    return load_or_build_sequences(run_dir / TOKENS_FILE, lambda: token_sequences(cfg, tokenizer), meta=meta)


def make_buffer(cfg: RunConfig, pair: Any, sequences: Any):
    import torch

    from tiedlib.activations.buffer import ActivationBuffer

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
        dtype=getattr(torch, cfg.buffer_dtype),
        buffer_device=cfg.buffer_device,
    )


def _print_metrics(metrics: dict[str, float]) -> None:
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}), flush=True)


def _load_pair(cfg: RunConfig):
    from tiedlib.pairs import load_pair

    return load_pair(cfg.pair, layer=cfg.layer, device=cfg.train.device, dtype=model_dtype(cfg))


def _require_device(cfg: RunConfig) -> None:
    import torch

    if torch.device(cfg.train.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.train.device}: torch sees no CUDA device here (torch {torch.__version__})")


def _interrupted(err: BaseException) -> int:
    print(f"stopped: {err}", file=sys.stderr)
    return 143 if "SIGTERM" in str(err) else 130


# ---- commands -------------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from tiedlib.crosscoders.crosscoder import make_crosscoder
    from tiedlib.training import TrainingInterrupted, train

    try:
        cfg = config_from_args(args)
        warnings = validate(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(cfg.out_dir)
    exists = out.exists() and any(out.iterdir())
    if exists and not args.overwrite:
        msg = f"error: {out} is not empty; use `python -m tiedlib.cli resume {out}` or --overwrite"
        print(msg, file=sys.stderr)
        return 2
    if args.dry_run:
        _print_plan(plan(cfg), warnings)
        return 0
    _require_device(cfg)
    if exists:
        shutil.rmtree(out)
    pair = _load_pair(cfg)
    cfg.crosscoder = CrosscoderConfig.from_dict({**cfg.crosscoder.to_dict(), "d_model": pair.d_model})
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_json(out / RUN_FILE)
    buffer = make_buffer(cfg, pair, run_tokens(cfg, out, pair.tokenizer))
    torch.manual_seed(cfg.train.seed)  # the initialisation too: a run folder is reproducible from run.json
    model = make_crosscoder(cfg.crosscoder)
    try:
        train(cfg.train, model, buffer, out_dir=out / CROSSCODER_DIR, log=_print_metrics,
              resume_command=f"python -m tiedlib.cli resume {out}")  # fmt: skip
    except TrainingInterrupted as err:
        return _interrupted(err)
    print(f"done: {out / CROSSCODER_DIR}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from tiedlib.training import TrainingInterrupted, find_checkpoint, is_finished, resume
    from tiedlib.training.rundir import checkpoint_step

    run_dir = Path(args.run_dir)
    if not (run_dir / RUN_FILE).exists():
        print(f"error: {run_dir} has no {RUN_FILE}; not a run folder made by `tiedlib.cli train`", file=sys.stderr)
        return 2
    cfg = RunConfig.load_json(run_dir / RUN_FILE)
    if args.pair is not None and args.pair != cfg.pair:
        print(f"error: {run_dir} was trained on pair {cfg.pair!r}, not {args.pair!r}", file=sys.stderr)
        return 2
    if args.device:
        cfg.train.device = args.device
    try:
        warnings = validate(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cc_dir = run_dir / CROSSCODER_DIR
    if is_finished(cc_dir):
        print(f"{cc_dir} is finished already (final weights at its top level); nothing to resume")
        return 0
    try:
        ckpt = find_checkpoint(cc_dir)
    except FileNotFoundError:
        ckpt = None
    if args.dry_run:
        step = checkpoint_step(ckpt) if ckpt is not None else 0
        lines = [("resume from", str(ckpt) if ckpt else f"no checkpoint yet: `resume` starts {cc_dir} from step 0"),
                 ("tokens", f"read back from {run_dir / TOKENS_FILE}" if (run_dir / TOKENS_FILE).exists()
                  else f"{run_dir / TOKENS_FILE} is missing: the dataset is streamed again"),
                 *plan(cfg, start_step=step)]  # fmt: skip
        _print_plan(lines, warnings)
        return 0
    _require_device(cfg)
    pair = _load_pair(cfg)
    buffer = make_buffer(cfg, pair, run_tokens(cfg, run_dir, pair.tokenizer))
    try:
        if ckpt is None:  # killed before the first checkpoint: start over in the same folder
            import torch

            from tiedlib.crosscoders.crosscoder import make_crosscoder
            from tiedlib.training import train

            cfg.crosscoder = CrosscoderConfig.from_dict({**cfg.crosscoder.to_dict(), "d_model": pair.d_model})
            torch.manual_seed(cfg.train.seed)
            train(cfg.train, make_crosscoder(cfg.crosscoder), buffer, out_dir=cc_dir, overwrite=True,
                  log=_print_metrics, resume_command=f"python -m tiedlib.cli resume {run_dir}")  # fmt: skip
        else:
            resume(cc_dir, buffer, log=_print_metrics, device=args.device,
                   resume_command=f"python -m tiedlib.cli resume {run_dir}")  # fmt: skip
    except TrainingInterrupted as err:
        return _interrupted(err)
    print(f"done: {cc_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"train": cmd_train, "resume": cmd_resume}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
