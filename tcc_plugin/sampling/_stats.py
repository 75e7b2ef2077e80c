"""Small numerical helpers: incomplete beta and gamma functions, the posterior
probability that the leading answer is the true majority, and latency summaries.

Pure Python (no numpy/scipy), deterministic, accurate to ~1e-9 for the beta and gamma
functions, and the Dirichlet probability (a quadrature) to ~1e-8.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = [
    "beta_leader_probability",
    "betainc",
    "dirichlet_leader_probability",
    "gammainc",
    "latency_summary",
    "predictive_leader_probability",
]

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 500


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITER + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError("betainc needs a > 0 and b > 0")
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def gammainc(a: float, x: float) -> float:
    """The regularised lower incomplete gamma function P(a, x), for a > 0, x >= 0."""
    if a <= 0:
        raise ValueError("gammainc needs a > 0")
    if x <= 0:
        return 0.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:  # series
        term = total = 1.0 / a
        ap = a
        for _ in range(_MAX_ITER):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return min(1.0, total * math.exp(log_front))
    # continued fraction for Q(a, x) (modified Lentz)
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER + 1):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return max(0.0, 1.0 - math.exp(log_front) * h)


def beta_leader_probability(leader: float, runner_up: float, prior: float = 1.0) -> float:
    """P(p_leader > p_runner_up) with p_leader / (p_leader + p_runner_up) ~
    Beta(leader + prior, runner_up + prior): Adaptive-Consistency's Beta criterion."""
    # P(X > 1/2) for X ~ Beta(a, b) is I_{1/2}(b, a).
    return betainc(runner_up + prior, leader + prior, 0.5)


def dirichlet_leader_probability(
    votes: Sequence[float], prior: float = 1.0, *, intervals: int = 600
) -> float:
    """P(the first answer has the largest probability) under a Dirichlet posterior
    Dir(votes + prior) over the answers seen (Adaptive-Consistency's Dirichlet rule).

    With independent G_i ~ Gamma(a_i = votes_i + prior), it is P(G_0 > G_j for all j):
    the integral of G_0's density times prod_j P(a_j, x). It is computed by Simpson's
    rule in s = ln x, where the integrand x**a_0 e**-x prod_j P(a_j, x) / Gamma(a_0) is
    smooth even for small shapes (near 0, P(a, x) ~ x**a).
    """
    if not votes:
        raise ValueError("no votes")
    alphas = [v + prior for v in votes]
    if min(alphas) <= 0:
        raise ValueError("votes + prior must be > 0")
    if len(alphas) == 1:
        return 1.0
    a0, others = alphas[0], alphas[1:]
    log_norm = math.lgamma(a0)
    # Below s_lo the integrand is under e**-45; above s_hi, G_0's tail is negligible.
    s_lo = min(-1.0, -45.0 / sum(alphas))
    s_hi = math.log(a0 + 12.0 * math.sqrt(a0) + 12.0)

    def f(s: float) -> float:
        x = math.exp(s)
        value = math.exp(a0 * s - x - log_norm)
        for a in others:
            value *= gammainc(a, x)
            if value == 0.0:
                break
        return value

    n = intervals + intervals % 2
    h = (s_hi - s_lo) / n
    total = f(s_lo) + f(s_hi)
    for i in range(1, n):
        total += (4.0 if i % 2 else 2.0) * f(s_lo + i * h)
    return min(1.0, max(0.0, total * h / 3.0))


def predictive_leader_probability(
    leader: float,
    runner_up: float,
    others: float,
    remaining: int,
    prior: float = 1.0,
    weight: float = 1.0,
) -> float:
    """P(the leader still strictly leads once ``remaining`` more samples have voted).

    The votes fall into three categories: the leader, the runner-up, and every other
    answer (merged, new answers included). Their shares have the posterior
    Dir(votes / weight + prior); the next ``remaining`` votes, each worth ``weight``,
    follow the Dirichlet-multinomial predictive, summed exactly over its
    (remaining + 1)(remaining + 2) / 2 outcomes. Conservative: a tie counts as a loss,
    and the merged others count as one competitor.
    """
    if remaining < 0 or not prior > 0 or not weight > 0:
        raise ValueError("remaining >= 0, prior > 0 and weight > 0")
    if leader - max(runner_up, others) > remaining * weight:
        return 1.0
    alphas = (leader / weight + prior, runner_up / weight + prior, others / weight + prior)
    lg = math.lgamma
    log_front = lg(remaining + 1) + lg(sum(alphas)) - lg(sum(alphas) + remaining)
    log_front -= sum(lg(a) for a in alphas)
    total = 0.0
    for x_leader in range(remaining + 1):
        final = leader + x_leader * weight
        for x_runner in range(remaining - x_leader + 1):
            x_others = remaining - x_leader - x_runner
            if final <= runner_up + x_runner * weight or final <= others + x_others * weight:
                continue
            total += math.exp(
                log_front
                - lg(x_leader + 1)
                - lg(x_runner + 1)
                - lg(x_others + 1)
                + lg(alphas[0] + x_leader)
                + lg(alphas[1] + x_runner)
                + lg(alphas[2] + x_others)
            )
    return min(1.0, max(0.0, total))


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    """min, median, max and sample standard deviation (0 for a single value)."""
    if not latencies:
        return {}
    return {
        "min": min(latencies),
        "median": statistics.median(latencies),
        "max": max(latencies),
        "stdev": statistics.stdev(latencies) if len(latencies) > 1 else 0.0,
    }
