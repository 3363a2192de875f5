import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from robustjax import losses


def _data(seed=0, n=6, k=5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)).astype(np.float32), rng.integers(0, k, n).astype(np.int32)


def test_cross_entropy_matches_scipy():
    z, y = _data()
    ref = -log_softmax(z, axis=-1)[np.arange(len(y)), y]
    np.testing.assert_allclose(losses.cross_entropy(z, y), ref, atol=1e-5)
    np.testing.assert_allclose(jax.jit(losses.cross_entropy)(z, y), ref, atol=1e-5)


def test_margin_and_cw_against_loop():
    z, y = _data(1)
    for i in range(len(y)):
        other = max(z[i, j] for j in range(z.shape[1]) if j != y[i])
        m = z[i, y[i]] - other
        np.testing.assert_allclose(losses.margin(z, y)[i], m, atol=1e-6)
        np.testing.assert_allclose(losses.cw_loss(z, y, kappa=0.5)[i], max(m, -0.5), atol=1e-6)
        np.testing.assert_allclose(
            losses.cw_loss(z, y, kappa=0.0, target=y)[i], max(-m, 0.0), atol=1e-6)
        np.testing.assert_allclose(losses.hinge(z, y)[i], max(0.0, 1 - m), atol=1e-6)


def test_trades_kl_nonnegative_and_zero_on_equal():
    z, _ = _data(2)
    z2, _ = _data(3)
    kl = losses.trades_kl(z2, z)
    assert kl.shape == (6,)
    assert np.all(np.asarray(kl) >= -1e-6)
    np.testing.assert_allclose(losses.trades_kl(z, z), 0.0, atol=1e-6)
    p = np.exp(log_softmax(z, -1))
    ref = np.sum(p * (log_softmax(z, -1) - log_softmax(z2, -1)), -1)
    np.testing.assert_allclose(kl, ref, atol=1e-5)


def test_vmap_and_grad():
    z, y = _data(4)
    batched = jax.vmap(losses.cross_entropy)(z[None].repeat(3, 0), y[None].repeat(3, 0))
    np.testing.assert_allclose(batched[1], losses.cross_entropy(z, y), atol=1e-6)
    g = jax.grad(lambda l: losses.cross_entropy(l, y).sum())(z)
    p = np.exp(log_softmax(z, -1))
    p[np.arange(len(y)), y] -= 1
    np.testing.assert_allclose(g, p, atol=1e-5)


@pytest.mark.parametrize("bad", [
    lambda z, y: losses.cross_entropy(z[0], y),
    lambda z, y: losses.cross_entropy(z, y.astype(np.float32)),
    lambda z, y: losses.cross_entropy(z, y[:3]),
    lambda z, y: losses.cross_entropy(z, y + 10),
    lambda z, y: losses.cw_loss(z, y, kappa=-1.0),
])
def test_bad_input_raises(bad):
    z, y = _data()
    with pytest.raises(ValueError):
        bad(jnp.asarray(z), jnp.asarray(y))


def test_cross_entropy_accurate_on_saturated_logits():
    # Confident logits: the true loss is ~1e-9..1e-20, which the textbook float32
    # logsumexp(z) - z_y rounds to exactly 0 (with a zero gradient).
    z = np.array([[30.0, 5.0, -2.0, 1.0],
                  [0.0, 45.0, 12.0, 20.0],
                  [3.0, -1.0, 25.0, 24.0],
                  [17.5, 0.0, 0.0, 0.0]], np.float32)
    y = np.array([0, 1, 2, 0], np.int32)
    z64 = z.astype(np.float64)
    ref = np.log1p(np.array([sum(np.exp(z64[i, j] - z64[i, y[i]]) for j in range(4) if j != y[i])
                             for i in range(4)]))
    got = np.asarray(losses.cross_entropy(z, y))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    naive = np.asarray(jax.nn.logsumexp(jnp.asarray(z), axis=-1) - z[np.arange(4), y])
    assert np.sum(naive == 0) >= 2      # the failure this form avoids does occur in float32
    # The gradient wrt the logits is softmax - onehot; in float64 its off-label entries are
    # exp(z_j - logsumexp z) > 0, and the float32 gradient must keep them (relative 1e-4).
    g = np.asarray(jax.grad(lambda v: jnp.sum(losses.cross_entropy(v, y)))(z))
    p64 = np.exp(z64 - np.log(np.sum(np.exp(z64 - z64.max(1, keepdims=True)), 1, keepdims=True))
                 - z64.max(1, keepdims=True))
    p64[np.arange(4), y] -= 1.0
    off = np.ones_like(p64, bool)
    off[np.arange(4), y] = False
    np.testing.assert_allclose(g[off], p64[off], rtol=1e-4)
    assert np.all(g[off] > 0)


def test_cross_entropy_grad_matches_closed_form_softmax():
    z, y = _data(4)
    g = np.asarray(jax.grad(lambda v: jnp.sum(losses.cross_entropy(v, y)))(z))
    z64 = z.astype(np.float64)
    ref = np.exp(z64) / np.exp(z64).sum(1, keepdims=True)
    ref[np.arange(len(y)), y] -= 1.0
    np.testing.assert_allclose(g, ref, atol=1e-5)


def _np_dlr(z, y):
    """Closed form written with NumPy's full sort (independent of the top_k implementation)."""
    z = np.asarray(z, np.float64)
    out = []
    for i in range(len(y)):
        s = np.sort(z[i])[::-1]
        other = np.max(np.delete(z[i], y[i]))
        out.append(-(z[i, y[i]] - other) / (s[0] - s[2] + 1e-12))
    return np.asarray(out)


def _np_dlr_t(z, y, t):
    z = np.asarray(z, np.float64)
    out = []
    for i in range(len(y)):
        s = np.sort(z[i])[::-1]
        out.append(-(z[i, y[i]] - z[i, t[i]]) / (s[0] - 0.5 * (s[2] + s[3]) + 1e-12))
    return np.asarray(out)


def test_dlr_losses_match_numpy_closed_form():
    z, y = _data(7, n=32, k=10)
    z = z * 3.0
    y[:8] = np.argmax(z[:8], -1)  # some correctly classified rows (numerator uses 2nd best)
    t = (y + 1 + np.arange(len(y)) % 9) % 10
    np.testing.assert_allclose(losses.dlr_loss(z, y), _np_dlr(z, y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda a, b, c: losses.dlr_targeted_loss(a, b, target=c))(z, y, t), _np_dlr_t(z, y, t),
                               rtol=1e-5, atol=1e-6)
    # Sign: positive iff misclassified (untargeted); targeted positive iff z_t > z_y.
    d = np.asarray(losses.dlr_loss(z, y))
    assert np.all((d > 0) == (np.argmax(z, -1) != y))
    dt = np.asarray(losses.dlr_targeted_loss(z, y, target=t))
    assert np.all((dt > 0) == (z[np.arange(32), t] > z[np.arange(32), y]))


def test_dlr_is_shift_and_scale_invariant():
    z, y = _data(8, n=16, k=10)
    t = (y + 3) % 10
    dlr_t = lambda zz, yy, tt: losses.dlr_targeted_loss(zz, yy, target=tt)  # noqa: E731
    for f, args in ((losses.dlr_loss, (y,)), (dlr_t, (y, t))):
        base = np.asarray(f(z, *args))
        np.testing.assert_allclose(f(7.0 * z + 2.5, *args), base, rtol=1e-4, atol=1e-5)


def test_dlr_bad_input():
    z, y = _data(0, k=3)
    with pytest.raises(ValueError, match="K >= 4"):
        losses.dlr_targeted_loss(z, y, target=(y + 1) % 3)
    with pytest.raises(ValueError, match="K >= 3"):
        losses.dlr_loss(z[:, :2], np.minimum(y, 1))
    z, y = _data(0, k=5)
    with pytest.raises(ValueError, match="target"):
        losses.dlr_targeted_loss(z, y, target=y + 5)
