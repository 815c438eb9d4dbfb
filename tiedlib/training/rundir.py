"""Run directories: resumable checkpoints, metrics, pruning and the final weights.

A run directory holds::

    config.json, model.safetensors        final weights (+ normalisation factors in the config)
    train_config.json, trainer_state.pt   optimiser, scheduler, step, RNG states, data position
    metrics.jsonl                         one JSON line per logged step (and per evaluation: "eval/..." keys)
    checkpoints/step_XXXXXXX/             the same files, by step count or elapsed time (TrainConfig)

Each checkpoint is written into a temporary folder and renamed into place, so a run killed while writing one
still has its previous checkpoints intact.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from tiedlib.config import TrainConfig
from tiedlib.crosscoders.crosscoder import CONFIG_NAME, WEIGHTS_NAME, Crosscoder

TRAIN_CONFIG_NAME = "train_config.json"
STATE_NAME = "trainer_state.pt"
METRICS_NAME = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:07d}"


def checkpoint_step(folder: Path) -> int:
    """The step a checkpoint folder ``.../step_XXXXXXX`` was written at."""
    return int(Path(folder).name.split("_")[1])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE_NAME).exists()
    ]
    return sorted(found, key=checkpoint_step)


def find_checkpoint(path: str | Path) -> Path:
    """``path`` itself if it is a checkpoint folder, else the latest checkpoint of the run directory ``path``.

    Raises:
        FileNotFoundError: nothing at ``path``, or no resumable checkpoint in it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no run directory or checkpoint at {path}")
    if (path / STATE_NAME).exists() and (path / WEIGHTS_NAME).exists():
        return path
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"{path} holds no resumable checkpoint ({STATE_NAME} + {WEIGHTS_NAME})")
    return found[-1]


def write_checkpoint(folder: Path, model: Crosscoder, cfg: TrainConfig, opt: torch.optim.Optimizer, sched: Any,
                     step: int, data_state: Any, *, overwrite: bool) -> None:  # fmt: skip
    """Write a resumable checkpoint into ``folder`` atomically (a temporary folder renamed into place).

    ``data_state`` is the data iterator's ``state_dict()`` *at* ``step`` (None for a plain iterator).
    """
    if folder.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {folder} already exists; refusing to overwrite it")
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    cfg.save_json(tmp / TRAIN_CONFIG_NAME)
    state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(),
             "data": data_state}  # fmt: skip
    torch.save(state, tmp / STATE_NAME)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def publish_final(run_dir: Path, ckpt: Path) -> None:
    """Copy a checkpoint's files to the top of the run directory (the run's final weights and state)."""
    for name in (CONFIG_NAME, TRAIN_CONFIG_NAME, STATE_NAME, WEIGHTS_NAME):
        tmp = run_dir / (name + ".tmp")
        shutil.copyfile(ckpt / name, tmp)
        tmp.replace(run_dir / name)


def prune(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep=0``: keep all)."""
    if keep <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old)


def read_metrics(run_dir: str | Path, kind: str = "train") -> list[dict[str, float]]:
    """The logged metrics of a run directory: ``kind="train"``, one dict per logged training step; ``"eval"``, one
    per evaluation (``train(..., evaluate=...)``; keys ``"eval/<name>"`` and ``"step"``)."""
    if kind not in ("train", "eval"):
        raise ValueError(f"kind must be 'train' or 'eval', got {kind!r}")
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {METRICS_NAME} in {run_dir}")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [m for m in lines if any(k.startswith("eval/") for k in m) == (kind == "eval")]


def is_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a completed run (final weights at its top level)."""
    run_dir = Path(run_dir)
    return (run_dir / WEIGHTS_NAME).exists() and (run_dir / CONFIG_NAME).exists()


def checkpoint_nbytes(n_params: int, param_bytes: int = 4) -> int:
    """Approximate bytes of one checkpoint: the weights plus Adam's two moment buffers, all ``param_bytes`` wide.

    A paper-shape tied crosscoder (d_model 2304, 3 x 16,384 latents: 302M parameters) makes 3.6 GB.
    """
    return 3 * n_params * param_bytes
