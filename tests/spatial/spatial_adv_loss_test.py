import jax
import jax.numpy as jnp
import numpy as np

from robustjax import spatial as S

H, W = 5, 6
D = H * W


def _net(key, h=7):
    k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
    w = jax.random.normal(k1, (h, D)) / np.sqrt(D)
    v = jax.random.normal(k2, (h,))
    b = 0.1 * jax.random.normal(k3, (h,))
    return lambda x: jnp.vdot(v, jnp.tanh(w @ x + b))


def _midpoint_errors(f, x, r, ns):
    exact = float(S.adversarial_loss(f, x, r, shape=(H, W)))
    errs = []
    for n in ns:
        val = S.adversarial_loss_midpoint(f, x, r, shape=(H, W), num_points=n)
        errs.append(abs(float(val) - exact))
    return exact, errs


def test_midpoint_converges_to_exact_line_integral():
    f = _net(0)
    x = jax.random.uniform(jax.random.key(1), (D,), minval=-1, maxval=1)
    # flows within one pixel: the integrand is smooth, midpoint error O(1/n^2)
    r = 0.3 * jax.random.normal(jax.random.key(2), (D,))
    exact, errs = _midpoint_errors(f, x, r, (8, 64))
    assert errs[1] < 1e-5 * max(1.0, abs(exact))
    assert errs[0] / max(errs[1], 1e-9) > 20.0  # ~64x per 8x refinement
    # large flows cross pixel boundaries (kinks): slower, but still converges
    exact, errs = _midpoint_errors(f, x, 3.0 * r, (8, 4096))
    assert errs[1] < 2e-3 * max(1.0, abs(exact))
    assert errs[1] < 0.1 * errs[0]


def test_jacobian_diag_matches_finite_differences_and_is_linear_in_x():
    x = jax.random.uniform(jax.random.key(3), (D,), minval=-1, maxval=1)
    r = jnp.asarray(np.random.default_rng(0).uniform(0.2, 0.8, D) * np.sign(
        np.random.default_rng(1).normal(size=D)), jnp.float32)
    dg = np.asarray(S.warp_jacobian_diag(x, r, shape=(H, W)))
    step = 1e-2
    fd = (np.asarray(S.warp_diagonal(x, r + step, shape=(H, W)))
          - np.asarray(S.warp_diagonal(x, r - step, shape=(H, W)))) / (2 * step)
    np.testing.assert_allclose(dg, fd, atol=2e-3)  # r_i moves only pixel i
    x2 = jax.random.uniform(jax.random.key(4), (D,))
    np.testing.assert_allclose(
        S.warp_jacobian_diag(2 * x - 3 * x2, r, shape=(H, W), box=None),
        2 * dg - 3 * np.asarray(S.warp_jacobian_diag(x2, r, shape=(H, W))), atol=1e-5)


def test_linear_approximation_closed_form_and_vmap():
    hdim = 4
    w = jax.random.normal(jax.random.key(5), (hdim, D))
    v = jax.random.normal(jax.random.key(6), (hdim,))
    f = lambda x: jnp.vdot(v, jax.nn.relu(w @ x))  # noqa: E731
    xs = jax.random.uniform(jax.random.key(7), (3, D), minval=-1, maxval=1)
    rs = jax.random.normal(jax.random.key(8), (3, D))
    got = jax.jit(jax.vmap(lambda x, r: S.adversarial_loss_linear(f, x, r)))(xs, rs)
    for i in range(3):
        sig = (np.asarray(w @ xs[i]) > 0).astype(np.float32)
        ref = sig @ (np.asarray(v)[:, None] * np.asarray(w)) @ (np.asarray(xs[i] * rs[i]))
        np.testing.assert_allclose(got[i], ref, rtol=1e-4, atol=1e-5)
    # batched exact loss under vmap equals the per-example loop
    ex = jax.vmap(lambda x, r: S.adversarial_loss(f, x, r, shape=(H, W)))(xs, rs)
    for i in range(3):
        np.testing.assert_allclose(ex[i], S.adversarial_loss(f, xs[i], rs[i], shape=(H, W)),
                                   rtol=1e-5, atol=1e-5)
