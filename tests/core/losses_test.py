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
            losses.cw_loss(z, y, kappa=0.0, targeted=True)[i], max(-m, 0.0), atol=1e-6)
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
