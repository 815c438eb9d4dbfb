"""Training loop with exact resume, checkpoints that survive preemption, and one activation stream for many models.

``train`` is a plain function over an iterator of activation batches: it never knows where activations come from
(in-memory rows, the refreshing nnsight buffer, a disk cache). Schedules follow the public crosscoder replication
(REFERENCE.md): Adam, l1 coefficient ramped linearly from 0 over the first 5% of steps, learning rate constant then
linearly to 0 over the last 20%, gradient-norm clipping at 1.0.

``resume(dir, data)`` continues from a run directory's latest checkpoint, or from a given checkpoint folder, and
gives bitwise the same final weights on CPU as an uninterrupted run fed the same data. ``train_many`` steps several
crosscoders (a tied and a standard one, say) on each batch of one stream, each with its own optimiser and run
directory, so the activations are harvested once.

Data parallel: when ``torch.distributed`` is initialised with several processes (``torchrun``), the loop trains
through :mod:`tiedlib.training.distributed` (DDP gradients; rank 0 alone writes; see there).

Stopping: the first Ctrl-C (SIGINT) or SIGTERM (how Colab and clusters preempt) lets the current step finish,
writes a checkpoint and raises :class:`TrainingInterrupted` naming it; a second one stops at once. Any other
exception (CUDA out of memory, a dataset error) writes a checkpoint too when the models are between steps (the
data iterator, the loss and the backward pass never change the weights), then re-raises with a note naming the
checkpoint folder and the resume command.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tiedlib.config import TrainConfig
from tiedlib.crosscoders.checkpoints import load_crosscoder
from tiedlib.crosscoders.crosscoder import Crosscoder, LossOutput
from tiedlib.training import distributed, rundir
from tiedlib.training.rundir import (
    METRICS_NAME,
    STATE_NAME,
    TRAIN_CONFIG_NAME,
    checkpoint_dir,
    checkpoint_step,
    find_checkpoint,
    list_checkpoints,
)
from tiedlib.training.runtime import StopSignals, tf32

LogFn = Callable[[dict[str, float]], Any]
EvalFn = Callable[[Crosscoder], "dict[str, float]"]
"""An evaluation run during training (e.g. spliced next-token loss, :func:`tiedlib.analysis.evaluate.spliced_losses`,
wrapped by the caller): takes the model, returns named numbers."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM after writing a checkpoint; the message says where and how to resume.

    A :class:`KeyboardInterrupt`, so code that already handles Ctrl-C handles it too.
    """


def l1_coeff_at(step: int, cfg: TrainConfig) -> float:
    """Sparsity coefficient at ``step`` (0-based): linear warm-up from 0 over ``l1_warmup_frac`` of the steps."""
    warmup = cfg.l1_warmup_frac * cfg.n_steps
    if warmup <= 0 or step >= warmup:
        return cfg.l1_coeff
    return cfg.l1_coeff * step / warmup


def lr_factor_at(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate: 1, then linear to 0 over the last ``lr_decay_frac`` of the steps."""
    decay_start = (1 - cfg.lr_decay_frac) * cfg.n_steps
    if step < decay_start:
        return 1.0
    return max(0.0, (cfg.n_steps - step) / (cfg.n_steps - decay_start))


def make_optimizer(model: Crosscoder, cfg: TrainConfig) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    # fused=True: one kernel per step over every parameter (foreach Adam makes about seven passes); at paper shapes
    # the 300M parameters cost more per step than the latents.
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor_at(s, cfg))
    return opt, sched


def _autocast(batch: torch.Tensor, bf16: bool):
    return torch.autocast(batch.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def compute_gradients(model: Crosscoder, optimizer: torch.optim.Optimizer, batch: torch.Tensor, *, l1_coeff: float,
                      metrics: bool = True, bf16: bool = False,
                      loss_fn: Callable[..., LossOutput] | None = None) -> LossOutput:  # fmt: skip
    """Loss and backward pass on ``batch`` ``(batch, 2, d_model)``; the weights are not changed.

    ``loss_fn`` replaces ``model.loss`` (same arguments): the DDP-wrapped loss of data-parallel training.
    """
    with _autocast(batch, bf16):
        out = (loss_fn or model.loss)(batch, l1_coeff=l1_coeff, metrics=metrics)
    optimizer.zero_grad(set_to_none=True)
    out.total.backward()
    return out


def apply_update(model: Crosscoder, optimizer: torch.optim.Optimizer, *, grad_clip: float = 1.0) -> None:
    """Clip the gradients' global norm to ``grad_clip`` (0: no clipping), take the optimiser step and re-impose the
    decoder constraints of the variants (a no-op for the write-up's configuration)."""
    if grad_clip > 0:
        # clip_grad_norm_ multiplies every gradient even when the factor is 1; skip that pass over all parameters
        # when the norm is within bounds (the same numbers either way).
        params = [p for p in model.parameters() if p.grad is not None]
        total_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if total_norm > grad_clip:
            torch.nn.utils.clip_grads_with_norm_(params, grad_clip, total_norm)
    optimizer.step()
    model.apply_constraints_()


def train_step(model: Crosscoder, optimizer: torch.optim.Optimizer, batch: torch.Tensor, *, l1_coeff: float,
               grad_clip: float = 1.0, metrics: bool = True, bf16: bool = False) -> LossOutput:  # fmt: skip
    """One optimiser step on ``batch`` ``(batch, 2, d_model)``: loss, backward, clip, step. Returns the loss terms.

    ``metrics=False`` skips the L0/explained-variance bookkeeping (NaN in the output); the trainer computes them
    only on the steps it logs. ``bf16=True`` runs the forward under bf16 autocast (weights and Adam stay fp32).
    """
    out = compute_gradients(model, optimizer, batch, l1_coeff=l1_coeff, metrics=metrics, bf16=bf16)
    apply_update(model, optimizer, grad_clip=grad_clip)
    return out


@dataclass
class _Run:
    """One crosscoder being trained: its settings, optimiser state and run directory."""

    cfg: TrainConfig
    model: Crosscoder
    opt: torch.optim.Optimizer
    sched: Any
    run_dir: Path | None
    overwrite: bool = False
    name: str = ""
    metrics_file: Any = None
    wandb_run: Any = None
    last_checkpoint: Path | None = None
    out: LossOutput | None = field(default=None, repr=False)
    loss_fn: Callable[..., LossOutput] | None = field(default=None, repr=False)


def _prepare_run_dir(out_dir: str | Path | None, overwrite: bool, hint: str) -> Path | None:
    if out_dir is None:
        return None
    run_dir = Path(out_dir)
    # A folder holding only the run's source record counts as empty: train_or_load writes it before training starts.
    if run_dir.exists() and any(p.name != rundir.SOURCE_NAME for p in run_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"run directory {run_dir} is not empty; continue it with {hint}, choose another out_dir, or pass "
                "overwrite=True to replace it"
            )
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _library_hint(run_dirs: Sequence[Path | None]) -> str:
    dirs = [str(d) for d in run_dirs if d is not None]
    if len(dirs) == 1:
        return f"tiedlib.resume({dirs[0]!r}, data)"
    return f"tiedlib.training.resume_many({dirs!r}, data)"


def train(cfg: TrainConfig, model: Crosscoder, data: Iterator[torch.Tensor], *, out_dir: str | Path | None = None,
          overwrite: bool = False, log: LogFn | None = None, resume_command: str | None = None,
          evaluate: EvalFn | None = None, evaluate_every: int = 0) -> Crosscoder:  # fmt: skip
    """Train ``model`` for ``cfg.n_steps`` steps on batches from ``data``; returns the trained model.

    Args:
        cfg: optimisation settings (also the checkpoint cadence and precision).
        model: a :class:`StandardCrosscoder` or :class:`TiedCrosscoder` (moved to ``cfg.device``).
        data: iterator of ``(batch, 2, d_model)`` tensors, normalised as the model expects. If it has a
            ``norm_factors`` attribute and the model config has none, the factors are recorded in the config.
        out_dir: run directory for checkpoints, final weights and ``metrics.jsonl``; ``None`` keeps nothing on disk.
            An existing non-empty directory is refused unless ``overwrite=True`` (use :func:`resume` to continue).
        log: called with a dict of metrics every ``cfg.log_every`` steps.
        resume_command: how to continue this run, quoted in interruption and error messages (default:
            ``tiedlib.resume(<out_dir>, data)``; the command line passes its own ``resume`` command).
        evaluate: called with the model (under ``torch.no_grad()``, with the random state saved and restored, so
            training is unchanged) every ``evaluate_every`` steps and at the last step; its numbers are written to
            ``metrics.jsonl`` as ``{"step": ..., "eval/<name>": ...}`` lines, passed to ``log`` and to wandb. With
            data parallelism, rank 0 alone evaluates.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM; a checkpoint was written at the step reached.
    """
    return train_many([cfg], [model], data, out_dirs=[out_dir], overwrite=overwrite, log=log,
                      resume_command=resume_command, evaluate=evaluate, evaluate_every=evaluate_every)[0]  # fmt: skip


def train_many(cfgs: Sequence[TrainConfig], models: Sequence[Crosscoder], data: Iterator[torch.Tensor], *,
               out_dirs: Sequence[str | Path | None] | None = None, overwrite: bool = False, log: LogFn | None = None,
               resume_command: str | None = None, evaluate: EvalFn | None = None,
               evaluate_every: int = 0) -> list[Crosscoder]:  # fmt: skip
    """Train several crosscoders on one activation stream: every model takes a step on each batch.

    Each model has its own settings (learning rate, l1, seed...), optimiser, schedules and run directory, and ends
    bitwise equal on CPU to training it alone on the same batches. The runs share ``n_steps`` (the stream is read
    once per step) and write their checkpoints at the same steps, so :func:`resume_many` can continue them together.
    ``log`` receives each model's metrics with ``"run"`` set to its index. Other arguments as in :func:`train`.
    """
    if len(cfgs) != len(models) or not cfgs:
        raise ValueError(f"need one TrainConfig per model, got {len(cfgs)} configs for {len(models)} models")
    _check_evaluate(evaluate, evaluate_every)
    if len({c.n_steps for c in cfgs}) != 1:
        raise ValueError(f"models trained on one stream need the same n_steps, got {[c.n_steps for c in cfgs]}")
    out_dirs = list(out_dirs) if out_dirs is not None else [None] * len(models)
    if len(out_dirs) != len(models):
        raise ValueError(f"need one out_dir per model, got {len(out_dirs)} for {len(models)} models")
    given = [Path(d) for d in out_dirs if d is not None]
    if len(set(given)) != len(given):
        raise ValueError(f"every model needs its own out_dir, got {[str(d) for d in given]}")
    # Seed once, at the top (as TransformerLens' train does); training itself draws no random numbers.
    torch.manual_seed(cfgs[0].seed)
    random.seed(cfgs[0].seed)
    hint = resume_command or _library_hint(given)
    writer = distributed.current() is None or distributed.current().is_main  # data parallel: rank 0 writes
    run_dirs = [_prepare_run_dir(d, overwrite, hint) if writer else None for d in out_dirs]
    factors = getattr(data, "norm_factors", None)
    runs = []
    for i, (cfg, model, run_dir) in enumerate(zip(cfgs, models, run_dirs, strict=True)):
        if factors is not None and model.cfg.norm_factors is None:
            model.set_norm_factors_(factors)
        model.to(cfg.device)
        opt, sched = make_optimizer(model, cfg)
        runs.append(_Run(cfg, model, opt, sched, run_dir, name=str(i) if len(cfgs) > 1 else ""))
    _loop(runs, data, start_step=0, log=log, hint=hint, evaluate=evaluate, evaluate_every=evaluate_every)
    return [r.model for r in runs]


def _check_evaluate(evaluate: EvalFn | None, evaluate_every: int) -> None:
    if evaluate_every < 0 or (evaluate is None) != (evaluate_every == 0):
        raise ValueError(f"pass evaluate together with evaluate_every > 0 (got evaluate={evaluate!r}, "
                         f"evaluate_every={evaluate_every})")


def _load_run(ckpt: Path, run_dir: Path, device: str | None, overwrite: bool) -> tuple[_Run, dict[str, Any]]:
    cfg = TrainConfig.load_json(ckpt / TRAIN_CONFIG_NAME)
    if device is not None:
        cfg.device = device
    state = torch.load(ckpt / STATE_NAME, map_location="cpu", weights_only=True)
    step = int(state["step"])
    later = [p for p in list_checkpoints(run_dir) if checkpoint_step(p) > step]
    if later and not overwrite:
        raise FileExistsError(
            f"{run_dir} already has checkpoints after step {step} ({later[-1].name}); resuming would overwrite them. "
            "Pass out_dir=<new folder> or overwrite=True"
        )
    model = load_crosscoder(ckpt).to(cfg.device)
    opt, sched = make_optimizer(model, cfg)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    run_dir.mkdir(parents=True, exist_ok=True)
    return _Run(cfg, model, opt, sched, run_dir, overwrite=overwrite, last_checkpoint=ckpt), state


def resume(path: str | Path, data: Iterator[torch.Tensor], *, out_dir: str | Path | None = None,
           overwrite: bool = False, log: LogFn | None = None, device: str | None = None,
           resume_command: str | None = None, evaluate: EvalFn | None = None,
           evaluate_every: int = 0) -> Crosscoder:  # fmt: skip
    """Continue training from a run directory (its latest checkpoint) or from one checkpoint folder.

    ``data`` must be built the same way as for the original run; if it has ``load_state_dict`` its position is
    restored from the checkpoint, otherwise it must already be positioned where the checkpoint stopped. Later
    checkpoints are written to ``out_dir`` (default: the run directory the checkpoint belongs to); checkpoints
    that already exist there after the resumed step are never replaced unless ``overwrite=True``.
    """
    out_dirs = [out_dir] if out_dir is not None else None
    return resume_many([path], data, out_dirs=out_dirs, overwrite=overwrite, log=log, device=device,
                       resume_command=resume_command, evaluate=evaluate, evaluate_every=evaluate_every)[0]  # fmt: skip


def resume_many(paths: Sequence[str | Path], data: Iterator[torch.Tensor], *,
                out_dirs: Sequence[str | Path] | None = None, overwrite: bool = False, log: LogFn | None = None,
                device: str | None = None, resume_command: str | None = None, evaluate: EvalFn | None = None,
                evaluate_every: int = 0) -> list[Crosscoder]:  # fmt: skip
    """Continue runs started by :func:`train_many` on one stream, from the latest step all of them checkpointed.

    Each path is a run directory or a checkpoint folder; other arguments as in :func:`resume`.
    """
    _check_evaluate(evaluate, evaluate_every)
    ckpts = [find_checkpoint(p) for p in paths]
    if len(ckpts) > 1:
        # The runs must restart from one step: the newest step every run directory has a checkpoint of.
        steps = [{checkpoint_step(c) for c in list_checkpoints(Path(p))} or {checkpoint_step(k)}
                 for p, k in zip(paths, ckpts, strict=True)]  # fmt: skip
        common = set.intersection(*steps)
        if not common:
            raise FileNotFoundError(f"the runs {[str(p) for p in paths]} have no checkpoint at a common step")
        step = max(common)
        ckpts = [k if checkpoint_step(k) == step else checkpoint_dir(Path(p), step)
                 for p, k in zip(paths, ckpts, strict=True)]  # fmt: skip
    if out_dirs is not None and len(out_dirs) != len(ckpts):
        raise ValueError(f"need one out_dir per run, got {len(out_dirs)} for {len(ckpts)} runs")
    run_dirs = [Path(out_dirs[i]) if out_dirs is not None
                else (c.parent.parent if c.parent.name == rundir.CHECKPOINTS else c)
                for i, c in enumerate(ckpts)]  # fmt: skip
    loaded = [_load_run(c, d, device, overwrite) for c, d in zip(ckpts, run_dirs, strict=True)]
    runs, states = [r for r, _ in loaded], [s for _, s in loaded]
    for i, run in enumerate(runs):
        run.name = str(i) if len(runs) > 1 else ""
    if len({r.cfg.n_steps for r in runs}) != 1:
        raise ValueError(f"runs resumed on one stream need the same n_steps, got {[r.cfg.n_steps for r in runs]}")
    rundir.set_rng_state(states[0]["rng"])
    if states[0]["data"] is not None:
        if not hasattr(data, "load_state_dict"):
            raise TypeError("the checkpoint stored a data position but `data` has no load_state_dict()")
        data.load_state_dict(states[0]["data"])
    hint = resume_command or _library_hint(run_dirs)
    _loop(runs, data, start_step=int(states[0]["step"]), log=log, hint=hint, evaluate=evaluate,
          evaluate_every=evaluate_every)
    return [r.model for r in runs]


def _data_state(data: Any) -> Any:
    return data.state_dict() if hasattr(data, "state_dict") else None


def _cadence(cfg: TrainConfig) -> str:
    parts = []
    if cfg.checkpoint_every:
        parts.append(f"every {cfg.checkpoint_every} steps")
    if cfg.checkpoint_minutes:
        parts.append(f"every {cfg.checkpoint_minutes:g} min")
    kept = f"keeping the last {cfg.keep_checkpoints}" if cfg.keep_checkpoints else "keeping all"
    return f"{' and '.join(parts) or 'at the end only'}, {kept}"


def _checkpoint_all(runs: list[_Run], step: int, data_state: Any) -> None:
    for run in runs:
        if run.run_dir is None or (run.last_checkpoint is not None and checkpoint_step(run.last_checkpoint) == step):
            continue
        ckpt = checkpoint_dir(run.run_dir, step)
        rundir.write_checkpoint(ckpt, run.model, run.cfg, run.opt, run.sched, step, data_state, overwrite=True)
        run.last_checkpoint = ckpt
        rundir.prune(run.run_dir, run.cfg.keep_checkpoints)


def _where(runs: list[_Run], hint: str) -> str:
    saved = [r for r in runs if r.run_dir is not None]
    if not saved:
        return "nothing was saved (no out_dir)"
    ckpts = [str(r.last_checkpoint) if r.last_checkpoint is not None else f"none yet in {r.run_dir}" for r in saved]
    ok = all(r.last_checkpoint is not None for r in saved)
    return f"last checkpoint: {', '.join(ckpts)}" + (f"; continue with {hint}" if ok else "")


def _log_metrics(run: _Run, step: int, l1: float, bar: Any, log: LogFn | None,
                 dp: distributed.DataParallel | None) -> None:  # fmt: skip
    scalars = run.out.scalars()
    if dp is not None:  # every rank takes part in the average; rank 0 reports it
        scalars = dp.average(scalars)
        if not dp.is_main:
            return
    metrics: dict[str, Any] = {"step": step, "lr": run.sched.get_last_lr()[0], "l1_coeff": l1, **scalars}
    if run.name:
        bar.set_postfix({f"ev{run.name}": f"{metrics['explained_variance']:.3f}"}, refresh=False)
    else:
        bar.set_postfix(ev=f"{metrics['explained_variance']:.3f}", l0=f"{metrics['l0']:.1f}")
    _record(run, step, metrics, log)


def _record(run: _Run, step: int, metrics: dict[str, Any], log: LogFn | None) -> None:
    """Write one metrics line to the run's metrics.jsonl and wandb, and pass it to ``log``."""
    if run.metrics_file is not None:
        run.metrics_file.write(json.dumps(metrics) + "\n")
        run.metrics_file.flush()
    if run.wandb_run is not None:
        run.wandb_run.log(metrics, step=step)
    if log is not None:
        log({**metrics, "run": int(run.name)} if run.name else metrics)


def _evaluate(run: _Run, step: int, evaluate: EvalFn, bar: Any, log: LogFn | None) -> None:
    """Run ``evaluate`` on the model without touching the training's random state; record its numbers."""
    state = rundir.rng_state()
    training = run.model.training
    try:
        run.model.eval()  # BatchTopK crosscoders use their inference threshold
        with torch.no_grad():
            numbers = dict(evaluate(run.model))
    finally:
        run.model.train(training)
        rundir.set_rng_state(state)
    bad = {k: v for k, v in numbers.items() if not isinstance(v, (int, float))}
    if bad:
        raise TypeError(f"evaluate must return numbers, got {bad}")
    metrics: dict[str, Any] = {"step": step, **{f"eval/{k}": float(v) for k, v in numbers.items()}}
    bar.write(f"eval{run.name} at step {step}: " + ", ".join(f"{k} {float(v):.4g}" for k, v in numbers.items()))
    _record(run, step, metrics, log)


def _loop(runs: list[_Run], data: Iterator[torch.Tensor], *, start_step: int, log: LogFn | None, hint: str,
          evaluate: EvalFn | None = None, evaluate_every: int = 0) -> None:
    cfg0 = runs[0].cfg
    n_steps = cfg0.n_steps
    dp = distributed.current()
    if dp is not None:
        dp.check_data(data)
        for run in runs:
            run.loss_fn = dp.wrap(run.model)
            if not dp.is_main:
                run.run_dir = None  # rank 0 alone writes checkpoints, metrics and final weights
    main = dp is None or dp.is_main
    stack = contextlib.ExitStack()
    for run in runs:
        if run.run_dir is not None:
            run.metrics_file = stack.enter_context(open(run.run_dir / METRICS_NAME, "a"))  # noqa: SIM115
        if run.cfg.wandb_project and main:
            run.wandb_run = _init_wandb(run.cfg, run.model)
            stack.callback(run.wandb_run.finish)
    stop = stack.enter_context(StopSignals())
    stack.enter_context(tf32(cfg0.tf32, [r.cfg.device for r in runs]))
    names = "+".join(r.model.architecture for r in runs)
    bar = stack.enter_context(
        tqdm(total=n_steps, initial=start_step, disable=not (cfg0.progress and main), desc=f"train {names}")
    )
    for run in runs:
        if run.run_dir is not None:
            bar.write(f"train: run directory {run.run_dir}; checkpoints {_cadence(run.cfg)}")
    step = start_step
    data_iter = iter(data)
    # (step, data position) the models are consistent with: None only while an optimiser step is being applied.
    safe: tuple[int, Any] | None = (step, _data_state(data))
    last_time = time.monotonic()
    with stack:
        try:
            while step < n_steps:
                try:
                    batch = next(data_iter)
                except StopIteration:
                    raise RuntimeError(
                        f"the data iterator ran out after {step} of {n_steps} steps; provide more data, "
                        "allow new epochs, or lower n_steps"
                    ) from None
                logging = (step + 1) % cfg0.log_every == 0 or step + 1 == n_steps
                l1s = [l1_coeff_at(step, r.cfg) for r in runs]
                for run, l1 in zip(runs, l1s, strict=True):
                    b = batch.to(run.cfg.device, non_blocking=True)
                    run.out = compute_gradients(
                        run.model, run.opt, b, l1_coeff=l1, metrics=logging, bf16=run.cfg.bf16, loss_fn=run.loss_fn
                    )
                    if not torch.isfinite(run.out.total):
                        raise FloatingPointError(
                            f"non-finite loss at step {step} (reconstruction={float(run.out.reconstruction)}, "
                            f"sparsity={float(run.out.sparsity)}); check the input activations for NaN/inf and "
                            "lower lr"
                        )
                safe = None
                for run in runs:
                    apply_update(run.model, run.opt, grad_clip=run.cfg.grad_clip)
                    run.sched.step()
                step += 1
                safe = (step, _data_state(data))
                bar.update(1)
                if logging:
                    for run, l1 in zip(runs, l1s, strict=True):
                        _log_metrics(run, step, l1, bar, log, dp)
                if evaluate is not None and main and (step % evaluate_every == 0 or step == n_steps):
                    for run in runs:
                        _evaluate(run, step, evaluate, bar, log)
                now = time.monotonic()
                due = step == n_steps or any(
                    (r.cfg.checkpoint_every and step % r.cfg.checkpoint_every == 0)
                    or (r.cfg.checkpoint_minutes and now - last_time >= 60 * r.cfg.checkpoint_minutes)
                    for r in runs
                )
                if due:
                    _checkpoint_all(runs, step, safe[1])
                    last_time = time.monotonic()
                    if step == n_steps:
                        for run in runs:
                            if run.run_dir is not None:
                                rundir.publish_final(run.run_dir, run.last_checkpoint)
                requested = stop.requested
                if dp is not None and dp.any(requested is not None) and requested is None:
                    requested = "a stop signal on another rank"  # every rank stops after the same step
                if requested is not None and step < n_steps:
                    _checkpoint_all(runs, step, safe[1])
                    raise TrainingInterrupted(f"{requested} at step {step} of {n_steps}: {_where(runs, hint)}")
            if dp is not None:
                dp.barrier()  # rank 0 has written the final weights when any rank returns
        except TrainingInterrupted as err:
            print(f"training stopped: {err}", file=sys.stderr, flush=True)
            raise
        except BaseException as err:
            _on_error(err, runs, safe, hint)
            raise


def _on_error(err: BaseException, runs: list[_Run], safe: tuple[int, Any] | None, hint: str) -> None:
    """Keep what was trained: write a checkpoint at the step the models are consistent with (if they are), then say
    where the last checkpoint is and how to resume (printed and added to the exception's notes)."""
    written = ""
    if safe is not None and any(r.run_dir is not None for r in runs):
        try:
            _checkpoint_all(runs, *safe)
        except Exception as ckpt_err:  # e.g. the disk is full too: report it, keep the original error
            written = f" (writing a checkpoint at step {safe[0]} failed too: {type(ckpt_err).__name__}: {ckpt_err})"
    at = f"at step {safe[0]}" if safe is not None else "during an optimiser step"
    msg = f"training stopped {at} by {type(err).__name__}{written}; {_where(runs, hint)}"
    print(msg, file=sys.stderr, flush=True)
    err.add_note(msg)


def _init_wandb(cfg: TrainConfig, model: Crosscoder):
    try:
        import wandb
    except ImportError as err:
        raise ImportError("TrainConfig.wandb_project is set but wandb is not installed: pip install wandb") from err
    return wandb.init(project=cfg.wandb_project, config={"train": cfg.to_dict(), "crosscoder": model.cfg.to_dict()})
