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

Harvest once into an activation cache, then train any number of crosscoders from it, on one GPU or data-parallel
on several (``torchrun``; each process takes an equal slice of every global batch, rank 0 writes the run folder)::

    python -m tiedlib.cli cache caches/gemma_l14 --pair gemma-2-2b --n-steps 61035 --batch-size 4096 --device cuda \
        --dataset pretokenized --dry-run
    torchrun --nproc-per-node 8 -m tiedlib.cli cache caches/gemma_l14 --pair gemma-2-2b --n-steps 61035 \
        --batch-size 4096 --device cuda --dataset pretokenized     # each process harvests its share of the shards
    torchrun --nproc-per-node 8 -m tiedlib.cli train --cache caches/gemma_l14 --pair gemma-2-2b \
        --architecture tied --n-latents 16384 --n-steps 61035 --batch-size 4096 --device cuda --out-dir runs/tied_ddp

``--dry-run`` checks every setting and prints the plan (steps, tokens, memory, checkpoints) without loading models
or data (``cache --dry-run``: the bytes per token and the cache's size). A run folder holds ``run.json`` (every
setting), ``source.json`` (the fingerprint of the pair the activations come from: ``resume`` refuses to continue the
run on another pair of the same name, e.g. ``tiny`` with another ``TIEDLIB_LAB_SEED``), ``tokens.safetensors`` (the
token sequences, so a resumed run reads the very same tokens instead of streaming them again; a run from a cache needs
none) and ``crosscoder/``, the trainer's run directory (weights,
config with normalisation factors, resumable checkpoints, metrics). Ctrl-C or SIGTERM writes a checkpoint and exits;
``resume`` continues from it (on any number of processes for a run from a cache).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
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
COMMANDS = ("train", "resume", "cache", "finalize")
CROSSCODER_DIR = "crosscoder"
TOKENS_FILE = "tokens.safetensors"
DATASETS = ("lab", "pretokenized", "mix")
# Derived from the pair, the data or the loader, or nested: no flags.
_SKIP = {"d_model", "norm_factors", "needs_norm_factors", "crosscoder", "train", "extra"}
# Settings of writing a cache (`cache` only), and every setting `cache` takes (the cache holds the tokens of a
# run of n_steps x batch_size, drawn as `train` draws them).
_CACHE_WRITE = {"cache_dtype", "seqs_per_shard"}
_CACHE_FLAGS = {"pair", "layer", "dtype", "dataset", "seq_len", "n_sequences", "chat_fraction", "model_batch_size",
                "n_steps", "batch_size", "seed", "device", "progress", *_CACHE_WRITE}  # fmt: skip


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


def config_flags(command: str = "train") -> list[tuple[type, dataclasses.Field, Any]]:
    """Every (config class, field, argparse type) that becomes a flag of ``command`` (``train`` or ``cache``; the
    cache folder of ``cache`` is its positional argument)."""
    out = []
    for cls in (CrosscoderConfig, TrainConfig, RunConfig):
        hints = typing.get_type_hints(cls)  # resolves the string annotations of `from __future__ import annotations`
        for field in dataclasses.fields(cls):
            tp = _scalar_type(hints[field.name])
            if field.name in _SKIP or tp is None:
                continue
            wanted = field.name in _CACHE_FLAGS if command == "cache" else field.name not in _CACHE_WRITE
            if wanted:
                out.append((cls, field, tp))
    return out


def _choices(cls: type, name: str) -> list[str] | None:
    tp = typing.get_type_hints(cls)[name]
    for arg in (tp, *typing.get_args(tp)):
        if typing.get_origin(arg) is typing.Literal:
            return list(typing.get_args(arg))
    return None


def _add_config_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of :func:`config_flags`, each with its field's docstring as help."""
    docs = {cls: field_docs(cls) for cls in (CrosscoderConfig, TrainConfig, RunConfig)}
    groups: dict[type, Any] = {}
    for cls, field, tp in config_flags(command):
        group = groups.setdefault(cls, parser.add_argument_group(cls.__name__))
        helptext = docs[cls].get(field.name, "").replace("%", "%%")
        if tp is bool:
            group.add_argument(_flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction,
                               default=None, help=helptext)  # fmt: skip
        else:
            group.add_argument(_flag(field.name), dest=field.name, type=tp, default=None, help=helptext,
                               choices=_choices(cls, field.name), metavar=field.name.upper())  # fmt: skip


def _shard_range(text: str) -> tuple[int, int]:
    try:
        start, stop = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP (two integers), got {text!r}") from None
    if not 0 <= start <= stop:
        raise argparse.ArgumentTypeError(f"need 0 <= START <= STOP, got {text!r}")
    return start, stop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tiedlib.cli", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train_p = sub.add_parser("train", help="train a crosscoder into a new run folder (torchrun: data parallel)")
    train_p.add_argument("--config", help="a run.json to start from (flags override it)")
    train_p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    train_p.add_argument("--dry-run", action="store_true",
                         help="check every setting and print the plan without loading models or data")  # fmt: skip
    _add_config_flags(train_p, "train")
    cache_doc = field_docs(RunConfig)["cache"].replace("%", "%%")
    cache_p = sub.add_parser(
        "cache", help="harvest a pair's paired activations into a cache folder (resumable; one shard range a process)",
        description="Harvest the tokens a run of n_steps x batch_size would train on into an activation cache. "
        "Completed shards are kept, so running it again resumes. Several processes each write a share of the shards "
        "(--shard-range, --rank/--world-size, or torchrun's RANK/WORLD_SIZE); the process that writes the last shard "
        "finalises the cache (or run `finalize`).",
    )  # fmt: skip
    cache_p.add_argument("cache", metavar="CACHE_DIR", help=cache_doc)
    cache_p.add_argument("--shard-range", type=_shard_range, default=None, metavar="START:STOP",
                         help="write only shards START..STOP-1 (default: this rank's share of all shards)")
    cache_p.add_argument("--rank", type=int, default=None,
                         help="this process's index among --world-size writers (default: $RANK, set by torchrun, or 0)")
    cache_p.add_argument("--world-size", type=int, default=None,
                         help="number of processes sharing the shards (default: $WORLD_SIZE or 1)")
    cache_p.add_argument("--dry-run", action="store_true",
                         help="print the cache's size, shards and bytes per token without loading models or data")
    _add_config_flags(cache_p, "cache")
    fin_p = sub.add_parser("finalize", help="merge a cache's shard records into its manifest (after all writers)")
    fin_p.add_argument("cache", metavar="CACHE_DIR", help=cache_doc)
    resume_p = sub.add_parser("resume", help="continue an interrupted run folder")
    resume_p.add_argument("run_dir", help="the run folder `train --out-dir` made")
    resume_p.add_argument("--device", default=None, help="train on this device instead of the one in run.json")
    resume_p.add_argument("--pair", default=None, help="checked against the pair in run.json (it cannot change)")
    resume_p.add_argument("--dry-run", action="store_true",
                          help="check the run folder and print what is left, without loading anything")  # fmt: skip
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Merge ``--config`` (if any) with the flags that were given into a validated :class:`RunConfig`."""
    config = getattr(args, "config", None)
    base: dict[str, Any] = json.loads(Path(config).read_text()) if config else {}
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


def validate(cfg: RunConfig, *, command: str = "train") -> list[str]:
    """Check what the dataclasses cannot check alone (pair, dataset, sizes, device, the activation cache a run reads,
    a ``torchrun`` launch) without loading models or data. ``command="cache"``: the checks of writing a cache.

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
    if command == "cache" or cfg.cache is not None:
        pass  # no activation buffer
    elif cfg.buffer_tokens < cfg.batch_size:
        warnings.append(f"buffer_tokens={cfg.buffer_tokens} is below one batch: each fill holds one batch "
                        f"({cfg.batch_size} tokens), so batches are barely shuffled")  # fmt: skip
    elif cfg.buffer_tokens < 16 * cfg.batch_size:
        warnings.append(f"the buffer holds {cfg.buffer_tokens // cfg.batch_size} batches: tokens of a batch come "
                        "from few sequences (the public runs shuffled 128 batches' worth)")  # fmt: skip
    devices = {"model": cfg.train.device}
    if command == "train" and cfg.cache is None:
        devices["buffer"] = cfg.buffer_device or cfg.train.device
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
    if command == "train":
        check_launch(cfg)
        if cfg.cache is not None:
            check_cache(cfg)
    return warnings


def check_launch(cfg: RunConfig) -> int:
    """The number of processes ``torchrun`` started (1 without it), checked against the run.

    Raises:
        ValueError: several processes but no ``--cache`` (each rank reads its share of a cache), a batch size they
            cannot share equally, or a BatchTopK crosscoder.
    """
    from tiedlib.training.distributed import env_world

    world = env_world()[1]
    if world == 1:
        return 1
    if cfg.cache is None:
        raise ValueError(f"data-parallel training ({world} processes) reads each rank's share of an activation "
                         "cache: write one with `python -m tiedlib.cli cache CACHE_DIR --pair ...`, then pass "
                         "--cache CACHE_DIR")  # fmt: skip
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} cannot be split equally over {world} processes")
    if cfg.crosscoder.activation == "batchtopk":
        raise ValueError("BatchTopK selects latents over the whole batch: train it on one process")
    return world


def check_cache(cfg: RunConfig):
    """The activation cache a run trains from (``cfg.cache``), checked against the pair, layer and width without
    loading them, and against the tokens the run needs; None when the folder holds no cache yet (a dry run plans the
    run anyway; training refuses it).

    A lab pair's cache must also come from the lab build the pair's name stands for now (the manifest's ``source``
    against :func:`tiedlib.pairs.pair_source`, e.g. the same ``TIEDLIB_LAB_SEED``; caches without one are not
    compared). A Hugging Face pair's model dtype is not compared: the run reads the cache, not the models.

    Raises:
        ValueError: the cache was written for another pair, lab build, layer or width (a ``CacheMismatchError``
            naming each field), is not finalised (``CacheCorruptError``), or holds fewer tokens than
            ``n_steps * batch_size`` while ``on_exhausted`` is ``"stop"``.
    """
    from tiedlib.activations.cache import MANIFEST, open_cache

    if cfg.cache is None or not (Path(cfg.cache) / MANIFEST).exists():
        return None
    from tiedlib.pairs import LAB_PAIRS, pair_source

    shape = pair_shape(cfg.pair)
    source = pair_source(cfg.pair, layer=cfg.layer) if cfg.pair in LAB_PAIRS else None
    cache = open_cache(cfg.cache, pair_name=cfg.pair, layer=_layer(cfg, shape), d_model=shape.d_model, source=source)
    need = cfg.train.n_steps * cfg.batch_size
    if need > cache.n_tokens - cache.n_tokens % cfg.batch_size and cfg.on_exhausted == "stop":
        raise ValueError(f"the run needs {need:,} tokens ({cfg.train.n_steps:,} steps x {cfg.batch_size:,}) but the "
                         f"cache at {cfg.cache} serves {cache.n_tokens // cfg.batch_size * cfg.batch_size:,} in one "
                         "epoch; lower --n-steps, cache more tokens, or pass --on-exhausted new_epoch")
    return cache


def run_source(cfg: RunConfig) -> str:
    """The fingerprint of the activations a run trains on, recorded in its folder (``source.json``) and checked by
    ``resume``: the cache's recorded source for a run from a cache (when it has one), else
    :func:`tiedlib.pairs.pair_source` of the pair, layer and model dtype asked for (without loading the models)."""
    from tiedlib.pairs import pair_source

    cache = check_cache(cfg)
    if cache is not None and cache.source is not None:
        return cache.source
    return pair_source(cfg.pair, layer=cfg.layer, device=cfg.train.device, dtype=model_dtype(cfg))


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
    if cfg.cache is not None:
        lines = _cache_reader_plan(cfg, lines, state + step)
    if cfg.eval_every:
        lines.append(("evaluation", f"spliced next-token loss of both models on {cfg.eval_sequences} held-out "
                                    f"sequences every {cfg.eval_every} steps and at the end (main process"
                                    + (", which also loads the model pair)" if cfg.cache is not None else ")")))
    return lines


def _cache_reader_plan(cfg: RunConfig, lines: list[tuple[str, str]], peak: int) -> list[tuple[str, str]]:
    """The plan of a run that reads an activation cache: no models, no buffer, no token file; the cache's size,
    the reader's resident shards, and the data-parallel split under torchrun."""
    import torch

    from tiedlib.activations.cache import bytes_per_token

    shape = pair_shape(cfg.pair)
    cache = check_cache(cfg)
    tokens = cfg.train.n_steps * cfg.batch_size
    dtype = cache.dtype if cache is not None else getattr(torch, cfg.cache_dtype)
    bpt = bytes_per_token(shape.d_model, dtype)
    per_token = f"{bpt:,} bytes per token in {str(dtype).removeprefix('torch.')} ({bpt / 1e3:.1f} KB)"
    if cache is not None:
        what = (f"{cfg.cache}: {cache.n_tokens:,} tokens in {len(cache.shards):,} shards ({_gb(cache.nbytes)}, "
                f"{per_token}); the run reads {tokens:,}")
        shard_tokens = max(s["n_tokens"] for s in cache.shards)
    else:
        what = (f"{cfg.cache} holds no cache yet: write it with `python -m tiedlib.cli cache {cfg.cache} --pair "
                f"{cfg.pair} ...`; the run reads {tokens:,} tokens, {_gb(bpt * tokens)} at {per_token}")
        shard_tokens = cfg.seqs_per_shard * (cfg.seq_len - 1)
    window = cfg.cache_window_shards * shard_tokens * bpt
    world = check_launch(cfg)
    replace = {
        "dataset": ("activation cache", what),
        "buffer": ("cache reader", f"{cfg.cache_window_shards} shards resident, about {_gb(window)} of host memory; "
                                   "rows shuffled within them"),
        "models": ("models", "none loaded: activations are read from the cache"),
    }  # fmt: skip
    out = [replace.get(k, (k, v)) for k, v in lines if k not in ("harvest pass", "token file", "paired cache")]
    out = [(k, f"about {_gb(peak)} on {cfg.train.device}") if k.startswith("peak") else (k, v) for k, v in out]
    if world > 1:
        out.append(("data parallel", f"{world} processes (DDP) x {cfg.batch_size // world:,} rows of each "
                                     f"{cfg.batch_size:,}-row batch; rank 0 writes the run folder"))
    return out


def cache_plan(cfg: RunConfig, shards: tuple[int, int] | None, rank: int, world: int) -> list[tuple[str, str]]:
    """What ``cache`` will write, from ``cfg`` alone: ``(name, value)`` lines for its ``--dry-run``."""
    import torch

    from tiedlib.activations.cache import bytes_per_token, cache_size, n_shards

    shape = pair_shape(cfg.pair)
    tokens = cfg.train.n_steps * cfg.batch_size
    dtype = getattr(torch, cfg.cache_dtype)
    bpt = bytes_per_token(shape.d_model, dtype)
    acts = 2 * shape.d_model * dtype.itemsize
    seq = cfg.seq_len
    if cfg.n_sequences:
        n_seqs, about = cfg.n_sequences, ""
    elif cfg.dataset == "lab":
        n_seqs, about = 0, ""
    else:
        n_seqs, about = -(-tokens // (seq - 1)), "about "  # full rows: seq_len - 1 harvestable tokens each
    total = n_shards(n_seqs, cfg.seqs_per_shard) if n_seqs else 0
    if shards is not None:
        mine = f"shards {shards[0]}..{shards[1] - 1}"
    elif world > 1:
        mine = (f"rank {rank} of {world}: shards {total * rank // world}..{total * (rank + 1) // world - 1}" if total
                else f"rank {rank} of {world}: its share of the shards")
    else:
        mine = "every shard"
    m_dtype = model_dtype(cfg)
    models = 2 * shape.n_params * m_dtype.itemsize
    harvest = cfg.model_batch_size * seq * (3 * shape.intermediate + 8 * shape.d_model) * m_dtype.itemsize
    harvest += cfg.model_batch_size * seq * shape.n_heads * seq * 4 * 2
    return [
        ("pair", f"{cfg.pair} (d_model {shape.d_model}, reading the input of layer {_layer(cfg, shape)}), weights "
                 f"{m_dtype}"),
        ("dataset", f"{cfg.dataset}: {tokens:,} harvestable tokens ({cfg.train.n_steps:,} steps x "
                    f"{cfg.batch_size:,}) in rows of up to {seq} tokens"),
        ("cache", f"{cfg.cache}: {about}{n_seqs:,} sequences in {about}{total:,} shards of {cfg.seqs_per_shard}"
                  if n_seqs else f"{cfg.cache}: lab documents covering the tokens, {cfg.seqs_per_shard} a shard"),
        ("bytes per token", f"{bpt:,} bytes per token in {cfg.cache_dtype} ({bpt / 1e3:.1f} KB: {acts:,} of "
                            "activations, 12 of token id, document index and position)"),
        ("cache size", f"{_gb(cache_size(tokens, shape.d_model, dtype))} for {tokens:,} tokens; about "
                       f"{_gb(cfg.seqs_per_shard * (seq - 1) * bpt)} a full shard"),
        ("this process", mine),
        ("models", f"{_gb(models)} for both models in {m_dtype}" if shape.n_params else "lab pair: a few MB"),
        ("peak memory", f"about {_gb(models + harvest)} on {cfg.train.device} (models and one harvest pass)"),
    ]  # fmt: skip


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

    return load_or_build_sequences(run_dir / TOKENS_FILE, lambda: token_sequences(cfg, tokenizer),
                                   meta=token_meta(cfg))  # fmt: skip


def token_meta(cfg: RunConfig) -> dict[str, Any]:
    """What defines a run's token sequences (stored with the token file, and as the dataset of a cache)."""
    return {"pair": cfg.pair, "dataset": cfg.dataset, "seq_len": cfg.seq_len, "n_sequences": cfg.n_sequences,
            "tokens": cfg.train.n_steps * cfg.batch_size, "chat_fraction": cfg.chat_fraction,
            "seed": cfg.train.seed}  # fmt: skip


def make_buffer(cfg: RunConfig, pair: Any, sequences: Any):
    """The nnsight activation buffer of a run: chat-template tokens (turn markers, role words) are never served,
    as in Experiment 1's training data (:func:`tiedlib.pairs.template_ids`)."""
    import torch

    from tiedlib.activations.buffer import ActivationBuffer
    from tiedlib.pairs import template_ids

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
        exclude_token_ids=template_ids(pair),
    )


def cache_batches(cfg: RunConfig, device: str, rank: int = 0, world_size: int = 1):
    """The shuffled batches of a run that reads ``cfg.cache`` (this rank's slice of each global batch).

    Raises:
        FileNotFoundError: no cache in ``cfg.cache`` yet.
        ValueError: see :func:`check_cache`; a batch size the ranks cannot share.
    """
    from tiedlib.activations.cache_reader import CacheBatches

    cache = check_cache(cfg)
    if cache is None:
        raise FileNotFoundError(f"no activation cache at {cfg.cache}: write it first with `python -m tiedlib.cli "
                                f"cache {cfg.cache} --pair {cfg.pair} ...` (the same pair and layer)")  # fmt: skip
    return CacheBatches(cache, cfg.batch_size, seed=cfg.train.seed, window_shards=cfg.cache_window_shards,
                        epochs=None if cfg.on_exhausted == "new_epoch" else 1, device=device, rank=rank,
                        world_size=world_size)  # fmt: skip


@contextlib.contextmanager
def _data_parallel(cfg: RunConfig):
    """Join torchrun's process group if it started several processes; yields ``(group or None, this rank's device)``.
    On leaving: wait for every rank (rank 0 may still be writing), then leave the group."""
    from tiedlib.training import distributed

    group, device = distributed.init_from_env(cfg.train.device)
    finished = False
    try:
        yield group, device
        finished = True
    finally:
        distributed.shutdown(group, wait=finished)


def _print_metrics(metrics: dict[str, float]) -> None:
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}), flush=True)


def _load_pair(cfg: RunConfig):
    from tiedlib.pairs import load_pair

    return load_pair(cfg.pair, layer=cfg.layer, device=cfg.train.device, dtype=model_dtype(cfg))


def make_evaluator(cfg: RunConfig, pair: Any, *, main: bool = True):
    """The ``evaluate`` callback of :func:`tiedlib.training.train` for ``cfg.eval_every``: spliced next-token loss
    recovered and KL of both models on ``cfg.eval_sequences`` held-out sequences, half web, half chat
    (:func:`tiedlib.analysis.evaluate.spliced_losses`). None when ``eval_every`` is 0 or on a process other than the
    main one. ``pair`` None (a run from a cache) loads the pair here, only when an evaluation is asked for."""
    if not cfg.eval_every or not main:
        return None
    pair = pair if pair is not None else _load_pair(cfg)
    from tiedlib.analysis.evaluate import spliced_losses
    from tiedlib.pairs import heldout_sequences

    n_chat = cfg.eval_sequences // 2
    seqs = [*heldout_sequences(pair, "web", cfg.eval_sequences - n_chat, seq_len=cfg.seq_len)[0],
            *heldout_sequences(pair, "chat", n_chat, seq_len=cfg.seq_len)[0]]

    def evaluate(model: Any) -> dict[str, float]:
        out = spliced_losses(pair, seqs, model, batch_size=cfg.model_batch_size)
        return {f"{m}_{k}": v for m, r in out.items() for k, v in (("ce_recovered", r.recovered), ("kl", r.kl))}

    return evaluate


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
    from tiedlib.training.rundir import write_source

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
    with _data_parallel(cfg) as (group, device):
        main = group is None or group.is_main
        if cfg.cache is not None:
            try:  # checked before anything is written
                data = cache_batches(cfg, device, *((group.rank, group.world_size) if group else (0, 1)))
            except (ValueError, FileNotFoundError) as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
        else:
            pair = _load_pair(cfg)
            cfg.crosscoder = CrosscoderConfig.from_dict({**cfg.crosscoder.to_dict(), "d_model": pair.d_model})
        if main:
            if exists:
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            cfg.save_json(out / RUN_FILE)
            write_source(out, run_source(cfg))
        if cfg.cache is None:
            data = make_buffer(cfg, pair, run_tokens(cfg, out, pair.tokenizer))
        cfg.train.device = device  # this rank's GPU under torchrun (run.json keeps the device asked for)
        evaluate = make_evaluator(cfg, pair if cfg.cache is None else None, main=main)
        torch.manual_seed(cfg.train.seed)  # the initialisation too: a run folder is reproducible from run.json
        model = make_crosscoder(cfg.crosscoder)
        try:
            train(cfg.train, model, data, out_dir=out / CROSSCODER_DIR, log=_print_metrics if main else None,
                  resume_command=f"python -m tiedlib.cli resume {out}", evaluate=evaluate,
                  evaluate_every=cfg.eval_every if evaluate else 0)  # fmt: skip
        except TrainingInterrupted as err:
            return _interrupted(err)
    if main:
        print(f"done: {out / CROSSCODER_DIR}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from tiedlib.training import TrainingInterrupted, find_checkpoint, is_finished, resume
    from tiedlib.training.rundir import check_source, checkpoint_step

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
        check_source(run_dir, run_source(cfg))  # not continued on another pair (or cache) of the same name
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
    command = f"python -m tiedlib.cli resume {run_dir}"
    with _data_parallel(cfg) as (group, device):
        main = group is None or group.is_main
        log = _print_metrics if main else None
        if cfg.cache is not None:
            try:
                data = cache_batches(cfg, device, *((group.rank, group.world_size) if group else (0, 1)))
            except (ValueError, FileNotFoundError) as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
        else:
            pair = _load_pair(cfg)
            data = make_buffer(cfg, pair, run_tokens(cfg, run_dir, pair.tokenizer))
        evaluate = make_evaluator(cfg, pair if cfg.cache is None else None, main=main)
        every = cfg.eval_every if evaluate else 0
        try:
            if ckpt is None:  # killed before the first checkpoint: start over in the same folder
                import torch

                from tiedlib.crosscoders.crosscoder import make_crosscoder
                from tiedlib.training import train

                cfg.train.device = device
                torch.manual_seed(cfg.train.seed)
                train(cfg.train, make_crosscoder(cfg.crosscoder), data, out_dir=cc_dir, overwrite=True, log=log,
                      resume_command=command, evaluate=evaluate, evaluate_every=every)  # fmt: skip
            else:
                resume(cc_dir, data, log=log, device=device if group is not None else args.device,
                       resume_command=command, evaluate=evaluate, evaluate_every=every)  # fmt: skip
        except TrainingInterrupted as err:
            return _interrupted(err)
    if main:
        print(f"done: {cc_dir}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from tiedlib.activations.cache import MANIFEST, n_shards, write_cache
    from tiedlib.pairs import template_ids
    from tiedlib.pairs.corpora import load_or_build_sequences
    from tiedlib.training.distributed import env_world

    try:
        cfg = config_from_args(args)
        warnings = validate(cfg, command="cache")
        env_rank, env_size, local = env_world()
        rank = args.rank if args.rank is not None else env_rank
        world = args.world_size if args.world_size is not None else env_size
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"need 0 <= --rank < --world-size, got rank {rank} of {world}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        _print_plan(cache_plan(cfg, args.shard_range, rank, world), warnings)
        return 0
    _require_device(cfg)
    if env_size > 1 and cfg.train.device.startswith("cuda"):
        cfg.train.device = f"cuda:{local}"  # torchrun: one GPU a process
    pair = _load_pair(cfg)
    root = Path(cfg.cache)
    root.mkdir(parents=True, exist_ok=True)
    meta = token_meta(cfg)
    # Every writer builds (or reads back) the same sequences; the first to finish saves them, atomically.
    seqs = load_or_build_sequences(root / TOKENS_FILE, lambda: token_sequences(cfg, pair.tokenizer), meta=meta)
    total = n_shards(len(seqs), cfg.seqs_per_shard)
    start, stop = args.shard_range or (total * rank // world, total * (rank + 1) // world)
    try:
        write_cache(pair, seqs, root, dataset=meta, seqs_per_shard=cfg.seqs_per_shard,
                    model_batch_size=cfg.model_batch_size, dtype=cfg.cache_dtype, exclude_token_ids=template_ids(pair),
                    shard_range=(start, stop), progress=cfg.train.progress)  # fmt: skip
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    manifest = json.loads((root / MANIFEST).read_text())
    if manifest.get("complete"):
        print(f"cache complete: {root}, {manifest['n_tokens']:,} tokens in {total} shards, norm factors "
              f"{[round(f, 5) for f in manifest['norm_factors']]}")  # fmt: skip
    else:
        done = len(list((root / "records").glob("shard-*.json")))
        wrote = f"wrote shards {start}..{stop - 1}" if stop > start else f"tokens saved in {root / TOKENS_FILE}"
        print(f"{wrote}; {done} of {total} shards done. The writer of the last shard finalises the cache (or run "
              f"`python -m tiedlib.cli finalize {root}`)")  # fmt: skip
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    from tiedlib.activations.cache import MANIFEST, finalize_cache

    if not (Path(args.cache) / MANIFEST).exists():
        print(f"error: no activation cache at {args.cache} ({MANIFEST} is missing)", file=sys.stderr)
        return 2
    try:
        manifest = finalize_cache(args.cache)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"cache complete: {args.cache}, {manifest['n_tokens']:,} tokens in {manifest['n_shards']} shards, norm "
          f"factors {[round(f, 5) for f in manifest['norm_factors']]}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": cmd_train, "resume": cmd_resume, "cache": cmd_cache, "finalize": cmd_finalize}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
