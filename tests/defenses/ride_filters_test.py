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
    lhs = np.sum(np.asarray(image_gradient(u)) * p)
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


@pytest.mark.parametrize("method,iters", [("chambolle", 1000), ("bregman", 200)])
def test_tv_matches_convex_solver(method, iters):
    # An independent reference: the ROF problem solved as an SOCP by cvxpy.
    f = _images(3, (1, 10, 9, 1))
    weight = 0.2
    ref = _rof_cvxpy(f[0, :, :, 0].astype(np.float64), weight)
    u = jax.jit(lambda v: tv_denoise(v, weight=weight, method=method, num_iters=iters))(f)
    np.testing.assert_allclose(np.asarray(u)[0, :, :, 0], ref, atol=2e-3)


@pytest.mark.parametrize("method,few,many", [("chambolle", 5, 300), ("bregman", 3, 100)])
def test_tv_decreases_energy(method, few, many):
    f = _images(4, (2, 12, 12, 3))
    weight = 0.15
    e_in = rof_energy(f, f, weight)
    e_few = rof_energy(tv_denoise(f, weight=weight, method=method, num_iters=few), f, weight)
    e_many = rof_energy(tv_denoise(f, weight=weight, method=method, num_iters=many), f, weight)
    assert e_in.shape == (2,)
    assert np.all(e_few < e_in - 1e-3)
    assert np.all(e_many < e_few - 1e-4)


def test_tv_methods_agree_and_batch_is_per_image():
    f = _images(5, (3, 12, 10, 2))
    weight = 0.1
    ch = jax.jit(lambda v: tv_denoise(v, weight=weight, method="chambolle", num_iters=800))(f)
    br = jax.jit(lambda v: tv_denoise(v, weight=weight, method="bregman", num_iters=200))(f)
    np.testing.assert_allclose(ch, br, atol=3e-3)
    np.testing.assert_allclose(rof_energy(ch, f, weight), rof_energy(br, f, weight), rtol=1e-3)
    # vmap over single images (and single channels) equals the batched call.
    per = jax.vmap(lambda v: tv_denoise(v[None], weight=weight, method="bregman", num_iters=200))(f)
    np.testing.assert_allclose(per[:, 0], br, atol=1e-5)
    ch1 = tv_denoise(f[..., :1], weight=weight, method="bregman", num_iters=200)
    np.testing.assert_allclose(ch1, br[..., :1], atol=1e-5)


def test_tv_limits():
    # A constant image is a fixed point; a huge weight flattens each channel to its mean.
    c = np.full((1, 6, 6, 1), 0.3, np.float32)
    np.testing.assert_allclose(tv_denoise(c, weight=0.5, num_iters=20), c, atol=1e-6)
    f = _images(6, (1, 8, 8, 2))
    for method in ("chambolle", "bregman"):
        u = tv_denoise(f, weight=100.0, method=method, num_iters=2000)
        np.testing.assert_allclose(u, np.broadcast_to(f.mean(axis=(1, 2), keepdims=True), f.shape),
                                   atol=1e-3)


def test_tv_matches_skimage_if_installed():
    skr = pytest.importorskip("skimage.restoration")
    f = _images(7, (1, 16, 16, 1))
    ref = skr.denoise_tv_chambolle(f[0, :, :, 0], weight=0.1, eps=1e-8, max_num_iter=2000)
    u = tv_denoise(f, weight=0.1, num_iters=2000)
    np.testing.assert_allclose(np.asarray(u)[0, :, :, 0], ref, atol=1e-3)


def test_tv_rejects_bad_args():
    x = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="method"):
        tv_denoise(x, method="admm")
    with pytest.raises(ValueError, match="weight"):
        tv_denoise(x, weight=0.0)
    with pytest.raises(ValueError, match="num_iters"):
        tv_denoise(x, num_iters=0)


@pytest.mark.parametrize("size", [7, 9])
def test_median_filter_network_and_sort_paths_match_scipy(size):
    # k <= 7 uses the selection network, k = 9 the sort; ties (quantized values) included.
    x = np.round(_images(1, (2, 10, 9, 2)) * 4) / 4
    got = np.asarray(jax.jit(lambda v: median_filter(v, size=size))(x))
    ref = scipy.ndimage.median_filter(x, size=(1, size, size, 1), mode="constant", cval=0.0)
    np.testing.assert_allclose(got, ref, atol=0)
