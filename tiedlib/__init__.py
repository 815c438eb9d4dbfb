"""tiedlib: standard and tied crosscoders for diffing a chat model against its base model."""

from tiedlib import lab  # noqa: E402  (subpackage, after the names it uses)
from tiedlib.activations.batches import DataExhaustedError, InMemoryBatches
from tiedlib.activations.buffer import ActivationBuffer
from tiedlib.activations.harvest import HarvestBatch, check_pair, estimate_norm_factors, harvest, harvest_all
from tiedlib.config import BASE, CHAT, GROUP_NAMES, CrosscoderConfig, RunConfig, TrainConfig
from tiedlib.crosscoders.checkpoints import load_crosscoder
from tiedlib.crosscoders.crosscoder import (
    Crosscoder,
    CrosscoderOutput,
    LossOutput,
    StandardCrosscoder,
    TiedCrosscoder,
    make_crosscoder,
)
from tiedlib.pairs import ModelPair, load_pair
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
    "ModelPair",
    "RunConfig",
    "StandardCrosscoder",
    "TiedCrosscoder",
    "TrainConfig",
    "lab",
    "load_crosscoder",
    "load_pair",
    "make_crosscoder",
    "read_metrics",
    "resume",
    "train",
    "train_step",
]
