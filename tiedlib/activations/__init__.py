"""Stage 2: paired activations of a model pair: nnsight harvesting (:mod:`.harvest`), the refreshing buffer for long
runs (:mod:`.buffer`), in-memory batches (:mod:`.batches`) and whole-sample collection for small scales
(:mod:`.collect`), and the paired activation cache on disk (:mod:`.cache`, read by :mod:`.cache_reader`)."""

from tiedlib.activations.batches import DataExhaustedError, InMemoryBatches
from tiedlib.activations.buffer import ActivationBuffer
from tiedlib.activations.cache import (
    ActivationCache,
    CacheCorruptError,
    CacheMismatchError,
    bytes_per_token,
    cache_size,
    finalize_cache,
    open_cache,
    write_cache,
)
from tiedlib.activations.cache_reader import CacheBatches, fan_out
from tiedlib.activations.collect import PairActivations, collect_activations, training_data
from tiedlib.activations.harvest import HarvestBatch, check_pair, estimate_norm_factors, harvest_all

__all__ = [
    "ActivationBuffer",
    "ActivationCache",
    "CacheBatches",
    "CacheCorruptError",
    "CacheMismatchError",
    "DataExhaustedError",
    "HarvestBatch",
    "InMemoryBatches",
    "PairActivations",
    "bytes_per_token",
    "cache_size",
    "check_pair",
    "collect_activations",
    "estimate_norm_factors",
    "fan_out",
    "finalize_cache",
    "harvest_all",
    "open_cache",
    "training_data",
    "write_cache",
]
