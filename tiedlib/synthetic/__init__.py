"""Synthetic paired activations from a known dictionary (shared, timing-shifted, direction-shifted and exclusive
features) and the scores that compare a trained crosscoder with that ground truth."""

from tiedlib.synthetic.benchmark import (
    ETAS,
    KINDS,
    SyntheticConfig,
    SyntheticData,
    evaluate_crosscoder,
    make_synthetic,
)

__all__ = ["ETAS", "KINDS", "SyntheticConfig", "SyntheticData", "evaluate_crosscoder", "make_synthetic"]
