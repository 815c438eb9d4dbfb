"""Synthetic paired activations from a known dictionary (shared, timing-shifted, direction-shifted and exclusive
features), the scores that compare a trained crosscoder with that ground truth, and the robustness grid of issue 15
(:mod:`tiedlib.synthetic.grid`)."""

from tiedlib.synthetic.benchmark import (
    ETAS,
    KINDS,
    SyntheticConfig,
    SyntheticData,
    evaluate_crosscoder,
    make_synthetic,
)
from tiedlib.synthetic.grid import ARCHS, GRID_SCALES, recommend, run_grid, summarize

__all__ = [
    "ARCHS", "ETAS", "GRID_SCALES", "KINDS", "SyntheticConfig", "SyntheticData", "evaluate_crosscoder",
    "make_synthetic", "recommend", "run_grid", "summarize",
]  # fmt: skip
