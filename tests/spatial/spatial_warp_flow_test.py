import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from robustjax import spatial as S


_warp = jax.jit(S.warp)


def _rand(key, shape, lo=0.0, hi=1.0):
    return jax.random.uniform(jax.random.key(key), shape, minval=lo, maxval=hi)


def test_zero_flow_is_identity_jit_and_vmap():
    x = _rand(0, (3, 5, 7, 2))
    f = jnp.zeros((3, 5, 7, 2))
    np.testing.assert_array_equal(_warp(x, f), x)
    # vmap over an extra leading axis
    xs = jnp.stack([x, 1 - x])
    out = jax.vmap(S.warp)(xs, jnp.stack([f, f]))
    np.testing.assert_array_equal(out, xs)


@pytest.mark.parametrize("du,dv", [(1, 0), (0, 2), (-1, 1), (3, -2)])
def test_integer_shift_matches_roll_with_zero_fill(du, dv):
    x = np.asarray(_rand(1, (2, 6, 7, 3)))
    f = np.zeros((2, 6, 7, 2), np.float32)
    f[..., 0] = du  # horizontal (columns)
    f[..., 1] = dv  # vertical (rows)
    out = np.asarray(_warp(x, f))
    # output (i, j) = x(i + dv, j + du), zero outside
    ref = np.roll(x, shift=(-dv, -du), axis=(1, 2))
    h, w = 6, 7
    rows = np.arange(h)[:, None] + dv
    cols = np.arange(w)[None, :] + du
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    ref = np.where(inside[None, :, :, None], ref, 0.0)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_matches_scipy_map_coordinates():
    h, w = 8, 9
    x = np.asarray(_rand(2, (2, h, w, 2)))
    f = np.asarray(_rand(3, (2, h, w, 2), -2.5, 2.5))
    out = np.asarray(_warp(x, f))
    for n in range(2):
        rr = np.arange(h)[:, None] + f[n, ..., 1]
        cc = np.arange(w)[None, :] + f[n, ..., 0]
        for c in range(2):
            ref = ndimage.map_coordinates(x[n, ..., c].astype(np.float64), [rr, cc], order=1,
                                          mode="constant", cval=0.0)
            # scipy treats points within half a pixel outside as partially inside only for
            # mode="grid-constant"; "constant" with order=1 interpolates with zeros beyond the
            # last sample except exactly outside [-1, n]; compare where both agree on support.
            inside = (rr > -1) & (rr < h) & (cc > -1) & (cc < w)
            strict = (rr >= 0) & (rr <= h - 1) & (cc >= 0) & (cc <= w - 1)
            np.testing.assert_allclose(out[n, ..., c][strict], ref[strict], atol=1e-5)
            assert np.all(out[n, ..., c][~inside] == 0.0)


def test_matches_scipy_grid_constant_everywhere():
    # mode="grid-constant" pads with zeros at the sample grid, exactly our boundary rule.
    h, w = 7, 6
    x = np.asarray(_rand(4, (1, h, w, 1)))
    f = np.asarray(_rand(5, (1, h, w, 2), -3.0, 3.0))
    out = np.asarray(S.warp(x, f))[0, ..., 0]
    rr = np.arange(h)[:, None] + f[0, ..., 1]
    cc = np.arange(w)[None, :] + f[0, ..., 0]
    ref = ndimage.map_coordinates(x[0, ..., 0].astype(np.float64), [rr, cc], order=1,
                                  mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_flow_gradient_matches_finite_differences_off_grid():
    h, w = 6, 6
    x = _rand(6, (1, h, w, 1))
    # fractional parts kept away from integers by >= 0.2
    base = np.asarray(_rand(7, (1, h, w, 2), -1.0, 1.0))
    f = np.floor(base * 2) + 0.2 + 0.6 * (base - np.floor(base))
    f = jnp.asarray(f, jnp.float32)
    wts = _rand(8, (1, h, w, 1))

    def obj(ff):
        return jnp.sum(wts * S.warp(x, ff))

    g = np.asarray(jax.jit(jax.grad(obj))(f))
    step = 1e-2
    eye = jnp.eye(f.size, dtype=f.dtype).reshape((f.size,) + f.shape) * step
    fd = jax.jit(jax.vmap(lambda e: (obj(f + e) - obj(f - e)) / (2 * step)))(eye)
    fd = np.asarray(fd).reshape(f.shape)
    np.testing.assert_allclose(g, fd, atol=2e-3)


def test_gradient_wrt_x_is_transpose_of_linear_map():
    x = _rand(9, (1, 4, 5, 1))
    f = _rand(10, (1, 4, 5, 2), -1.5, 1.5)
    u = _rand(11, (1, 4, 5, 1))
    gx = jax.grad(lambda xx: jnp.vdot(u, S.warp(xx, f)))(x)
    # <u, A x> = <A^T u, x> for random x
    x2 = _rand(12, x.shape)
    np.testing.assert_allclose(jnp.vdot(u, S.warp(x2, f)), jnp.vdot(gx, x2), rtol=1e-5)


def test_warp_validation():
    x = jnp.zeros((2, 4, 4, 1))
    with pytest.raises(ValueError, match="flow"):
        S.warp(x, jnp.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="x"):
        S.warp(jnp.zeros((4, 4, 1)), jnp.zeros((2, 4, 4, 2)))


def _tv_reference(flow, form, smoothing=0.0):
    """Loop reference: 4-neighbourhood, replicate padding, one term per (pixel, neighbour)."""
    root = (lambda s: np.sqrt(s + smoothing**2) - smoothing) if smoothing else np.sqrt
    n, h, w, _ = flow.shape
    out = np.zeros(n)
    for b in range(n):
        tot = 0.0
        for i in range(h):
            for j in range(w):
                s = 0.0
                for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    ii = min(max(i + di, 0), h - 1)
                    jj = min(max(j + dj, 0), w - 1)
                    pair = np.sum((flow[b, i, j].astype(np.float64)
                                   - flow[b, ii, jj].astype(np.float64)) ** 2)
                    if form == "stadv":  # Xiao et al. Eqn 4: one root per neighbour pair
                        tot += root(pair)
                    s += pair
                if form == "stadv_pixel":
                    tot += root(s)
                elif form == "paper":
                    tot += s
        out[b] = root(tot) if form == "paper" else tot
    return out


@pytest.mark.parametrize("form", ["paper", "stadv", "stadv_pixel"])
def test_flow_loss_matches_loop_reference(form):
    f = np.asarray(_rand(13, (2, 5, 4, 2), -1, 1))
    got = jax.jit(lambda ff: S.flow_loss(ff, form=form))(f)
    np.testing.assert_allclose(got, _tv_reference(f, form), rtol=1e-5)
    got_s = S.flow_loss(f, form=form, smoothing=0.1)
    np.testing.assert_allclose(got_s, _tv_reference(f, form, smoothing=0.1), rtol=1e-5)
    # zero and constant flows have zero loss and finite (zero) gradient
    const = jnp.ones((1, 5, 4, 2)) * jnp.array([0.3, -1.2])
    assert float(S.flow_loss(const, form=form)[0]) == 0.0
    g = jax.grad(lambda ff: S.flow_loss(ff, form=form)[0])(jnp.zeros((1, 5, 4, 2)))
    assert np.all(np.isfinite(g)) and np.all(g == 0)
    # vmap over examples equals the batched call
    v = jax.vmap(lambda ff: S.flow_loss(ff[None], form=form)[0])(f)
    np.testing.assert_allclose(v, got, rtol=1e-6)


def test_stadv_flow_loss_is_xiao_eqn4_on_known_fields():
    # Column step of height 1 in u on a 3x3 field: 3 horizontal edges of length 1, each counted
    # from both ends -> 6 for both the per-pair and the per-pixel form.
    f = np.zeros((1, 3, 3, 2), np.float32)
    f[0, :, 2, 0] = 1.0
    np.testing.assert_allclose(S.flow_loss(f, form="stadv"), [6.0], rtol=1e-6)
    np.testing.assert_allclose(S.flow_loss(f, form="stadv_pixel"), [6.0], rtol=1e-6)
    # One displaced centre pixel: 4 edges of length 1. Per pair: 4 edges x 2 ends = 8;
    # per pixel: centre sqrt(4) = 2 plus 4 neighbours x 1 = 6.
    g = np.zeros((1, 3, 3, 2), np.float32)
    g[0, 1, 1, 0] = 1.0
    np.testing.assert_allclose(S.flow_loss(g, form="stadv"), [8.0], rtol=1e-6)
    np.testing.assert_allclose(S.flow_loss(g, form="stadv_pixel"), [6.0], rtol=1e-6)


def test_flow_loss_forms_ordering():
    # sum of roots >= root of sum: per-pair (Xiao) >= per-pixel >= paper (one root)
    f = _rand(14, (3, 6, 6, 2), -1, 1)
    pair = np.asarray(S.flow_loss(f, form="stadv"))
    pix = np.asarray(S.flow_loss(f, form="stadv_pixel"))
    assert np.all(pair >= pix - 1e-5)
    assert np.all(pix >= np.asarray(S.flow_loss(f, form="paper")) - 1e-5)
    with pytest.raises(ValueError, match="form"):
        S.flow_loss(f, form="l1")


def test_neighbour_matrices_and_gram():
    h, w = 4, 5
    mt, mb, ml, mr = (np.asarray(m) for m in S.neighbour_matrices(h, w))
    idx = np.arange(h * w).reshape(h, w)
    assert mt[idx[2, 3], idx[1, 3]] == 1 and mb[idx[2, 3], idx[3, 3]] == 1
    assert ml[idx[2, 3], idx[2, 2]] == 1 and mr[idx[2, 3], idx[2, 4]] == 1
    assert mt[idx[0, 1], idx[0, 1]] == 1  # replicate padding on the boundary
    for m in (mt, mb, ml, mr):
        np.testing.assert_array_equal(m.sum(1), 1.0)
    g = np.asarray(S.tv_gram(h, w))
    np.testing.assert_allclose(g, g.T)
    np.testing.assert_allclose(g @ np.ones(h * w), 0.0, atol=1e-6)  # constants: null space
    eig = np.linalg.eigvalsh(g)
    assert eig[0] > -1e-6 and eig[1] > 1e-3  # PSD, rank d - 1 (grid connected)
    # 4 x graph Laplacian: diagonal = 4 * degree
    deg = np.array([[(i > 0) + (i < h - 1) + (j > 0) + (j < w - 1) for j in range(w)]
                    for i in range(h)]).reshape(-1)
    np.testing.assert_allclose(np.diag(g), 4 * deg)


@pytest.mark.parametrize("ridge", [0.0, 0.1])
def test_matrix_form_equals_ldiff_and_inverse(ridge):
    h, w = 4, 5
    fac = S.tv_factors(h, w, ridge=ridge)
    m, m_inv = np.asarray(fac.m, np.float64), np.asarray(fac.m_inv, np.float64)
    np.testing.assert_allclose(m @ m, np.asarray(S.tv_gram(h, w)) + ridge * np.eye(h * w),
                               atol=1e-4)
    r = np.asarray(_rand(15, (h * w,), -1, 1))
    flow = np.stack([r, r], -1).reshape(1, h, w, 2)
    ldiff = float(S.flow_loss(flow, form="paper")[0])
    if ridge == 0.0:
        np.testing.assert_allclose(np.linalg.norm(m @ r), ldiff, rtol=1e-4)  # Eqn 3 / Prop 1
        proj = np.eye(h * w) - 1.0 / (h * w)  # complement of constants
        np.testing.assert_allclose(m_inv @ m, proj, atol=1e-4)
    else:
        np.testing.assert_allclose(np.linalg.norm(m @ r) ** 2, ldiff**2 + ridge * r @ r,
                                   rtol=1e-4)
        np.testing.assert_allclose(m_inv @ m, np.eye(h * w), atol=1e-4)


@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_aabb_radii_prop2(ridge):
    h, w = 4, 4
    eps = 0.7
    fac = S.tv_factors(h, w, ridge=ridge)
    lam = np.asarray(S.aabb_radii(h, w, ridge=ridge), np.float64)
    gi = np.asarray(fac.gram_inv, np.float64)
    g = np.asarray(S.tv_gram(h, w), np.float64) + ridge * np.eye(h * w)
    for i in range(h * w):  # the extreme point attains eps * lam_i on the ellipsoid
        r = eps * gi[:, i] / np.sqrt(gi[i, i])
        np.testing.assert_allclose(np.sqrt(r @ g @ r), eps, rtol=1e-4)
        np.testing.assert_allclose(r[i], eps * lam[i], rtol=1e-4)
    # random feasible (zero-mean when ridge = 0) points stay inside the box
    rs = np.random.default_rng(0).normal(size=(500, h * w))
    if ridge == 0.0:
        rs -= rs.mean(1, keepdims=True)
    rs *= eps / np.sqrt(np.einsum("ni,ij,nj->n", rs, g, rs))[:, None]
    assert np.all(np.abs(rs) <= eps * lam[None] + 1e-6)
    # corner pixels move most freely under TV
    assert lam[0] > lam[5]


def test_far_outside_flow_gives_zero_value_and_gradient():
    # sampling points beyond the zero padding (clamped internally) read 0 with zero derivative;
    # a point exactly one pixel outside still has the one-sided derivative x[0] - 0.
    x = _rand(30, (1, 4, 5, 1), 0.1, 1.0)
    f = np.zeros((1, 4, 5, 2), np.float32)
    f[0, 0, 0] = (100.0, 0.0)
    f[0, 1, 1] = (0.0, -57.5)
    f[0, 2, 2] = (0.0, -3.0)  # row 2 - 3 = -1: exactly on the clamp point
    f = jnp.asarray(f)
    out, vjp = jax.vjp(lambda ff: S.warp(x, ff), f)
    assert float(out[0, 0, 0, 0]) == 0.0 and float(out[0, 1, 1, 0]) == 0.0
    assert float(out[0, 2, 2, 0]) == 0.0
    g = np.asarray(vjp(jnp.ones_like(out))[0])
    assert np.all(g[0, 0, 0] == 0) and np.all(g[0, 1, 1] == 0)
    np.testing.assert_allclose(g[0, 2, 2, 1], float(x[0, 0, 2, 0]), rtol=1e-6)
