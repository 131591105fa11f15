"""Spread and significance of a point's trial values: the numbers every result is shown with.

A point is measured ``n`` times (its trials). :func:`summarize` reduces the trial values to
``n``, the mean, the sample standard deviation (``ddof=1``) and the coefficient of variation
``cv = sd / mean``; a point is *noisy* when its CV exceeds :data:`DEFAULT_CV_THRESHOLD`.

:func:`welch_test` asks whether two points' means differ (Welch's unequal-variance t-test,
two-sided, on the raw trial values). It needs at least two trials on each side; with fewer
there is no p-value and the difference is never called significant. When both sides have
zero variance the answer is exact: p = 1 for equal means, p = 0 for different ones.

:func:`adjust_p_values` applies the Benjamini-Hochberg step-up adjustment to a family of
p-values (one per compared point). When no point really changed (a rerun of identical
code) it bounds the chance of *any* false "significant" at alpha, however many points are
compared; when many points really changed it keeps nearly the per-point power.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy.stats import t as _t_distribution

# pyperf warns "the benchmark result may be unstable" when the standard deviation is 10 % of
# the mean or more; llama-bench users read the same +- column. Above 10 % a 5 % regression
# gate cannot tell a change from noise with a handful of trials, so such points are flagged.
DEFAULT_CV_THRESHOLD = 0.10
DEFAULT_ALPHA = 0.05  # significance level of the compare gate (family-wise, see the docstring)
MIN_TRIALS_FOR_TEST = 2  # a sample standard deviation needs two values


@dataclass(frozen=True)
class Summary:
    """Trial values of one point: count, mean, sample sd (NaN for n < 2), CV (NaN if unknown)."""

    n: int
    mean: float
    sd: float
    cv: float

    def noisy(self, threshold: float = DEFAULT_CV_THRESHOLD) -> bool:
        """True when the CV is known and above ``threshold`` (n < 2 is never noisy)."""
        return is_noisy(self.cv, threshold)


@dataclass(frozen=True)
class Significance:
    """Welch's test of two points: ``p_value`` (None when no test was possible) and why."""

    p_value: float | None
    reason: str  # "Welch's t-test", "identical values on both sides", "too few trials ..."

    def significant(self, alpha: float = DEFAULT_ALPHA) -> bool:
        """True only when a test was possible and its p-value is at most ``alpha``."""
        return self.p_value is not None and self.p_value <= alpha


def _finite(values: Iterable[float]) -> list[float]:
    out = []
    for value in values:
        number = float(value)
        if math.isfinite(number):
            out.append(number)
    return out


def summarize(values: Iterable[float]) -> Summary:
    """n, mean, sample sd (ddof=1) and cv = sd / mean of ``values`` (NaN/inf are dropped).

    n = 0 gives NaN mean; n = 1 gives NaN sd and cv (spread unknown, not zero); a mean of
    0 gives NaN cv.
    """
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    mean = math.fsum(xs) / n
    if n < MIN_TRIALS_FOR_TEST:
        return Summary(n, mean, math.nan, math.nan)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    cv = sd / abs(mean) if mean != 0 else math.nan
    return Summary(n, mean, sd, cv)


def is_noisy(cv: float, threshold: float = DEFAULT_CV_THRESHOLD) -> bool:
    """True when ``cv`` is a number above ``threshold``; an unknown CV (NaN) is not flagged."""
    return cv is not None and not math.isnan(cv) and cv > threshold


def welch_test(a: Iterable[float], b: Iterable[float]) -> Significance:
    """Two-sided Welch's t-test of mean(b) != mean(a) on the trial values ``a`` and ``b``."""
    xs, ys = _finite(a), _finite(b)
    if len(xs) < MIN_TRIALS_FOR_TEST or len(ys) < MIN_TRIALS_FOR_TEST:
        return Significance(
            None,
            f"too few trials (n={len(xs)} vs {len(ys)}; a test needs >= "
            f"{MIN_TRIALS_FOR_TEST} on each side)",
        )
    sa, sb = summarize(xs), summarize(ys)
    if sa.sd == 0 and sb.sd == 0:
        same = sa.mean == sb.mean
        return Significance(1.0 if same else 0.0, "identical values on both sides")
    # Welch's t and Welch-Satterthwaite degrees of freedom from the exact summaries (what
    # scipy.stats.ttest_ind(equal_var=False) computes, without its near-constant warnings).
    va, vb = sa.sd**2 / sa.n, sb.sd**2 / sb.n
    t = (sb.mean - sa.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    p_value = float(min(1.0, 2.0 * _t_distribution.sf(abs(t), df)))
    return Significance(p_value, "Welch's t-test")


def adjust_p_values(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values, in the input order (each in [0, 1]).

    A point is significant at level alpha when its adjusted p-value is at most alpha; with
    one p-value the adjustment changes nothing.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):  # largest p first: q_(k) = min over j >= k of p_(j) m / j
        index = order[rank - 1]
        running = min(running, p_values[index] * m / rank)
        adjusted[index] = min(running, 1.0)
    return adjusted
