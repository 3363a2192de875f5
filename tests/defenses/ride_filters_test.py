"""Tests for the median filter and the TV-denoising baselines (seed 002, supplementary)."""

import numpy as np
import pytest
import scipy.ndimage

import jax
import jax.numpy as jnp

from robustjax.defenses import image_divergence
from robustjax.defenses import image_gradient
from robustjax.defenses import median_filter
from robustjax.defenses import rof_energy
from robustjax.defenses import tv_denoise


def _images(seed, shape):
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def _median_bruteforce(x, k):
    n, h, w, c = x.shape
    r = k // 2
    xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    out = np.empty_like(x)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                for ch in range(c):
                    out[b, i, j, ch] = np.median(xp[b, i : i + k, j : j + k, ch])
    return out


@pytest.mark.parametrize("size", [1, 3, 5])
def test_median_filter_matches_bruteforce_and_scipy(size):
    x = _images(0, (2, 7, 6, 3))
    got = np.asarray(jax.jit(lambda v: median_filter(v, size=size))(x))
    np.testing.assert_allclose(got, _median_bruteforce(x, size), atol=0)
    ref = scipy.ndimage.median_filter(x, size=(1, size, size, 1), mode="constant", cval=0.0)
    np.testing.assert_allclose(got, ref, atol=0)


def test_median_filter_vmap_and_known_case():
    x = _images(1, (3, 5, 5, 1))
    batched = median_filter(x, size=3)
    per = jax.vmap(lambda v: median_filter(v[None], size=3)[0])(x)
    np.testing.assert_allclose(per, batched, atol=0)
    # An isolated spike is removed; a constant image keeps its interior, corners see 5 zeros.
    spike = np.zeros((1, 5, 5, 1), np.float32)
    spike[0, 2, 2, 0] = 1.0
    np.testing.assert_array_equal(median_filter(spike, size=3), np.zeros_like(spike))
    ones = np.ones((1, 5, 5, 1), np.float32)
    out = np.asarray(median_filter(ones, size=3))[0, :, :, 0]
    assert out[2, 2] == 1.0 and out[0, 2] == 1.0 and out[0, 0] == 0.0


def test_median_filter_rejects_bad_input():
    with pytest.raises(ValueError, match="size"):
        median_filter(np.zeros((1, 4, 4, 1), np.float32), size=4)
    with pytest.raises(ValueError, match="x"):
        median_filter(np.zeros((4, 4, 1), np.float32), size=3)


def test_gradient_divergence_adjoint():
    rng = np.random.default_rng(2)
    u = rng.normal(size=(2, 5, 6, 3))
    p = rng.normal(size=(2, 2, 5, 6, 3))
    lhs = np.sum(np.asarray(image_gradient(u, box=None)) * p)
    rhs = -np.sum(u * np.asarray(image_divergence(p)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


def _rof_cvxpy(f2d, weight):
    cp = pytest.importorskip("cvxpy")
    h, w = f2d.shape
    u = cp.Variable((h, w))
    gx = cp.vstack([u[1:] - u[:-1], np.zeros((1, w))])
    gy = cp.hstack([u[:, 1:] - u[:, :-1], np.zeros((h, 1))])
    g = cp.vstack([cp.vec(gx, order="C"), cp.vec(gy, order="C")])
    obj = 0.5 * cp.sum_squares(u - f2d) + weight * cp.sum(cp.norm(g, 2, axis=0))
    cp.Problem(cp.Minimize(obj)).solve()
    return u.value


def test_chambolle_matches_convex_solver():
    # An independent reference: the ROF problem solved as an SOCP by cvxpy.
    f = _images(3, (1, 10, 9, 1))
    weight = 0.2
    ref = _rof_cvxpy(f[0, :, :, 0].astype(np.float64), weight)
    u = jax.jit(lambda v: tv_denoise(v, weight=weight, method="chambolle", steps=1000))(f)
    np.testing.assert_allclose(np.asarray(u)[0, :, :, 0], ref, atol=2e-3)


def test_chambolle_decreases_energy():
    f = _images(4, (2, 12, 12, 3))
    weight = 0.15
    e_in = rof_energy(f, f, weight=weight)
    e_few = rof_energy(tv_denoise(f, weight=weight, steps=5), f, weight=weight)
    e_many = rof_energy(tv_denoise(f, weight=weight, steps=300), f, weight=weight)
    assert e_in.shape == (2,)
    assert np.all(e_few < e_in - 1e-3)
    assert np.all(e_many < e_few - 1e-4)


def _bregman_gauss_seidel(f2d, weight, sweeps):
    """scikit-image's split-Bregman as its Cython loop does it (lexicographic Gauss-Seidel,
    fixed ghost pixels), transcribed to NumPy from its published update equations: a second,
    sequential algorithm with the same fixed point as the vectorized red-black sweeps."""
    rows, cols = f2d.shape
    lam = 2.0 * weight
    norm = weight + 4.0 * lam
    out = np.zeros((rows + 2, cols + 2))
    dx, dy, bx, by = (np.zeros_like(out) for _ in range(4))
    out[1:-1, 1:-1] = f2d
    out[0, 1:-1], out[1:-1, 0] = f2d[1, :], f2d[:, 1]
    out[-1, 1:-1], out[1:-1, -1] = f2d[-1, :], f2d[:, -1]
    for _ in range(sweeps):
        for r in range(1, rows + 1):
            for c in range(1, cols + 1):
                uprev = out[r, c]
                ux, uy = out[r, c + 1] - uprev, out[r + 1, c] - uprev
                out[r, c] = (lam * (out[r + 1, c] + out[r - 1, c] + out[r, c + 1] + out[r, c - 1]
                                    + dx[r, c - 1] - dx[r, c] + dy[r - 1, c] - dy[r, c]
                                    - bx[r, c - 1] + bx[r, c] - by[r - 1, c] + by[r, c])
                             + weight * f2d[r - 1, c - 1]) / norm
                tx, ty = ux + bx[r, c], uy + by[r, c]
                s = np.sqrt(tx * tx + ty * ty)
                dx[r, c], dy[r, c] = s * lam * tx / (s * lam + 1), s * lam * ty / (s * lam + 1)
                bx[r, c] += ux - dx[r, c]
                by[r, c] += uy - dy[r, c]
    return out[1:-1, 1:-1]


@pytest.mark.parametrize("weight", [0.075, 0.25, 0.75, 5.0])
def test_bregman_reaches_the_gauss_seidel_fixed_point(weight):
    # Table 5's grid (0.075-0.75, scikit-image's fidelity weight) and one weak setting.
    f = _images(8, (1, 9, 8, 1))
    ref = _bregman_gauss_seidel(f[0, :, :, 0].astype(np.float64), weight, 800)
    u = jax.jit(lambda v: tv_denoise(v, weight=weight, method="bregman", steps=800))(f)
    np.testing.assert_allclose(np.asarray(u)[0, :, :, 0], ref, atol=2e-5)


@pytest.mark.parametrize("weight", [0.075, 0.125, 0.25, 0.5, 0.75, 5.0])
def test_bregman_matches_skimage_if_installed(weight):
    # Only this comparison needs scikit-image; the fixed point is checked above without it.
    skr = pytest.importorskip("skimage.restoration")
    f = _images(7, (1, 20, 17, 2))
    ref = skr.denoise_tv_bregman(f[0].astype(np.float64), weight=weight, max_num_iter=20000,
                                 eps=1e-12, channel_axis=-1)
    u = jax.jit(lambda v: tv_denoise(v, weight=weight, method="bregman", steps=1000))(f)
    # Converged float32 fixed point vs scikit-image's float64 one.
    np.testing.assert_allclose(np.asarray(u)[0], ref, atol=1e-4)


def test_bregman_convention_smaller_weight_is_smoother():
    # scikit-image's convention (a fidelity weight): total variation falls as the weight falls;
    # Chambolle's weight multiplies TV, so there it is the other way round.
    f = _images(9, (2, 14, 12, 1))

    def tv(u):
        return np.asarray(rof_energy(u, u, weight=1.0))  # fidelity 0: the TV alone

    br = [tv(tv_denoise(f, weight=w, method="bregman", steps=200)) for w in (0.1, 0.5, 5.0)]
    ch = [tv(tv_denoise(f, weight=w, method="chambolle", steps=200)) for w in (0.05, 0.2)]
    assert np.all(br[0] < br[1]) and np.all(br[1] < br[2]) and np.all(br[2] < tv(f))
    assert np.all(ch[1] < ch[0])
    # The two methods are different denoisers: split-Bregman at Table 5's weight 0.25 is not the
    # ROF minimizer for any of Table 6's TV weights.
    b = np.asarray(tv_denoise(f, weight=0.25, method="bregman", steps=200))
    for w in (0.25, 0.5, 1.0, 1.0 / (2 * 0.25)):
        c = np.asarray(tv_denoise(f, weight=w, method="chambolle", steps=200))
        assert np.abs(b - c).max() > 0.01


def test_tv_batch_is_per_image_and_channel():
    f = _images(5, (3, 12, 10, 2))
    for method, w in (("bregman", 0.25), ("chambolle", 0.1)):
        run = jax.jit(lambda v, m=method, w=w: tv_denoise(v, weight=w, method=m, steps=200))
        full = run(f)
        per = jax.vmap(lambda v: run(v[None])[0])(f)
        np.testing.assert_allclose(per, full, atol=1e-5)
        np.testing.assert_allclose(run(f[..., :1]), full[..., :1], atol=1e-5)


def test_tv_limits():
    # A constant image is a fixed point of both; a huge Chambolle weight flattens each channel
    # to its mean.
    c = np.full((1, 6, 6, 1), 0.3, np.float32)
    for method in ("chambolle", "bregman"):
        np.testing.assert_allclose(tv_denoise(c, weight=0.5, method=method, steps=20), c,
                                   atol=1e-6)
    f = _images(6, (1, 8, 8, 2))
    u = tv_denoise(f, weight=100.0, method="chambolle", steps=2000)
    np.testing.assert_allclose(u, np.broadcast_to(f.mean(axis=(1, 2), keepdims=True), f.shape),
                               atol=1e-3)


def test_tv_matches_skimage_if_installed():
    skr = pytest.importorskip("skimage.restoration")
    f = _images(7, (1, 16, 16, 1))
    ref = skr.denoise_tv_chambolle(f[0, :, :, 0], weight=0.1, eps=1e-8, max_num_iter=2000)
    u = tv_denoise(f, weight=0.1, steps=2000)
    np.testing.assert_allclose(np.asarray(u)[0, :, :, 0], ref, atol=1e-3)


def test_tv_rejects_bad_args():
    x = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="method"):
        tv_denoise(x, method="admm")
    with pytest.raises(ValueError, match="weight"):
        tv_denoise(x, weight=0.0)
    with pytest.raises(ValueError, match="steps"):
        tv_denoise(x, steps=0)
    with pytest.raises(ValueError, match="x"):
        tv_denoise(np.zeros((1, 1, 4, 1), np.float32), method="bregman")


@pytest.mark.parametrize("size", [7, 9])
def test_median_filter_network_and_sort_paths_match_scipy(size):
    # k <= 7 uses the selection network, k = 9 the sort; ties (quantized values) included.
    x = np.round(_images(1, (2, 10, 9, 2)) * 4) / 4
    got = np.asarray(jax.jit(lambda v: median_filter(v, size=size))(x))
    ref = scipy.ndimage.median_filter(x, size=(1, size, size, 1), mode="constant", cval=0.0)
    np.testing.assert_allclose(got, ref, atol=0)
