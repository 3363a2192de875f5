"""Theorem 2 (omega^L) upper-bounds empirical Lipschitz ratios of a tiny deconv/ReLU/pool net."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import implicit


def _net(seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    w_fc = 0.5 * jax.random.normal(k[0], (4, 2 * 2 * 3))
    w_dc = 0.3 * jax.random.normal(k[1], (4, 4, 3, 2))  # HWIO, transposed conv stride 2
    w_out = 0.3 * jax.random.normal(k[2], (2 * 2 * 2, 5))
    b = 0.1

    def f(z):  # z [4] -> [5]
        h = jax.nn.relu(z @ w_fc + b).reshape(1, 2, 2, 3)
        h = jax.lax.conv_transpose(h, w_dc, (2, 2), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))  # [1,4,4,2]
        h = jax.nn.relu(h)
        h = h.reshape(1, 2, 2, 2, 2, 2).max(axis=(2, 4))  # 2x2 max-pool -> [1,2,2,2]
        return h.reshape(-1) @ w_out

    return f, [w_fc, w_dc, w_out]


def test_layer_omegas_values():
    ks = [jnp.asarray([[1.0, -2.0]]), jnp.asarray([0.5, -0.5, 3.0])]
    np.testing.assert_allclose(implicit.layer_omegas(ks), [3.0, 4.0])
    np.testing.assert_allclose(implicit.lipschitz_bound(ks), 16.0)
    np.testing.assert_allclose(implicit.lipschitz_bound(ks, per_layer=True), 12.0)
    np.testing.assert_allclose(implicit.lipschitz_bound(ks, scales=[2.0, 1.0]), 36.0)
    with pytest.raises(ValueError, match="scales"):
        implicit.lipschitz_bound(ks, scales=[1.0])
    with pytest.raises(ValueError, match="kernels"):
        implicit.lipschitz_bound([])


@pytest.mark.parametrize("seed", [0, 1])
def test_bound_dominates_empirical_ratio(seed):
    f, kernels = _net(seed)
    bound = float(implicit.lipschitz_bound(kernels))
    tight = float(implicit.lipschitz_bound(kernels, per_layer=True))
    assert tight <= bound + 1e-4
    key = jax.random.key(10 + seed)
    z1 = jax.random.normal(jax.random.fold_in(key, 0), (500, 4))
    dz = jax.random.normal(jax.random.fold_in(key, 1), (500, 4))
    dz = dz * jnp.logspace(-3, 0, 500)[:, None]
    ratio = jax.jit(jax.vmap(lambda a, d: jnp.linalg.norm(f(a + d) - f(a)) / jnp.linalg.norm(d)))(
        z1, dz)
    emp = float(ratio.max())
    assert emp > 0
    assert emp <= tight + 1e-4
    assert tight <= bound
