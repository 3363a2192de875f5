"""Tests of the GGN quantities and Props. C.1 / C.2 of the LLR paper (appendix C)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import linearity as L
from robustjax.losses import cross_entropy

D, H, K = 6, 16, 4


def _net(params, x):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def _init(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (D, H)) / np.sqrt(D), "b1": jnp.zeros(H),
        "w2": jax.random.normal(k2, (H, K)) / np.sqrt(H), "b2": jnp.zeros(K),
    }


@functools.lru_cache(maxsize=None)
def _trained(loss: str):
    """A small network trained for 300 full-batch steps on a synthetic 4-class problem."""
    kx, kw, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (64, D))
    y = jnp.argmax(x @ jax.random.normal(kw, (D, K)), axis=-1)
    onehot = jax.nn.one_hot(y, K)

    def objective(p):
        z = _net(p, x)
        if loss == "cross_entropy":
            return jnp.mean(cross_entropy(z, y))
        return jnp.mean(0.5 * jnp.sum((onehot - z) ** 2, -1))

    @jax.jit
    def train(p):
        def step(p, _):
            g = jax.grad(objective)(p)
            return jax.tree.map(lambda a, b: a - 0.3 * b, p, g), None
        return jax.lax.scan(step, p, None, length=300)[0]

    params = train(_init(kp))
    return params, x, y, onehot


def test_ggn_quadratic_form_matches_explicit_matrix():
    params, x, y, _ = _trained("cross_entropy")
    x, y = x[:5], y[:5]
    d = 0.1 * jax.random.normal(jax.random.key(1), x.shape)
    f = lambda z: _net(params, z)
    got_ce = jax.jit(lambda x, d: L.ggn_quadratic_form(f, x, d, loss="cross_entropy",
                                                       box=None))(x, d)
    got_se = L.ggn_quadratic_form(f, x, d, loss="squared_error", box=None)
    for i in range(5):
        jac = jax.jacfwd(lambda xi: _net(params, xi[None])[0])(x[i])  # [K, D]
        p = np.asarray(jax.nn.softmax(f(x[i:i + 1])[0]), np.float64)
        h_nu = np.diag(p) - np.outer(p, p)
        jac = np.asarray(jac, np.float64)
        di = np.asarray(d[i], np.float64)
        np.testing.assert_allclose(got_ce[i], di @ jac.T @ h_nu @ jac @ di, rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(got_se[i], di @ jac.T @ jac @ di, rtol=1e-4, atol=1e-8)
    # vmap over an extra batch axis
    vm = jax.vmap(lambda x, d: L.ggn_quadratic_form(f, x, d, box=None))(x[None], d[None])[0]
    np.testing.assert_allclose(vm, got_ce, rtol=1e-4, atol=1e-8)


def test_quadratic_model_exact_for_linear_model_with_squared_error():
    w = jax.random.normal(jax.random.key(2), (D, K))
    f = lambda z: z @ w
    x = jax.random.normal(jax.random.key(3), (7, D))
    t = jax.random.normal(jax.random.key(4), (7, K))
    d = jax.random.normal(jax.random.key(5), x.shape)
    err = L.quadratic_model_error(f, x, t, d, loss="squared_error", box=None)
    np.testing.assert_allclose(err, 0.0, atol=2e-4)
    # ... and for a nonlinear net with cross-entropy it is small but not zero for small δ
    params, xs, ys, _ = _trained("cross_entropy")
    e_small = L.quadratic_model_error(lambda z: _net(params, z), xs, ys,
                                      1e-2 * d[:1].repeat(64, 0), box=None)
    e_big = L.quadratic_model_error(lambda z: _net(params, z), xs, ys,
                                    1.0 * d[:1].repeat(64, 0), box=None)
    assert float(jnp.max(jnp.abs(e_small))) < 1e-3 < float(jnp.max(jnp.abs(e_big)))


@pytest.mark.parametrize("loss", ["squared_error", "cross_entropy"])
def test_props_c1_c2_hold_on_trained_network(loss):
    params, x, y, onehot = _trained(loss)
    f = lambda z: _net(params, z)
    if loss == "squared_error":
        bound = L.squared_error_ggn_bound
        target = onehot
        loss_fn = lambda z: 0.5 * jnp.sum((onehot - f(z)) ** 2, -1)
    else:
        bound = L.cross_entropy_ggn_bound
        target = y
        loss_fn = lambda z: cross_entropy(f(z), y)
    search = jax.jit(lambda k, x, eps: L.local_linearity(
        loss_fn, k, x, eps=eps, steps=10, step_size=0.02, restarts=2, box=None))
    sides = jax.jit(lambda x, d, g: bound(f, x, target, d, gamma=g))
    sides_tight = jax.jit(lambda x, d: bound(f, x, target, d))

    @jax.jit
    def c2_terms(d):
        return (L.ggn_quadratic_form(f, x, d, loss=loss, box=None),
                L.linearity_gap(loss_fn, x, d, box=None),
                L.quadratic_model_error(f, x, target, d, loss=loss, box=None))

    for eps in (0.05, 0.5):
        res = search(jax.random.key(7), x, jnp.float32(eps))
        # at δ_LLR with γ from the inner maximisation
        lhs, rhs = sides(x, res.delta, res.gamma)
        assert lhs.shape == rhs.shape == (64,)
        assert bool(jnp.all(lhs <= rhs * (1 + 1e-4) + 1e-6)), float(jnp.max(lhs - rhs))
        assert float(jnp.mean(lhs)) > 1e-4  # not a vacuous 0 <= x check
        # at random δ in the ball with γ := g(δ) (the tightest admissible value)
        for s in range(3):
            d = eps * jax.random.uniform(jax.random.key(20 + s), x.shape, minval=-1, maxval=1)
            lhs, rhs = sides_tight(x, d)
            assert bool(jnp.all(lhs <= rhs * (1 + 1e-4) + 1e-6))
            # Eqn (C2): ½ δᵀGδ <= g(δ) + |ε(δ)|
            curv, gap, err = c2_terms(d)
            assert bool(jnp.all(0.5 * curv <= gap + jnp.abs(err) + 1e-6))


def test_ggn_bad_arguments():
    f = lambda z: z @ jnp.ones((D, K))
    x = jnp.zeros((3, D))
    with pytest.raises(ValueError, match="loss"):
        L.ggn_quadratic_form(f, x, x, loss="hinge", box=None)
    with pytest.raises(ValueError, match="delta"):
        L.ggn_quadratic_form(f, x, x[:1], box=None)
    with pytest.raises(ValueError, match="y"):
        L.squared_error_ggn_bound(f, x, jnp.zeros((3, K + 1)), x, box=None)
    with pytest.raises(ValueError, match="y"):
        L.cross_entropy_ggn_bound(f, x, jnp.zeros((3,), jnp.float32), x, box=None)
