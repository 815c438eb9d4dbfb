"""Run directories: resumable checkpoints, metrics, pruning and the final weights.

A run directory holds::

    config.json, model.safetensors        final weights (+ normalisation factors in the config)
    train_config.json, trainer_state.pt   optimiser, scheduler, step, RNG states, data position
    metrics.jsonl                         one JSON line per logged step (and per evaluation: "eval/..." keys)
    source.json                           the model pair the activations came from (``ModelPair.fingerprint``),
                                          when the caller names it (``train_or_load(..., source=...)``)
    checkpoints/step_XXXXXXX/             the same files, by step count or elapsed time (TrainConfig)

Each checkpoint is written into a temporary folder and renamed into place, so a run killed while writing one
still has its previous checkpoints intact.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from tiedlib.config import TrainConfig
from tiedlib.crosscoders.crosscoder import CONFIG_NAME, WEIGHTS_NAME, Crosscoder

TRAIN_CONFIG_NAME = "train_config.json"
STATE_NAME = "trainer_state.pt"
METRICS_NAME = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
SOURCE_NAME = "source.json"


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


def write_source(run_dir: str | Path, source: str) -> None:
    """Record in ``run_dir`` the source of the activations its run trains on (``{"source": ...}`` in
    :data:`SOURCE_NAME`), atomically: written to a temporary name and renamed into place, like the final files."""
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string (a ModelPair.fingerprint), got {source!r}")
    path = Path(run_dir) / SOURCE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"source": source}) + "\n")
    tmp.replace(path)


def read_source(run_dir: str | Path) -> str | None:
    """The source recorded by :func:`write_source` in ``run_dir``, or None when there is no record (a run from
    before records existed, or one whose caller named no source)."""
    path = Path(run_dir) / SOURCE_NAME
    if not path.exists():
        return None
    return json.loads(path.read_text())["source"]


def check_source(run_dir: str | Path, source: str | None) -> None:
    """Refuse to continue or load the run in ``run_dir`` for activations of another source than it was trained on.

    ``source`` None checks nothing. A run folder without a record loads as before, with a warning.

    Raises:
        ValueError: ``run_dir`` records another source (the message names both and the folder).
    """
    if source is None:
        return
    recorded = read_source(run_dir)
    if recorded is None:
        warnings.warn(f"{run_dir} has no {SOURCE_NAME} (a run from before sources were recorded), so it cannot be "
                      f"checked that it was trained on pair {source!r}; using it unchecked", stacklevel=3)
    elif recorded != source:
        raise ValueError(f"{run_dir} was trained on pair {recorded!r}, this call asks for pair {source!r}; use "
                         "another run_dir or delete it")
