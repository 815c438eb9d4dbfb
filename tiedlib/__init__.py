"""tiedlib: standard and tied crosscoders for diffing a chat model against its base model."""

from tiedlib.activations import HarvestBatch, check_pair, estimate_norm_factors, harvest, harvest_all
from tiedlib.batches import DataExhaustedError, InMemoryBatches
from tiedlib.buffer import ActivationBuffer
from tiedlib.checkpoints import load_crosscoder
from tiedlib.config import BASE, CHAT, GROUP_NAMES, CrosscoderConfig, RunConfig, TrainConfig
from tiedlib.crosscoder import (
    Crosscoder,
    CrosscoderOutput,
    LossOutput,
    StandardCrosscoder,
    TiedCrosscoder,
    make_crosscoder,
)
from tiedlib.training import read_metrics, resume, train, train_step

__all__ = [
    "ActivationBuffer",
    "HarvestBatch",
    "check_pair",
    "estimate_norm_factors",
    "harvest",
    "harvest_all",
    "BASE",
    "CHAT",
    "GROUP_NAMES",
    "Crosscoder",
    "CrosscoderConfig",
    "CrosscoderOutput",
    "DataExhaustedError",
    "InMemoryBatches",
    "LossOutput",
    "RunConfig",
    "StandardCrosscoder",
    "TiedCrosscoder",
    "TrainConfig",
    "load_crosscoder",
    "make_crosscoder",
    "read_metrics",
    "resume",
    "train",
    "train_step",
]
