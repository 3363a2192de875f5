import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import projections as P


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_feasible_and_idempotent(norm):
    key = jax.random.key(0)
    x0 = jax.random.uniform(key, (8, 5, 5, 2))
    x = x0 + 3.0 * jax.random.normal(jax.random.key(1), x0.shape)
    eps = 0.3
    p = P.project(x, x0, eps=eps, norm=norm)
    assert np.all(np.asarray(P.per_example_norm(p - x0, norm=norm)) <= eps + 1e-5)
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    np.testing.assert_allclose(P.project(p, x0, eps=eps, norm=norm), p, atol=1e-6)


def test_l2_projection_is_closest_point_without_box():
    x0 = jnp.zeros((1, 3))
    x = jnp.array([[3.0, 4.0, 0.0]])
    np.testing.assert_allclose(P.project_l2(x, x0, 1.0), [[0.6, 0.8, 0.0]], atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_in_ball_inside_and_deterministic(norm):
    key = jax.random.key(3)
    d = P.random_in_ball(key, (500, 2), eps=0.5, norm=norm)
    n = np.asarray(P.per_example_norm(d, norm=norm))
    assert np.all(n <= 0.5 + 1e-6)
    np.testing.assert_array_equal(d, P.random_in_ball(key, (500, 2), eps=0.5, norm=norm))
    if norm == "l2":  # uniform in the disc: P(r <= eps/2) = 1/4 in 2-D
        assert abs(np.mean(n <= 0.25) - 0.25) < 0.06


def test_bad_arguments():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="norm"):
        P.project(x, x, eps=0.1, norm="l7")
    with pytest.raises(ValueError, match="eps"):
        P.project(x, x, eps=-0.1)
