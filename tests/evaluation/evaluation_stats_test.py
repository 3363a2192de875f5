import math

import numpy as np
import pytest
from scipy import stats

from robustjax import evaluation


@pytest.mark.parametrize("s,n", [(0, 10), (3, 16), (9, 16), (50, 100), (772, 1000), (100, 100)])
def test_wilson_matches_statsmodels_formula_and_covers_p_hat(s, n):
    lo, hi = evaluation.wilson_interval(s, n)
    # Independent check: the Wilson bounds are the roots in p of (p_hat - p)^2 = z^2 p(1-p)/n.
    z = stats.norm.ppf(0.975)
    p_hat = s / n
    for bound in (lo, hi):
        if 0.0 < bound < 1.0:
            assert math.isclose((p_hat - bound) ** 2, z * z * bound * (1 - bound) / n,
                                rel_tol=1e-5, abs_tol=1e-12)
    assert lo <= p_hat <= hi
    assert 0.0 <= lo < hi <= 1.0


def test_wilson_coverage_close_to_nominal():
    rng = np.random.default_rng(0)
    n, p = 64, 0.9
    draws = rng.binomial(n, p, size=4000)
    covered = np.mean([lo <= p <= hi for lo, hi in (evaluation.wilson_interval(d, n) for d in draws)])
    assert 0.92 <= covered <= 0.98


def test_mcnemar_matches_scipy_binomtest():
    a = np.array([1] * 40 + [0] * 30 + [1] * 5 + [0] * 25, bool)
    b = np.array([1] * 40 + [0] * 30 + [0] * 5 + [1] * 25, bool)
    out = evaluation.mcnemar_exact(a, b)
    assert (out["n01"], out["n10"]) == (25, 5)
    ref = stats.binomtest(5, 30, 0.5).pvalue
    assert math.isclose(out["p_value"], ref, rel_tol=1e-9)
    assert evaluation.mcnemar_exact(a, a)["p_value"] == 1.0


def test_format_accuracy_and_bad_input():
    assert evaluation.format_accuracy(50, 100).startswith("50.0 [")
    with pytest.raises(ValueError, match="successes"):
        evaluation.wilson_interval(11, 10)
    with pytest.raises(ValueError, match="n"):
        evaluation.wilson_interval(1, -1)
    with pytest.raises(ValueError, match="a and b"):
        evaluation.mcnemar_exact([1, 0], [1])
