"""Stage 2: paired activations of a model pair: nnsight harvesting (:mod:`.harvest`), the refreshing buffer for long
runs (:mod:`.buffer`), in-memory batches (:mod:`.batches`) and whole-sample collection for small scales
(:mod:`.collect`)."""

from tiedlib.activations.batches import DataExhaustedError, InMemoryBatches
from tiedlib.activations.buffer import ActivationBuffer
from tiedlib.activations.collect import PairActivations, collect_activations, training_data
from tiedlib.activations.harvest import HarvestBatch, check_pair, estimate_norm_factors, harvest_all

__all__ = [
    "ActivationBuffer",
    "DataExhaustedError",
    "HarvestBatch",
    "InMemoryBatches",
    "PairActivations",
    "check_pair",
    "collect_activations",
    "estimate_norm_factors",
    "harvest_all",
    "training_data",
]
