"""experiments.statistics: summaries by hand, Welch's test against scipy and hand-checked
numbers, too few trials, zero variance, and the Benjamini-Hochberg adjustment."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats

from experiments.statistics import (
    DEFAULT_CV_THRESHOLD,
    adjust_p_values,
    is_noisy,
    summarize,
    welch_test,
)


def test_summary_by_hand() -> None:
    s = summarize([10.0, 12.0, 14.0])  # mean 12, deviations -2 0 2: var 8/2 = 4, sd 2
    assert (s.n, s.mean, s.sd) == (3, 12.0, 2.0)
    assert s.cv == pytest.approx(2.0 / 12.0)
    assert s.noisy() and not s.noisy(threshold=0.2)
    steady = summarize([100.0, 101.0, 99.0])  # sd 1, cv 1 %
    assert steady.sd == pytest.approx(1.0) and not steady.noisy()


def test_summary_of_one_none_and_non_finite_values() -> None:
    one = summarize([5.0])
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.sd) and math.isnan(one.cv)
    assert not one.noisy()  # unknown spread is not called noisy
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.mean)
    assert summarize([4.0, float("nan"), 6.0, float("inf")]) == summarize([4.0, 6.0])
    zero_mean = summarize([-1.0, 1.0])
    assert zero_mean.mean == 0.0 and math.isnan(zero_mean.cv)


def test_identical_values_have_zero_spread() -> None:
    s = summarize([7.0, 7.0, 7.0])
    assert s.sd == 0.0 and s.cv == 0.0 and not s.noisy()


def test_threshold_is_exclusive_and_nan_is_not_noisy() -> None:
    assert DEFAULT_CV_THRESHOLD == 0.10
    assert not is_noisy(0.10) and is_noisy(0.1001)
    assert not is_noisy(float("nan"))


def test_welch_hand_checked() -> None:
    # means 2 and 5, both variances 1, n 3: t = 3 / sqrt(2/3) = 3.674, df = 4, p = 0.0213
    result = welch_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert result.p_value == pytest.approx(0.02131, abs=5e-5)
    assert result.reason == "Welch's t-test"
    assert result.significant(0.05) and not result.significant(0.01)


@pytest.mark.parametrize("seed", range(6))
def test_welch_matches_scipy(seed: int) -> None:
    rng = random.Random(seed)
    a = [rng.gauss(100, 5 + seed) for _ in range(3 + seed % 3)]
    b = [rng.gauss(95, 20) for _ in range(2 + seed % 4)]
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_test(a, b).p_value == pytest.approx(expected, rel=1e-9)
    assert welch_test(b, a).p_value == pytest.approx(expected, rel=1e-9)  # two-sided


def test_too_few_trials_means_no_test_and_never_significant() -> None:
    for a, b in (([1.0], [5.0, 6.0]), ([1.0, 2.0], [100.0]), ([], [1.0, 2.0])):
        result = welch_test(a, b)
        assert result.p_value is None
        assert result.reason.startswith("too few trials")
        assert not result.significant(1.0)


def test_zero_variance_sides() -> None:
    same = welch_test([3.0, 3.0], [3.0, 3.0, 3.0])
    assert same.p_value == 1.0 and not same.significant()
    different = welch_test([3.0, 3.0], [4.0, 4.0])
    assert different.p_value == 0.0 and different.significant()
    assert different.reason == "identical values on both sides"
    one_side = welch_test([10.0, 10.0, 10.0], [8.0, 9.0, 10.0])  # only one side constant
    assert 0.0 < one_side.p_value < 1.0 and one_side.reason == "Welch's t-test"


def test_benjamini_hochberg_by_hand_and_against_scipy() -> None:
    # sorted 0.01 0.02 0.03 0.5 (m = 4): p*m/rank = 0.04 0.04 0.04 0.5
    assert adjust_p_values([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.04, 0.5, 0.04, 0.04])
    assert adjust_p_values([0.2]) == [0.2]
    assert adjust_p_values([]) == []
    rng = random.Random(1)
    ps = [rng.random() ** 2 for _ in range(25)]
    expected = stats.false_discovery_control(ps, method="bh")
    assert adjust_p_values(ps) == pytest.approx(list(expected))
    assert all(q >= p for p, q in zip(ps, adjust_p_values(ps), strict=True))
