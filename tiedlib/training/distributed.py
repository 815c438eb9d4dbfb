"""Data-parallel training on ``torch.distributed``: one crosscoder, each global batch split over the processes (DDP).

Launch with ``torchrun`` (``torchrun --nproc-per-node N -m tiedlib.cli train --cache PATH ...``), which starts one
process per GPU and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. :func:`init_from_env` joins the process group
(NCCL on CUDA, gloo on CPU); :func:`tiedlib.training.train` then sees an initialised group (:func:`current`) and:

- wraps each crosscoder's loss in :class:`torch.nn.parallel.DistributedDataParallel`, which all-reduces (averages)
  the gradients during the backward pass, so every rank clips and takes the same Adam step and holds the same
  weights (DDP also broadcasts rank 0's initial weights);
- expects the data to serve this rank's slice of each global batch
  (:class:`tiedlib.activations.CacheBatches` with ``rank`` and ``world_size``);
- writes checkpoints, metrics and the final weights on rank 0 only; the metrics it logs are averaged over the ranks;
- agrees on stopping: a SIGINT/SIGTERM on any rank stops every rank after the same step.

Why the result equals one process on the same global batch: the loss terms are means over the batch rows
(reconstruction ``sum(err^2) / batch``, the weighted L1 likewise), so the gradient of the mean over ``B`` rows is the
average over ``W`` ranks of the gradients of the means over their ``B / W`` rows. Only the summation order differs
(float tolerance). BatchTopK picks its top ``k * batch`` latents over the whole batch, which a rank cannot see, so it
is refused here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class _LossModule(nn.Module):
    """A crosscoder whose ``forward`` is its training loss, so that DDP's forward hooks see the loss computation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor, *, l1_coeff: float, metrics: bool = True) -> Any:
        return self.model.loss(batch, l1_coeff=l1_coeff, metrics=metrics)


@dataclass(frozen=True)
class DataParallel:
    """This process's place in an initialised process group of more than one process."""

    rank: int
    world_size: int
    comm_device: torch.device
    """Where the tensors of collectives live: the rank's GPU under NCCL, the CPU under gloo."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes run folders, checkpoints and metrics."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> Callable[..., Any]:
        """``model.loss`` through DDP: call it as ``fn(batch, l1_coeff=..., metrics=...)``; the backward pass of its
        ``total`` leaves the gradients averaged over the ranks in ``model``'s parameters.

        Raises:
            ValueError: a BatchTopK crosscoder (its top-k is over the whole batch, not a rank's slice).
        """
        cfg = getattr(model, "cfg", None)
        if getattr(cfg, "activation", "relu") == "batchtopk":
            raise ValueError("BatchTopK crosscoders select latents over the whole batch; data-parallel training would "
                             "select them per rank. Train BatchTopK on one process")  # fmt: skip
        device = next(model.parameters()).device
        ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" \
            else None  # fmt: skip
        return nn.parallel.DistributedDataParallel(_LossModule(model), device_ids=ids)

    def check_data(self, data: Any) -> None:
        """Refuse a data source that does not serve this rank's slice of the global batches.

        Raises:
            ValueError: ``data`` has no ``rank``/``world_size`` matching the process group's.
        """
        got = (getattr(data, "rank", None), getattr(data, "world_size", None))
        if got != (self.rank, self.world_size):
            raise ValueError(
                f"data-parallel training on {self.world_size} processes needs each process's share of every batch "
                f"(e.g. CacheBatches(..., rank={self.rank}, world_size={self.world_size})); the data has "
                f"rank={got[0]}, world_size={got[1]}"
            )

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (every rank must call this at the same point)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def average(self, scalars: dict[str, float]) -> dict[str, float]:
        """The mean over the ranks of each scalar (the same keys on every rank; every rank must call this)."""
        keys = list(scalars)  # the same order on every rank (the same LossOutput fields)
        t = torch.tensor([float(scalars[k]) for k in keys], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return dict(zip(keys, (t / self.world_size).tolist(), strict=True))

    def barrier(self) -> None:
        if self.comm_device.type == "cuda":
            dist.barrier(device_ids=[self.comm_device.index])
        else:
            dist.barrier()


def current() -> DataParallel | None:
    """The process group this process belongs to, or None when ``torch.distributed`` is not initialised or has a
    single process (then training runs exactly as without it)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    if dist.get_backend() == "nccl":
        comm = torch.device("cuda", torch.cuda.current_device())
    else:
        comm = torch.device("cpu")
    return DataParallel(rank=dist.get_rank(), world_size=dist.get_world_size(), comm_device=comm)


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the variables ``torchrun`` sets (``(0, 1, 0)`` without them).

    Raises:
        ValueError: the variables are not integers or are inconsistent.
    """
    try:
        rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1),
                                                                     ("LOCAL_RANK", 0)))  # fmt: skip
    except ValueError as err:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({err})") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return rank, world, local


def init_from_env(device: str) -> tuple[DataParallel | None, str]:
    """Join the process group ``torchrun`` describes, when it describes more than one process.

    Args:
        device: the training device asked for (``"cpu"`` or ``"cuda"``/``"cuda:i"``).

    Returns:
        ``(group, device)``: the :class:`DataParallel` (None for a single process, nothing initialised) and this
        rank's device: ``cuda:LOCAL_RANK`` when ``device`` is CUDA (made current), else ``device``.

    Raises:
        ValueError: a CUDA device with fewer GPUs than ``LOCAL_RANK`` needs.
    """
    rank, world, local = env_world()
    if world == 1:
        return None, device
    if torch.device(device).type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} needs GPU {local}, but torch sees {torch.cuda.device_count()}; "
                             "start at most one process per GPU (torchrun --nproc-per-node)")  # fmt: skip
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return current(), device


def shutdown(group: DataParallel | None, *, wait: bool = True) -> None:
    """Wait for every rank (rank 0 may still be writing the final weights; ``wait=False`` after an error, when the
    other ranks may never arrive), then leave the process group."""
    if group is not None and dist.is_initialized():
        if wait:
            group.barrier()
        dist.destroy_process_group()
