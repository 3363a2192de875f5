"""Tests of accuracy–ε and accuracy–distortion curves."""

import jax
import numpy as np
import pytest

import evaluation_testlib as tl
from robustjax import evaluation as ev


def _brute(c, a, d, t):
    return np.array([np.mean([c[n] and (a[n] or d[n] > tt) for n in range(len(c))]) for tt in t])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_at_distortion_matches_loop_monotone_and_limits(seed):
    rng = np.random.default_rng(seed)
    n = 50
    c = rng.random(n) < 0.8
    a = rng.random(n) < 0.4
    d = rng.exponential(1.0, n).round(2) + 0.01  # ties included, all positive
    curve = ev.accuracy_at_distortion(c, a, d)
    t, acc = curve
    assert isinstance(curve, ev.Curve)
    assert t[0] == 0.0 and t[-1] == np.inf and np.all(np.diff(t) > 0)
    np.testing.assert_allclose(acc, _brute(c, a, d, t), atol=1e-12)
    assert np.all(np.diff(acc) <= 0)  # a larger budget never helps the model
    assert acc[0] == pytest.approx(c.mean())  # t = 0: every successful attack needs d > 0
    assert acc[-1] == pytest.approx((c & a).mean())  # t = inf: the unbounded attack
    tt = np.array([0.5, 0.1, 3.0, np.inf, 0.0])  # unsorted user thresholds
    np.testing.assert_allclose(ev.accuracy_at_distortion(c, a, d, thresholds=tt).accuracy,
                               _brute(c, a, d, tt), atol=1e-12)


def test_accuracy_at_distortion_bad_input():
    c = np.ones(3, bool)
    with pytest.raises(ValueError, match="same shape"):
        ev.accuracy_at_distortion(c, c[:2], np.ones(3))
    with pytest.raises(ValueError, match="distortion"):
        ev.accuracy_at_distortion(c, c, np.ones((3, 1)))
    with pytest.raises(ValueError, match="thresholds"):
        ev.accuracy_at_distortion(c, c, np.ones(3), thresholds=[np.nan])


def test_accuracy_vs_distortion_with_model_and_partial_batches():
    x, y = tl.random_data(20, 13)
    w, b = tl.random_linear(21)
    f = tl.linear_logits_fn(w, b)
    # a "minimum-norm attack" stand-in: move each example towards a fixed image by a
    # per-example fraction, giving varied l2 distortions and a mix of successes and failures
    target = np.full(tl.SHAPE, 0.9, np.float32)
    s = np.linspace(0.0, 1.0, 13, dtype=np.float32)[:, None, None, None]
    x_adv = (1 - s) * x + s * target
    c = tl.np_logits(w, b, x).argmax(-1) == y
    a = tl.np_logits(w, b, x_adv).argmax(-1) == y
    assert 0 < np.count_nonzero(c & ~a) < np.count_nonzero(c)  # some fooled, some not
    for norm in ("l2", "linf"):
        dd = (x_adv - x).reshape(13, -1)
        d = np.linalg.norm(dd, axis=-1) if norm == "l2" else np.abs(dd).max(-1)
        t, acc = ev.accuracy_vs_distortion(f, x, y, x_adv, norm=norm, batch_size=5)
        ref_t, ref_acc = ev.accuracy_at_distortion(c, a, d)
        np.testing.assert_allclose(t, ref_t, rtol=1e-5)
        np.testing.assert_allclose(acc, ref_acc, atol=1e-12)
        assert np.all(np.diff(acc) <= 0)
        assert acc[-1] == pytest.approx((c & a).mean())
    with pytest.raises(ValueError, match="x_adv"):
        ev.accuracy_vs_distortion(f, x, y, x_adv[:3])
    with pytest.raises(ValueError, match="norm"):
        ev.accuracy_vs_distortion(f, x, y, x_adv, norm="l1")


def _binary_linf_robust_reference(w, b, x, y, eps):
    """Exact ℓ∞ robustness of a 2-class linear model on the box [0, 1] (closed form)."""
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
    xf = x.reshape(len(x), -1).astype(np.float64)
    sgn = np.where(y == 1, 1.0, -1.0)[:, None]
    v = sgn * (w[:, 1] - w[:, 0])[None]  # margin gradient, per example
    c = sgn[:, 0] * (b[1] - b[0])
    margin = np.sum(v * xf, -1) + c
    # worst case: coordinates with v > 0 move down to max(x - eps, 0), v < 0 up to min(x+eps, 1)
    worst = np.where(v > 0, np.maximum(xf - eps, 0.0), np.minimum(xf + eps, 1.0))
    worst_margin = np.sum(v * worst, -1) + c
    return (margin > 0) & (worst_margin > 0)


def test_accuracy_vs_eps_matches_closed_form_for_binary_linear_model():
    x, y = tl.random_data(22, 30, k=2)
    w, b = tl.random_linear(23, k=2)
    f = tl.linear_logits_fn(w, b)
    eps = [0.0, 0.02, 0.05, 0.1]
    curve = ev.accuracy_vs_eps(f, x, y, lambda e: tl.fgsm(f, e), eps, key=jax.random.key(0),
                               batch_size=16)
    np.testing.assert_allclose(curve.x, eps)
    ref = [_binary_linf_robust_reference(w, b, x, y, e).mean() for e in eps]
    np.testing.assert_allclose(curve.accuracy, ref, atol=1e-12)
    assert curve.accuracy[0] == pytest.approx((tl.np_logits(w, b, x).argmax(-1) == y).mean())
    assert np.all(np.diff(curve.accuracy) <= 0)
    assert curve.accuracy[-1] < curve.accuracy[0]  # the attack does something
    with pytest.raises(ValueError, match="eps_values"):
        ev.accuracy_vs_eps(f, x, y, lambda e: tl.noop, [], key=jax.random.key(0))
    with pytest.raises(ValueError, match="eps_values"):
        ev.accuracy_vs_eps(f, x, y, lambda e: tl.noop, [-1.0], key=jax.random.key(0))
