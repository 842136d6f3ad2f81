"""Accuracy statistics: Wilson confidence intervals, Average@k and pass@k."""

from __future__ import annotations

import math
from statistics import NormalDist


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at 0 or n successes one end is exactly 0 or 1 (the formula leaves a rounding error there)
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def average_at_k(correct: list[list[bool]]) -> float:
    """Mean accuracy over each problem's k samples, then over problems."""
    return sum(sum(c) / len(c) for c in correct) / len(correct) if correct else 0.0


def pass_at_k(correct: list[list[bool]], k: int | None = None) -> float:
    """Unbiased pass@k (Chen et al. 2021) from n >= k samples per problem."""
    total = 0.0
    for c in correct:
        n, right = len(c), sum(c)
        kk = n if k is None else k
        if kk > n:
            raise ValueError(f"pass@{kk} needs at least {kk} samples per problem, got {n}")
        total += 1.0 if n - right < kk else 1.0 - math.comb(n - right, kk) / math.comb(n, kk)
    return total / len(correct) if correct else 0.0
