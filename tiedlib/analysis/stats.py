"""Means over seeds with a Student-t interval, and the verdict a page may state from such an interval.

A figure from one crosscoder (one initialisation, one data order) cannot carry a conclusion at the tiny scale: the
notebooks train a few seeds of the compared crosscoders, take a 95% t interval of the per-seed values (or of the
per-seed differences, for a comparison), and :func:`verdict` names a direction only when the interval excludes the
null value; otherwise it says :data:`INCONCLUSIVE`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

INCONCLUSIVE = "inconclusive at this scale"
"""What :func:`verdict` returns when the interval contains the null value (or cannot be computed)."""

# Two-sided 95% critical values t_{0.975, df} of Student's t distribution, df = 1..30 (any printed t table, e.g.
# NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.6.7.2); above 30 the normal 1.96 is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_critical(df: int) -> float:
    """``t_{0.975, df}``: the half-width of a 95% interval in standard errors (table for df <= 30, else 1.96)."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom (2 values), got df={df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` per-seed values and its 95% t interval ``[low, high]`` (NaN bounds when ``n < 2``)."""

    mean: float
    low: float
    high: float
    n: int

    def excludes(self, value: float) -> bool:
        """Whether the whole interval lies strictly on one side of ``value`` (False when a bound is NaN)."""
        return self.low > value or self.high < value

    def text(self, digits: int = 3) -> str:
        """``"0.431 [0.380, 0.482] (3 seeds)"``; ``"0.431 (1 seed, no interval)"`` when ``n < 2``."""
        if self.n < 2 or math.isnan(self.low):
            return f"{self.mean:.{digits}f} ({self.n} seed, no interval)"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}] ({self.n} seeds)"


def t_interval(values: Sequence[float]) -> Interval:
    """Mean and 95% Student-t interval of ``values`` (one per seed): ``mean +- t_{0.975, n-1} * s / sqrt(n)`` with
    ``s`` the sample standard deviation (n - 1 in the denominator). NaN values (a seed where the quantity is
    undefined, e.g. no latent in a category) are dropped, and ``n`` counts the rest.

    Raises:
        ValueError: ``values`` is empty or all NaN.
    """
    kept = [float(v) for v in values if not math.isnan(float(v))]
    if not kept:
        raise ValueError(f"no finite value to average among {list(values)}")
    n = len(kept)
    mean = sum(kept) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))
    half = t_critical(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def verdict(interval: Interval, null: float = 0.0, *, above: str, below: str) -> str:
    """``above`` when the interval lies entirely above ``null``, ``below`` when entirely below, otherwise
    :data:`INCONCLUSIVE` (also when there is no interval, i.e. fewer than 2 seeds)."""
    if interval.low > null:
        return above
    if interval.high < null:
        return below
    return INCONCLUSIVE
