"""Confidence intervals and paired tests for accuracies measured on a finite test set.

Every reproduction reports accuracies with Wilson 95 % score intervals (Wilson, 1927), which keep
their coverage near 0 % and 100 % where the normal approximation collapses, and compares two
attacks on the *same* examples with McNemar's exact (binomial) test on the discordant pairs.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["wilson_interval", "format_accuracy", "mcnemar_exact"]


def _check_counts(successes, n):
    if not (isinstance(n, (int, np.integer)) and n >= 0):
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not (0 <= successes <= n):
        raise ValueError(f"successes must lie in [0, n={n}], got {successes!r}")


def wilson_interval(successes: int, n: int, *, z: float = 1.959964) -> tuple[float, float]:
    r"""Wilson score interval for a binomial proportion.

    .. math:: \frac{\hat p + \frac{z^2}{2n} \pm z\sqrt{\frac{\hat p(1-\hat p)}{n}
              + \frac{z^2}{4n^2}}}{1 + \frac{z^2}{n}}

    Args:
      successes: number of successes (e.g. correctly classified examples), ``0 ≤ s ≤ n``.
      n: number of trials. ``n = 0`` gives the uninformative ``(0, 1)``.
      z: normal quantile; the default gives a 95 % interval.

    Returns:
      ``(low, high)`` as fractions in ``[0, 1]``. Cost ``O(1)``.
    """
    successes = int(round(float(successes)))
    _check_counts(successes, n)
    if not (z > 0 and math.isfinite(z)):
        raise ValueError(f"z must be positive and finite, got {z!r}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def format_accuracy(successes: int, n: int, *, digits: int = 1) -> str:
    """``"97.1 [95.9, 98.0]"``: percentage with its Wilson 95 % interval."""
    lo, hi = wilson_interval(successes, n)
    p = 100.0 * successes / n if n else float("nan")
    return f"{p:.{digits}f} [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def mcnemar_exact(a, b) -> dict:
    """Exact two-sided McNemar test for paired binary outcomes ``a`` and ``b`` (same examples).

    Counts the discordant pairs ``n01`` (a false, b true) and ``n10`` (a true, b false) and
    returns the two-sided binomial p-value of ``min(n01, n10)`` under ``Binomial(n01 + n10,
    1/2)``. Cost ``O(N + n01 + n10)``.

    Returns:
      ``{"n01", "n10", "p_value"}``.
    """
    a = np.asarray(a).astype(bool)
    b = np.asarray(b).astype(bool)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be 1-D of equal length, got {a.shape} and {b.shape}")
    n01 = int(np.sum(~a & b))
    n10 = int(np.sum(a & ~b))
    m = n01 + n10
    if m == 0:
        return {"n01": 0, "n10": 0, "p_value": 1.0}
    k = min(n01, n10)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2.0 ** m
    return {"n01": n01, "n10": n10, "p_value": min(1.0, 2.0 * tail)}
