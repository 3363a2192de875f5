"""robustjax.implicit.hessian_spectral_norm / check_backward_learning_rate (Lemma 1: eta'||H||
<= 1)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import implicit

D, P = 6, 20


def _generator_loss(seed=0):
    """l(z; x) = mean (G(z) - x)^2 with a small tanh MLP generator: non-quadratic, indefinite H."""
    rng = np.random.default_rng(seed)
    w1 = jnp.asarray(rng.normal(size=(D, 16)) / np.sqrt(D), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(16, P)) * 2.0, jnp.float32)

    def loss(z, x):
        return jnp.mean((jnp.tanh(z @ w1) @ w2 - x) ** 2)

    return loss, rng


def test_power_iteration_matches_eigvalsh_batched():
    loss, rng = _generator_loss()
    z = jnp.asarray(rng.normal(size=(5, D)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(5, P)), jnp.float32)
    keys = jax.random.split(jax.random.key(0), 5)
    est = jax.jit(jax.vmap(lambda zi, xi, k: implicit.hessian_spectral_norm(
        loss, zi, xi, key=k, steps=100)))(z, x, keys)
    hess = np.asarray(jax.vmap(jax.hessian(loss))(z, x), np.float64)
    ref = np.abs(np.linalg.eigvalsh(hess)).max(axis=1)
    # The Rayleigh quotient is a lower bound that converges to ||H|| (float32 HVPs: ~1e-5 rel).
    np.testing.assert_allclose(np.asarray(est), ref, rtol=2e-3)
    assert np.all(np.asarray(est) <= ref * (1 + 1e-4))


def test_dominant_negative_eigenvalue_is_found():
    h = jnp.diag(jnp.array([-5.0, 2.0, 1.0, 0.5], jnp.float32))
    loss = lambda z: 0.5 * z @ h @ z  # noqa: E731
    est = implicit.hessian_spectral_norm(loss, jnp.ones(4), key=jax.random.key(1), steps=60)
    np.testing.assert_allclose(float(est), 5.0, rtol=1e-4)


def test_step_from_estimate_makes_neumann_series_converge():
    # Quadratic l(z, x) = 0.5 z'Az - z'Bx: the Lemma 1 series with eta' = 0.9/||H|| converges to
    # the implicit Jacobian A^{-1}B; with eta' = 2.5/||H|| it diverges (the check exists for this).
    rng = np.random.default_rng(3)
    m = rng.normal(size=(D, D))
    a = (m @ m.T + 0.5 * np.eye(D)).astype(np.float32)
    b = rng.normal(size=(D, 3)).astype(np.float32)
    loss = lambda z, x: 0.5 * z @ jnp.asarray(a) @ z - z @ (jnp.asarray(b) @ x)  # noqa: E731
    lam = float(implicit.hessian_spectral_norm(loss, jnp.zeros(D), jnp.zeros(3),
                                               key=jax.random.key(2), steps=200))
    safe = implicit.check_backward_learning_rate(None, lam)
    assert safe == pytest.approx(0.9 / lam)

    def neumann(eta, terms):
        amat = np.eye(D) - eta * a
        return sum(np.linalg.matrix_power(amat, t) for t in range(terms)) @ (eta * b)

    ref = np.linalg.solve(a, b)
    kappa = np.linalg.cond(a)
    terms = int(40 * kappa)
    np.testing.assert_allclose(neumann(safe, terms), ref, rtol=1e-3, atol=1e-4)
    assert np.linalg.norm(neumann(2.5 / lam, 60)) > 1e3 * np.linalg.norm(ref)


def test_check_backward_learning_rate_warns_and_clips():
    with pytest.warns(UserWarning, match="eta'"):
        assert implicit.check_backward_learning_rate(10.0, 0.5) == pytest.approx(0.9 / 0.5)
    with pytest.warns(UserWarning):
        assert implicit.check_backward_learning_rate(10.0, 0.5, clip=False) == 10.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert implicit.check_backward_learning_rate(1.0, 0.5) == 1.0
    with pytest.raises(ValueError, match="hessian_norm"):
        implicit.check_backward_learning_rate(1.0, float("nan"))
    with pytest.raises(ValueError, match="backward_learning_rate"):
        implicit.check_backward_learning_rate(-1.0, 0.5)
    with pytest.raises(ValueError, match="margin"):
        implicit.check_backward_learning_rate(None, 0.5, margin=0.0)
    with pytest.raises(ValueError, match="`z` must be a flat"):
        implicit.hessian_spectral_norm(lambda z: jnp.sum(z ** 2), jnp.ones((2, 2)),
                                       key=jax.random.key(0))
