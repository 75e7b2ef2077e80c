"""The statistics of the analysis, exact and dependency-free.

- accuracy intervals: Wilson score interval (95 %);
- paired comparisons of two cells on the same (question, seed) pairs: the exact
  McNemar test, i.e. a binomial sign test on the discordant pairs (those one cell got
  right and the other wrong), one- or two-sided;
- multiple comparisons: Holm's step-down procedure (controls the family-wise error rate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "holm",
    "mcnemar_greater",
    "mcnemar_two_sided",
    "percentile",
    "wilson_interval",
]


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95 % by default); (0, 1) for none."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _tail_at_least(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return float(sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n)


def mcnemar_greater(b: int, c: int) -> float:
    """One-sided exact McNemar p-value that ``b`` discordant pairs (A right, B wrong)
    outnumber ``c`` (A wrong, B right) by more than chance: P(X >= b), X ~ Bin(b+c, 1/2).
    1.0 without discordant pairs."""
    return _tail_at_least(b, b + c)


def mcnemar_two_sided(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value (twice the smaller tail, at most 1)."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * _tail_at_least(max(b, c), n))


def holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Which hypotheses Holm's procedure rejects at family-wise error rate ``alpha``."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    m = len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear interpolation; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
