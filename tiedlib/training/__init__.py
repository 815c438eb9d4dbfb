"""Stage 4: training crosscoders, with checkpoints that resume exactly.

- :mod:`~tiedlib.training.loop`: ``train``, ``train_many`` (several crosscoders on one activation stream),
  ``resume``, ``resume_many``, ``train_step``, the paper's schedules;
- :mod:`~tiedlib.training.cached`: ``train_or_load``, ``train_crosscoder`` (train once, load afterwards);
- :mod:`~tiedlib.training.runtime`: SIGINT/SIGTERM handling and the TF32 switch;
- :mod:`~tiedlib.training.rundir`: run directories (checkpoints, metrics, final weights);
- :mod:`~tiedlib.training.distributed`: data-parallel training on ``torch.distributed`` (DDP; ``torchrun``), used by
  the loop when a process group of several processes is initialised.
"""

from tiedlib.config import TrainConfig  # re-exported: tiedlib.training has always offered it
from tiedlib.training.cached import train_crosscoder, train_or_load
from tiedlib.training.loop import (
    TrainingInterrupted,
    apply_update,
    compute_gradients,
    l1_coeff_at,
    lr_factor_at,
    make_optimizer,
    resume,
    resume_many,
    train,
    train_many,
    train_step,
)
from tiedlib.training.rundir import (
    CHECKPOINTS,
    METRICS_NAME,
    STATE_NAME,
    TRAIN_CONFIG_NAME,
    checkpoint_dir,
    checkpoint_nbytes,
    find_checkpoint,
    is_finished,
    list_checkpoints,
    read_metrics,
)

__all__ = [
    "CHECKPOINTS",
    "METRICS_NAME",
    "STATE_NAME",
    "TRAIN_CONFIG_NAME",
    "TrainConfig",
    "TrainingInterrupted",
    "apply_update",
    "checkpoint_dir",
    "checkpoint_nbytes",
    "compute_gradients",
    "find_checkpoint",
    "is_finished",
    "l1_coeff_at",
    "list_checkpoints",
    "lr_factor_at",
    "make_optimizer",
    "read_metrics",
    "resume",
    "resume_many",
    "train",
    "train_crosscoder",
    "train_many",
    "train_or_load",
    "train_step",
]
