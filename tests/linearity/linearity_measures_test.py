"""Tests of g(δ; x), γ(ε, x), δ_LLR and the LLR penalty (robustjax.linearity)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import linearity as L
from robustjax.losses import cross_entropy

D = 6


def _mlp_params(key, d_in=D, hidden=16, k=4):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (d_in, hidden)) / np.sqrt(d_in),
        "w2": jax.random.normal(k2, (hidden, k)) / np.sqrt(hidden),
    }


def _logits(params, x):
    h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"])
    return h @ params["w2"]


def _ce_loss_fn(params, y):
    return lambda x: cross_entropy(_logits(params, x), y)


def _data(n=8, key=0):
    kx, ky = jax.random.split(jax.random.key(key))
    x = jax.random.normal(kx, (n, D))
    y = jax.random.randint(ky, (n,), 0, 4)
    return x, y


def test_gap_zero_at_zero_and_nonnegative():
    params = _mlp_params(jax.random.key(1))
    x, y = _data()
    loss_fn = _ce_loss_fn(params, y)
    gap = jax.jit(lambda x, d: L.linearity_gap(loss_fn, x, d, box=None))
    np.testing.assert_allclose(gap(x, jnp.zeros_like(x)), 0.0, atol=1e-7)
    for s in range(3):
        d = 0.5 * jax.random.normal(jax.random.key(10 + s), x.shape)
        g = gap(x, d)
        assert g.shape == (x.shape[0],)
        assert bool(jnp.all(g >= 0)) and float(jnp.max(g)) > 1e-4


def test_gap_matches_per_example_reference():
    # Independent reference: per-example jax.grad on one example at a time.
    params = _mlp_params(jax.random.key(2))
    x, y = _data()
    d = 0.3 * jax.random.normal(jax.random.key(3), x.shape)

    def one(xi, yi, di):
        f = lambda z: cross_entropy(_logits(params, z[None]), yi[None])[0]
        return jnp.abs(f(xi + di) - f(xi) - jnp.dot(di, jax.grad(f)(xi)))

    ref = np.array([one(x[i], y[i], d[i]) for i in range(x.shape[0])])
    got = L.linearity_gap(_ce_loss_fn(params, y), x, d, box=None)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


def test_gap_vmap_matches_loop():
    params = _mlp_params(jax.random.key(4))
    xs = jax.random.normal(jax.random.key(5), (3, 4, D))
    ys = jnp.zeros((3, 4), jnp.int32)
    ds = 0.2 * jax.random.normal(jax.random.key(6), xs.shape)
    f = lambda x, y, d: L.linearity_gap(_ce_loss_fn(params, y), x, d, box=None)
    got = jax.vmap(f)(xs, ys, ds)
    ref = jnp.stack([f(xs[i], ys[i], ds[i]) for i in range(3)])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)


def test_quadratic_gap_closed_form():
    a_mat = jax.random.normal(jax.random.key(7), (D, D))
    a_mat = a_mat + a_mat.T  # symmetric, indefinite
    b = jax.random.normal(jax.random.key(8), (D,))
    loss_fn = lambda x: 0.5 * jnp.einsum("ni,ij,nj->n", x, a_mat, x) + x @ b
    x, _ = _data()
    d = jax.random.normal(jax.random.key(9), x.shape)
    ref = 0.5 * np.abs(np.einsum("ni,ij,nj->n", d, a_mat, d))
    np.testing.assert_allclose(L.linearity_gap(loss_fn, x, d, box=None), ref, rtol=1e-4, atol=1e-5)


def test_gamma_linf_diagonal_closed_form():
    a = jnp.array([0.5, 1.0, 2.0, 3.0, 0.1, 0.0])
    loss_fn = lambda x: 0.5 * jnp.sum(a * x * x, -1) + 0.3 * jnp.sum(x, -1)
    x, _ = _data()
    eps = 0.25
    f = jax.jit(lambda k, x: L.local_linearity(loss_fn, k, x, eps=eps, steps=20,
                                               step_size=0.1, box=None))
    res = f(jax.random.key(0), x)
    np.testing.assert_allclose(res.gamma, 0.5 * eps**2 * float(jnp.sum(a)), rtol=1e-4)
    # the maximiser sits at a corner of the ball on every coordinate with a_i > 0
    np.testing.assert_allclose(jnp.abs(res.delta[:, :5]), eps, rtol=1e-5)


def test_gamma_l2_closed_form_top_eigenvalue():
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(11), (D, D)))
    lam = jnp.array([2.5, 1.0, 0.7, 0.3, 0.2, 0.0])
    a_mat = (q * lam) @ q.T
    loss_fn = lambda x: 0.5 * jnp.einsum("ni,ij,nj->n", x, a_mat, x)
    x, _ = _data()
    eps = 0.5
    res = jax.jit(lambda k, x: L.local_linearity(
        loss_fn, k, x, eps=eps, steps=60, step_size=0.2, norm="l2",
        step_rule="normalized", box=None))(jax.random.key(1), x)
    np.testing.assert_allclose(res.gamma, 0.5 * 2.5 * eps**2, rtol=2e-3)
    np.testing.assert_allclose(jnp.linalg.norm(res.delta, axis=-1), eps, rtol=1e-4)


def test_gamma_dominates_random_points_and_stays_in_ball(norm="linf", rule="adam"):
    # (the ℓ2 ball is checked against its closed form in test_gamma_l2_closed_form_...)
    params = _mlp_params(jax.random.key(12))
    x, y = _data(n=16)
    x = jax.nn.sigmoid(x)  # in (0, 1)
    loss_fn = _ce_loss_fn(params, y)
    eps = 0.3
    res = jax.jit(lambda k, x: L.local_linearity(
        loss_fn, k, x, eps=eps, steps=20, step_size=0.05, norm=norm, step_rule=rule,
        box=(0.0, 1.0), restarts=5))(jax.random.key(3), x)
    assert res.gamma.shape == (16,) and res.delta.shape == x.shape
    nrm = jnp.max(jnp.abs(res.delta), -1) if norm == "linf" else jnp.linalg.norm(res.delta, axis=-1)
    assert float(jnp.max(nrm)) <= eps + 1e-5
    assert float(jnp.min(x + res.delta)) >= -1e-6 and float(jnp.max(x + res.delta)) <= 1 + 1e-6
    from robustjax.projections import project, random_in_ball

    def rand_gap(k):
        d = project(x + random_in_ball(k, x.shape, eps=eps, norm=norm), x, eps=eps, norm=norm)
        return L.linearity_gap(loss_fn, x, d - x, box=None)

    gaps = jax.jit(jax.vmap(rand_gap))(jax.random.split(jax.random.key(5), 200))
    assert bool(jnp.all(res.gamma[None] >= gaps - 1e-6))


def test_local_linearity_vmap_and_keys():
    params = _mlp_params(jax.random.key(13))
    xs = jax.random.normal(jax.random.key(14), (2, 5, D))
    ys = jnp.ones((2, 5), jnp.int32)
    keys = jax.random.split(jax.random.key(15), 2)

    def f(k, x, y):
        return L.local_linearity(_ce_loss_fn(params, y), k, x, eps=0.2, steps=4,
                                 step_size=0.05, box=None).gamma

    got = jax.jit(jax.vmap(f))(keys, xs, ys)
    fj = jax.jit(f)
    ref = jnp.stack([fj(keys[i], xs[i], ys[i]) for i in range(2)])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)  # float32 rounding
    # same key -> same result; different key -> different start; per-example keys accepted
    np.testing.assert_array_equal(fj(keys[0], xs[0], ys[0]), ref[0])
    assert not np.allclose(fj(keys[1], xs[0], ys[0]), ref[0])
    per_ex = jax.random.split(jax.random.key(0), 5)
    g = fj(per_ex, xs[0], ys[0])
    assert g.shape == (5,) and bool(jnp.all(jnp.isfinite(g)))


def test_llr_penalty_and_gradient():
    params = _mlp_params(jax.random.key(16))
    x, y = _data()
    kw = dict(eps=0.2, steps=5, step_size=0.05)
    res, pen = jax.jit(lambda k: (
        L.local_linearity(_ce_loss_fn(params, y), k, x, **kw, box=None),
        L.llr_penalty(_ce_loss_fn(params, y), k, x, lambda_=4.0, mu=3.0, **kw,
                      box=None)))(jax.random.key(0))
    # reference linear term by central finite differences along δ
    f = _ce_loss_fn(params, y)
    h = 1e-3
    lin = (f(x + h * res.delta) - f(x - h * res.delta)) / (2 * h)
    np.testing.assert_allclose(pen, 4.0 * res.gamma + 3.0 * jnp.abs(lin), rtol=2e-3, atol=1e-4)

    # gradient w.r.t. parameters: δ_LLR held fixed (Danskin) -> finite differences of g(δ*)
    def total(p):
        return jnp.sum(L.linearity_gap(_ce_loss_fn(p, y), x, res.delta, box=None))

    grad = jax.jit(jax.grad(total))(params)
    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.key(1), a.shape), params)
    eps_fd = 1e-3
    plus = total(jax.tree.map(lambda a, b: a + eps_fd * b, params, direction))
    minus = total(jax.tree.map(lambda a, b: a - eps_fd * b, params, direction))
    fd = (plus - minus) / (2 * eps_fd)
    an = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    np.testing.assert_allclose(an, fd, rtol=2e-2)
    # the penalty is differentiable through the closure
    gp = jax.jit(jax.grad(lambda p: jnp.sum(L.llr_penalty(_ce_loss_fn(p, y), jax.random.key(0), x,
                                                  lambda_=1.0, mu=1.0, **kw, box=None))))(params)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(gp))


def test_bad_arguments_raise():
    params = _mlp_params(jax.random.key(0))
    x, y = _data()
    f = _ce_loss_fn(params, y)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="norm"):
        L.local_linearity(f, key, x, eps=0.1, steps=2, step_size=0.1, norm="l1", box=None)
    with pytest.raises(ValueError, match="steps"):
        L.local_linearity(f, key, x, eps=0.1, steps=0, step_size=0.1, box=None)
    with pytest.raises(ValueError, match="eps"):
        L.local_linearity(f, key, x, eps=-0.1, steps=2, step_size=0.1, box=None)
    with pytest.raises(ValueError, match="step_size"):
        L.local_linearity(f, key, x, eps=0.1, steps=2, step_size=0.0, box=None)
    with pytest.raises(ValueError, match="step_rule"):
        L.local_linearity(f, key, x, eps=0.1, steps=2, step_size=0.1, step_rule="lbfgs", box=None)
    with pytest.raises(ValueError, match="key"):
        L.local_linearity(f, 3, x, eps=0.1, steps=2, step_size=0.1, box=None)
    with pytest.raises(ValueError, match="loss_fn"):
        L.linearity_gap(lambda z: jnp.sum(f(z)), x, x, box=None)
    with pytest.raises(ValueError, match="delta"):
        L.linearity_gap(f, x, x[:2], box=None)
    with pytest.raises(ValueError, match="lambda_"):
        L.llr_penalty(f, key, x, eps=0.1, lambda_=-1.0, mu=0.0, steps=1, step_size=0.1, box=None)
