"""Issue 16: one sparsity scale across experiments (the paper's l1 = 2 at d_model 2304, scaled with sqrt(d_model))."""

from __future__ import annotations

import importlib

import pytest

from tiedlib.config import PAPER_L1, scaled_l1

LAB_CROSSCODER_EXPERIMENTS = ("exp1", "exp2", "exp4", "exp6", "exp7")
"""Experiments whose tiny preset trains a crosscoder on the tiny lab pair (d_model 128) with ``l1_coeff``."""


def test_scaled_l1_is_the_paper_value_at_paper_width_and_scales_with_sqrt_d():
    assert scaled_l1(2304) == PAPER_L1 == 2.0
    assert scaled_l1(128) == pytest.approx(2.0 * (128 / 2304) ** 0.5) == pytest.approx(0.4714, abs=1e-4)
    assert scaled_l1(4 * 128) == pytest.approx(2 * scaled_l1(128))
    with pytest.raises(ValueError, match="positive"):
        scaled_l1(0)


@pytest.mark.parametrize("exp", LAB_CROSSCODER_EXPERIMENTS)
def test_every_tiny_and_paper_preset_uses_the_one_scale(exp):
    table = importlib.import_module(f"tiedlib.experiments.{exp}.presets").TABLE
    assert table["tiny"].l1_coeff == pytest.approx(scaled_l1(128)), exp
    assert table["paper"].l1_coeff == pytest.approx(scaled_l1(2304)), exp
