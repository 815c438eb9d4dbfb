"""Mean over seeds, its 95% t interval and the verdict a page may state from it."""

import math

import pytest

from tiedlib.analysis.stats import INCONCLUSIVE, Interval, t_critical, t_interval, verdict


def test_t_interval_by_hand():
    # mean 2, sample sd 1, n 3: half-width 4.303 / sqrt(3)
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.mean == pytest.approx(2.0) and iv.n == 3
    assert iv.high - iv.mean == pytest.approx(4.303 / math.sqrt(3))
    assert iv.text(2) == "2.00 [-0.48, 4.48] (3 seeds)"


def test_t_critical_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 10, 30):
        assert t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-3)
    assert t_critical(200) == pytest.approx(stats.t.ppf(0.975, 200), rel=0.02)


def test_nan_seeds_are_dropped_and_one_value_has_no_interval():
    iv = t_interval([0.5, math.nan])
    assert iv.n == 1 and math.isnan(iv.low) and "no interval" in iv.text()
    assert verdict(iv, above="up", below="down") == INCONCLUSIVE
    with pytest.raises(ValueError, match="no finite value"):
        t_interval([math.nan])
    with pytest.raises(ValueError, match="degree of freedom"):
        t_critical(0)


def test_verdict_names_a_direction_only_when_the_interval_excludes_the_null():
    assert verdict(Interval(0.3, 0.1, 0.5, 3), above="up", below="down") == "up"
    assert verdict(Interval(-0.3, -0.5, -0.1, 3), above="up", below="down") == "down"
    assert verdict(Interval(0.3, -0.1, 0.7, 3), above="up", below="down") == INCONCLUSIVE
    assert verdict(Interval(0.9, 0.8, 1.0, 3), 0.85, above="up", below="down") == INCONCLUSIVE
    # a tight spread of the same mean is conclusive where a wide one is not
    assert verdict(t_interval([0.30, 0.31, 0.29]), above="up", below="down") == "up"
    assert verdict(t_interval([0.9, -0.2, 0.2]), above="up", below="down") == INCONCLUSIVE
