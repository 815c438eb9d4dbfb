"""Training loop with exact resume.

``train`` is a plain function over an iterator of activation batches: it never knows where activations come from
(in-memory rows, the refreshing nnsight buffer, a disk cache). Schedules follow the public crosscoder replication
(REFERENCE.md): Adam, l1 coefficient ramped linearly from 0 over the first 5% of steps, learning rate constant then
linearly to 0 over the last 20%, gradient-norm clipping at 1.0.

A run directory holds::

    config.json, model.safetensors        final weights (+ normalisation factors in the config)
    train_config.json, trainer_state.pt   optimiser, scheduler, step, RNG states, data position
    metrics.jsonl                         one JSON line per logged step
    checkpoints/step_XXXXXXX/             the same files, every ``checkpoint_every`` steps

``resume(dir, data)`` continues from the run directory's latest checkpoint, or from a given checkpoint folder, and
gives bitwise the same final weights on CPU as an uninterrupted run fed the same data.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tiedlib.config import CrosscoderConfig, TrainConfig
from tiedlib.crosscoders.checkpoints import load_crosscoder
from tiedlib.crosscoders.crosscoder import CONFIG_NAME, WEIGHTS_NAME, Crosscoder, LossOutput, make_crosscoder

TRAIN_CONFIG_NAME = "train_config.json"
STATE_NAME = "trainer_state.pt"
METRICS_NAME = "metrics.jsonl"
CHECKPOINTS = "checkpoints"

LogFn = Callable[[dict[str, float]], Any]


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
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor_at(s, cfg))
    return opt, sched


def train_step(
    model: Crosscoder,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    *,
    l1_coeff: float,
    grad_clip: float = 1.0,
    metrics: bool = True,
) -> LossOutput:
    """One optimiser step on ``batch`` ``(batch, 2, d_model)``: loss, backward, clip, step. Returns the loss terms.

    ``metrics=False`` skips the L0/explained-variance bookkeeping (NaN in the output); the trainer computes them
    only on the steps it logs.
    """
    out = model.loss(batch, l1_coeff=l1_coeff, metrics=metrics)
    optimizer.zero_grad(set_to_none=True)
    out.total.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    model.apply_constraints_()  # variants' decoder constraints (unit/equal norms, designated shared); no-op by default
    return out


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_checkpoint(
    folder: Path, model: Crosscoder, cfg: TrainConfig, opt, sched, step: int, data: Iterator, overwrite: bool
) -> None:
    """Write a resumable checkpoint into ``folder`` atomically (a temp folder renamed into place)."""
    if folder.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {folder} already exists; refusing to overwrite it")
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    cfg.save_json(tmp / TRAIN_CONFIG_NAME)
    data_state = data.state_dict() if hasattr(data, "state_dict") else None
    torch.save(
        {
            "step": step,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": _rng_state(),
            "data": data_state,
        },
        tmp / STATE_NAME,
    )
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def _publish_final(run_dir: Path, ckpt: Path) -> None:
    """Copy a checkpoint's files to the top of the run directory (the run's final weights and state)."""
    for name in (CONFIG_NAME, TRAIN_CONFIG_NAME, STATE_NAME, WEIGHTS_NAME):
        tmp = run_dir / (name + ".tmp")
        shutil.copyfile(ckpt / name, tmp)
        tmp.replace(run_dir / name)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step_{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE_NAME).exists()
    ]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def train(
    cfg: TrainConfig,
    model: Crosscoder,
    data: Iterator[torch.Tensor],
    *,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    log: LogFn | None = None,
) -> Crosscoder:
    """Train ``model`` for ``cfg.n_steps`` steps on batches from ``data``; returns the trained model.

    Args:
        cfg: optimisation settings.
        model: a :class:`StandardCrosscoder` or :class:`TiedCrosscoder` (moved to ``cfg.device``).
        data: iterator of ``(batch, 2, d_model)`` tensors, normalised as the model expects. If it has a
            ``norm_factors`` attribute and the model config has none, the factors are recorded in the config.
        out_dir: run directory for checkpoints, final weights and ``metrics.jsonl``; ``None`` keeps nothing on disk.
            An existing non-empty directory is refused unless ``overwrite=True`` (use :func:`resume` to continue).
        log: called with a dict of metrics every ``cfg.log_every`` steps.
    """
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    run_dir = None
    if out_dir is not None:
        run_dir = Path(out_dir)
        if run_dir.exists() and any(run_dir.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"run directory {run_dir} is not empty; call tiedlib.resume({str(run_dir)!r}, data) to continue "
                    "it, "
                    "choose another out_dir, or pass overwrite=True to replace it"
                )
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    factors = getattr(data, "norm_factors", None)
    if factors is not None and model.cfg.norm_factors is None:
        model.cfg.norm_factors = [float(v) for v in factors]
    model.to(cfg.device)
    opt, sched = make_optimizer(model, cfg)
    return _loop(cfg, model, data, opt, sched, start_step=0, run_dir=run_dir, log=log)


def resume(
    path: str | Path,
    data: Iterator[torch.Tensor],
    *,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    log: LogFn | None = None,
    device: str | None = None,
) -> Crosscoder:
    """Continue training from a run directory (its latest checkpoint) or from one checkpoint folder.

    ``data`` must be built the same way as for the original run; if it has ``load_state_dict`` its position is
    restored from the checkpoint, otherwise it must already be positioned where the checkpoint stopped. Later
    checkpoints are written to ``out_dir`` (default: the run directory the checkpoint belongs to); checkpoints
    that already exist there after the resumed step are never replaced unless ``overwrite=True``.
    """

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no run directory or checkpoint at {path}")
    if (path / STATE_NAME).exists() and (path / WEIGHTS_NAME).exists():
        ckpt = path
    else:
        found = list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"{path} holds no resumable checkpoint ({STATE_NAME} + {WEIGHTS_NAME})")
        ckpt = found[-1]
    in_run = ckpt.parent.name == CHECKPOINTS
    run_dir = Path(out_dir) if out_dir is not None else (ckpt.parent.parent if in_run else ckpt)
    cfg = TrainConfig.load_json(ckpt / TRAIN_CONFIG_NAME)
    if device is not None:
        cfg.device = device
    state = torch.load(ckpt / STATE_NAME, map_location="cpu", weights_only=True)
    step = int(state["step"])
    later = [p for p in list_checkpoints(run_dir) if int(p.name.split("_")[1]) > step]
    if later and not overwrite:
        raise FileExistsError(
            f"{run_dir} already has checkpoints after step {step} ({later[-1].name}); resuming would overwrite them. "
            "Pass out_dir=<new folder> or overwrite=True"
        )
    model = load_crosscoder(ckpt).to(cfg.device)
    opt, sched = make_optimizer(model, cfg)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    if state["data"] is not None:
        if not hasattr(data, "load_state_dict"):
            raise TypeError("the checkpoint stored a data position but `data` has no load_state_dict()")
        data.load_state_dict(state["data"])
    run_dir.mkdir(parents=True, exist_ok=True)
    return _loop(cfg, model, data, opt, sched, start_step=step, run_dir=run_dir, log=log, overwrite=overwrite)


def _loop(
    cfg: TrainConfig,
    model: Crosscoder,
    data: Iterator[torch.Tensor],
    opt,
    sched,
    *,
    start_step: int,
    run_dir: Path | None,
    log: LogFn | None,
    overwrite: bool = False,
) -> Crosscoder:
    wandb_run = _init_wandb(cfg, model) if cfg.wandb_project else None
    metrics_file = open(run_dir / METRICS_NAME, "a") if run_dir is not None else None  # noqa: SIM115
    data_iter = iter(data)
    step = start_step
    bar = tqdm(total=cfg.n_steps, initial=start_step, disable=not cfg.progress, desc=f"train {model.architecture}")
    try:
        while step < cfg.n_steps:
            try:
                batch = next(data_iter)
            except StopIteration:
                raise RuntimeError(
                    f"the data iterator ran out after {step} of {cfg.n_steps} steps; provide more data, "
                    "allow new epochs, or lower n_steps"
                ) from None
            batch = batch.to(cfg.device, non_blocking=True)
            l1 = l1_coeff_at(step, cfg)
            logging = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.n_steps
            out = train_step(model, opt, batch, l1_coeff=l1, grad_clip=cfg.grad_clip, metrics=logging)
            if not torch.isfinite(out.total):
                raise FloatingPointError(
                    f"non-finite loss at step {step} (reconstruction={float(out.reconstruction)}, "
                    f"sparsity={float(out.sparsity)}); check the input activations for NaN/inf and lower lr"
                )
            sched.step()
            step += 1
            bar.update(1)
            if logging:
                metrics = {"step": step, "lr": sched.get_last_lr()[0], "l1_coeff": l1, **out.scalars()}
                bar.set_postfix(ev=f"{metrics['explained_variance']:.3f}", l0=f"{metrics['l0']:.1f}")
                if log is not None:
                    log(metrics)
                if metrics_file is not None:
                    metrics_file.write(json.dumps(metrics) + "\n")
                    metrics_file.flush()
                if wandb_run is not None:
                    wandb_run.log(metrics, step=step)
            if run_dir is not None and (
                step == cfg.n_steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
            ):
                ckpt = checkpoint_dir(run_dir, step)
                _write_checkpoint(ckpt, model, cfg, opt, sched, step, data, overwrite=overwrite)
                _prune(run_dir, cfg.keep_checkpoints)
                if step == cfg.n_steps:
                    _publish_final(run_dir, ckpt)
    except KeyboardInterrupt:
        # Keep what was trained: an interrupted run leaves a resumable checkpoint at the current step.
        if run_dir is not None and step > start_step:
            _write_checkpoint(checkpoint_dir(run_dir, step), model, cfg, opt, sched, step, data, overwrite=True)
            print(f"interrupted: checkpoint written to {checkpoint_dir(run_dir, step)}; continue with tiedlib.resume")
        raise
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if wandb_run is not None:
            wandb_run.finish()
    return model


def _prune(run_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old)


def _init_wandb(cfg: TrainConfig, model: Crosscoder):
    try:
        import wandb
    except ImportError as err:
        raise ImportError("TrainConfig.wandb_project is set but wandb is not installed: pip install wandb") from err
    return wandb.init(project=cfg.wandb_project, config={"train": cfg.to_dict(), "crosscoder": model.cfg.to_dict()})


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The logged metrics of a run directory, one dict per logged step."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {METRICS_NAME} in {run_dir}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a completed run (final weights at its top level)."""
    run_dir = Path(run_dir)
    return (run_dir / WEIGHTS_NAME).exists() and (run_dir / CONFIG_NAME).exists()


def train_or_load(
    run_dir: str | Path,
    crosscoder_cfg: CrosscoderConfig,
    train_cfg: TrainConfig,
    make_data: Callable[[], Iterator[torch.Tensor]],
    *,
    log: Callable[[dict], object] | None = None,
) -> tuple[Crosscoder, list[dict]]:
    """Load the finished run in ``run_dir`` if its config matches, resume it if it was interrupted, else train it.

    Returns the crosscoder and its logged metrics. A finished run whose crosscoder config differs from
    ``crosscoder_cfg`` is never replaced: the error says which fields differ, so the caller picks another folder.
    """
    run_dir = Path(run_dir)
    if is_finished(run_dir):
        model = load_crosscoder(run_dir)
        _check_same(model.cfg, crosscoder_cfg, run_dir)
        return model, read_metrics(run_dir)
    if list_checkpoints(run_dir):
        model = resume(run_dir, make_data(), log=log)
        return model, read_metrics(run_dir)
    # Seed the initialisation too (train() seeds only the optimisation), so a run folder is reproducible
    # whatever the caller did with the global RNG before.
    torch.manual_seed(train_cfg.seed)
    model = make_crosscoder(crosscoder_cfg)
    model = train(train_cfg, model, make_data(), out_dir=run_dir, log=log)
    return model, read_metrics(run_dir)


def _check_same(found: CrosscoderConfig, wanted: CrosscoderConfig, run_dir: Path) -> None:
    a, b = found.to_dict(), wanted.to_dict()
    diff = sorted(k for k in b if k != "norm_factors" and a.get(k) != b[k])
    if diff:
        details = ", ".join(f"{k}: saved {a.get(k)!r} vs requested {b[k]!r}" for k in diff)
        raise ValueError(f"{run_dir} holds a finished run with a different config ({details}); use another run_dir")


def train_crosscoder(
    run_dir: str | Path, acts: Any, *, architecture: str, n_latents: int, n_steps: int, batch_size: int, lr: float,
    l1_coeff: float, eta: float = 2.0, seed: int = 0, device: str = "cpu",
) -> tuple[Any, list[dict]]:
    """Train (or load, if ``run_dir`` holds the finished run) a crosscoder on harvested activations.

    ``acts`` is a :class:`~tiedlib.activations.PairActivations`; rows are reused in new epochs as often as
    ``n_steps`` needs (the write-up repeats its 80k prefixes up to 60M tokens). Returns the crosscoder and its logged
    metrics.
    """
    cc_cfg = CrosscoderConfig(d_model=acts.harvest.acts.shape[-1], n_latents=n_latents, architecture=architecture,
                              eta=eta)
    train_cfg = TrainConfig(n_steps=n_steps, lr=lr, l1_coeff=l1_coeff, seed=seed, device=device, progress=False,
                            log_every=max(1, n_steps // 20))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="InMemoryBatches: starting epoch")
        return train_or_load(run_dir, cc_cfg, train_cfg, lambda: acts.batches(batch_size, seed=seed))
