"""robustjax.implicit: custom_root, linear solvers and the latent-projection gradient modes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import implicit

D, N = 3, 4


def _quadratic(seed=0):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(D, D))
    p = (m @ m.T + np.eye(D)).astype(np.float32)
    q = rng.normal(size=(D, N)).astype(np.float32)
    x = rng.normal(size=N).astype(np.float32)
    pj, qj = jnp.asarray(p), jnp.asarray(q)

    def loss(z, x):
        return 0.5 * z @ pj @ z - z @ (qj @ x)

    lmax = float(np.linalg.eigvalsh(p).max())
    return loss, p, q, x, lmax


def _jac(mode, loss, x, lr, **kw):
    f = lambda x: implicit.latent_projection(  # noqa: E731
        loss, jnp.zeros(D), x, steps=kw.pop("steps", 400), learning_rate=lr, mode=mode, **kw)
    return np.asarray(jax.jit(jax.jacrev(f))(x))


@pytest.mark.parametrize("mode", ["implicit", "unrolled", "neumann", "backtrack"])
def test_quadratic_closed_form(mode):
    loss, p, q, x, lmax = _quadratic()
    j_ref = np.linalg.solve(p, q)  # z*(x) = P^{-1} Q x
    j = _jac(mode, loss, x, 1.0 / lmax, backward_steps=300)
    np.testing.assert_allclose(j, j_ref, atol=1e-4)
    z = implicit.latent_projection(loss, jnp.zeros(D), x, steps=400, learning_rate=1.0 / lmax,
                                   mode=mode)
    np.testing.assert_allclose(z, j_ref @ x, atol=1e-4)


def test_bpda_latent_has_no_gradient():
    loss, p, q, x, lmax = _quadratic()
    j = _jac("bpda", loss, x, 1.0 / lmax)
    np.testing.assert_array_equal(j, 0.0)


def test_neumann_and_backtrack_converge_to_implicit_theorem1():
    loss, p, q, x, lmax = _quadratic(1)
    eta = 1.0 / lmax
    j_ref = np.linalg.solve(p, q)
    a = np.eye(D) - eta * p
    errs_n, errs_b = [], []
    for t in (1, 2, 4, 8, 16, 32):
        jn = _jac("neumann", loss, x, eta, backward_steps=t)
        jb = _jac("backtrack", loss, x, eta, backward_steps=t)
        # Lemma 1 truncated at T' terms: sum_{s<T'} B A^s with B = eta * Q (l = .5 z'Pz - z'Qx).
        series = sum(np.linalg.matrix_power(a, s) for s in range(t)) @ (eta * q)
        np.testing.assert_allclose(jn, series, atol=2e-5)
        # For a quadratic, alpha_t = A and beta_t = B exactly: backtracking == truncated series.
        np.testing.assert_allclose(jb, series, atol=2e-5)
        errs_n.append(np.abs(jn - j_ref).max())
        errs_b.append(np.abs(jb - j_ref).max())
    assert all(e1 >= e2 - 1e-6 for e1, e2 in zip(errs_n, errs_n[1:])), errs_n
    assert all(e1 >= e2 - 1e-6 for e1, e2 in zip(errs_b, errs_b[1:])), errs_b
    assert errs_n[-1] < 0.1 * errs_n[0]


def _tiny_generator(seed=0, d=2, h=8, out=6):
    rng = np.random.default_rng(seed)
    w1 = jnp.asarray(rng.normal(size=(d, h)) / np.sqrt(d), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(h, out)) / np.sqrt(h), jnp.float32)

    def gen(z, w1=w1, w2=w2):
        return jnp.tanh(jnp.tanh(z @ w1) @ w2)

    return gen, w1, w2


def _nonlinear_setup():
    gen, w1, w2 = _tiny_generator()
    z_true = jnp.asarray([0.3, -0.5], jnp.float32)
    x = gen(z_true) + 0.05 * jnp.asarray(np.random.default_rng(3).normal(size=6), jnp.float32)

    def loss(z, x):
        return jnp.sum((gen(z) - x) ** 2) + 0.01 * jnp.sum(z ** 2)

    return gen, loss, x


def test_nonlinear_generator_matches_finite_differences():
    gen, loss, x = _nonlinear_setup()
    z0 = jnp.zeros(2)
    kw = dict(steps=1000, learning_rate=0.1)

    def h(x, mode):
        z = implicit.latent_projection(loss, z0, x, mode=mode, backward_steps=200, **kw)
        return jnp.sum(gen(z) * jnp.arange(6.0))

    eps = 1e-2
    h_fwd = jax.jit(jax.vmap(functools.partial(h, mode="bpda")))
    e = eps * np.eye(6, dtype=np.float32)
    fd = np.asarray(h_fwd(x + e) - h_fwd(x - e)) / (2 * eps)
    grads = {}
    for mode in ("implicit", "unrolled", "backtrack"):
        grads[mode] = jax.jit(jax.grad(functools.partial(h, mode=mode)))(x)
        np.testing.assert_allclose(grads[mode], fd, atol=5e-2, err_msg=mode)
    assert np.abs(fd).max() > 0.1
    # implicit and unrolled agree at convergence.
    np.testing.assert_allclose(grads["implicit"], grads["unrolled"], atol=1e-3)


def test_gradient_through_closed_over_parameters():
    # Arrays the loss closes over are hoisted and get implicit gradients too (jit-traced here).
    gen, w1, w2 = _tiny_generator(1)
    x = gen(jnp.asarray([0.2, 0.1])) + 0.02

    def h(w2, mode):
        def loss(z, x):
            return jnp.sum((gen(z, w1, w2) - x) ** 2) + 0.01 * jnp.sum(z ** 2)

        z = implicit.latent_projection(loss, jnp.zeros(2), x, steps=1500, learning_rate=0.1,
                                       mode=mode)
        return jnp.sum(z)

    gi = jax.jit(jax.grad(functools.partial(h, mode="implicit")))(w2)
    gu = jax.jit(jax.grad(functools.partial(h, mode="unrolled")))(w2)
    assert np.abs(np.asarray(gu)).max() > 1e-3
    np.testing.assert_allclose(gi, gu, atol=2e-3)


@pytest.mark.parametrize("mode", ["implicit", "backtrack"])
def test_vmap_matches_loop(mode):
    gen, loss, x = _nonlinear_setup()
    xs = jnp.stack([x, x * 0.9, x[::-1]])

    def h(x):
        z = implicit.latent_projection(loss, jnp.zeros(2), x, steps=300, learning_rate=0.1,
                                       mode=mode)
        return jnp.sum(gen(z) ** 2)

    g_vmap = jax.jit(jax.vmap(jax.grad(h)))(xs)
    g_one = jax.jit(jax.grad(h))
    g_loop = np.stack([g_one(xi) for xi in xs])
    np.testing.assert_allclose(g_vmap, g_loop, atol=1e-4)


def test_custom_root_init_gets_no_gradient_and_momentum_optimizer():
    loss, p, q, x, lmax = _quadratic(2)
    opt = optax.sgd(0.5 / lmax, momentum=0.7)
    solver = functools.partial(implicit.descend, loss, optimizer=opt, steps=400)
    root = implicit.custom_root(jax.grad(loss))(solver)
    z0 = jnp.ones(D)
    g_init, g_x = jax.jit(jax.grad(lambda z0, x: jnp.sum(root(z0, x)), argnums=(0, 1)))(z0, x)
    np.testing.assert_array_equal(g_init, 0.0)
    np.testing.assert_allclose(g_x, np.linalg.solve(p, q).sum(0), atol=1e-4)


def test_custom_fixed_point_and_normal_cg():
    loss, p, q, x, lmax = _quadratic(3)
    eta = 1.0 / lmax
    step = lambda z, x: z - eta * jax.grad(loss)(z, x)  # noqa: E731
    solver = functools.partial(implicit.descend, loss, optimizer=optax.sgd(eta), steps=500)
    for solve in (implicit.solve_cg, implicit.solve_normal_cg):
        root = implicit.custom_fixed_point(step, solve=solve)(solver)
        j = jax.jit(jax.jacrev(lambda x: root(jnp.zeros(D), x)))(x)
        np.testing.assert_allclose(j, np.linalg.solve(p, q), atol=1e-4)


def test_ridge_damping_and_root_vjp():
    loss, p, q, x, lmax = _quadratic(4)
    z = jnp.asarray(np.linalg.solve(p, q @ x))
    cot = jnp.asarray([1.0, -2.0, 0.5])
    for rho in (0.0, 0.5):
        solve = functools.partial(implicit.solve_cg, ridge=rho)
        (g,) = implicit.root_vjp(jax.grad(loss), z, (jnp.asarray(x),), cot, solve=solve)
        ref = q.T @ np.linalg.solve(p + rho * np.eye(D), np.asarray(cot))
        np.testing.assert_allclose(g, ref, atol=1e-4)


def test_linear_solvers_against_numpy():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(5, 5))
    a = (m @ m.T + np.eye(5)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    mv = lambda u: jnp.asarray(a) @ u  # noqa: E731
    ref = np.linalg.solve(a, b)
    u = jax.jit(lambda b: implicit.solve_cg(mv, b))(b)
    np.testing.assert_allclose(u, ref, rtol=1e-3, atol=1e-4)
    eta = 1.0 / np.linalg.eigvalsh(a).max()
    u = implicit.solve_neumann(mv, b, steps=3000, learning_rate=float(eta))
    np.testing.assert_allclose(u, ref, rtol=1e-3, atol=1e-3)
    u1 = implicit.solve_neumann(mv, b, steps=1, learning_rate=0.1)
    np.testing.assert_allclose(u1, 0.1 * b, atol=1e-7)  # first term: eta * b


def test_bad_arguments_raise():
    loss, p, q, x, lmax = _quadratic()
    with pytest.raises(ValueError, match="mode"):
        implicit.latent_projection(loss, jnp.zeros(D), x, steps=3, mode="magic")
    with pytest.raises(ValueError, match="steps"):
        implicit.latent_projection(loss, jnp.zeros(D), x, steps=0)
    with pytest.raises(ValueError, match="backward_steps"):
        implicit.latent_projection(loss, jnp.zeros(D), x, steps=3, backward_steps=0)
    with pytest.raises(ValueError, match="ridge"):
        implicit.solve_cg(lambda u: u, jnp.ones(2), ridge=-1.0)


def test_reconstruction_bpda_identity_gradient():
    x = jnp.asarray([0.1, 0.5, 0.9])
    rec = jnp.asarray([0.0, 0.4, 1.0])
    y = implicit.reconstruction_bpda(x, rec)
    np.testing.assert_allclose(y, rec, atol=1e-7)
    j = jax.jacrev(lambda x: implicit.reconstruction_bpda(x, rec))(x)
    np.testing.assert_allclose(j, np.eye(3), atol=1e-7)
