import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import certify as C
from robustjax import spatial as S

H, W = 3, 3
D = H * W
HID = 6
EPS = 1.0
SCS = dict(eps_abs=1e-7, eps_rel=1e-7, max_iters=200000)


def _net(seed, k=None):
    k1, k2 = jax.random.split(jax.random.key(seed))
    w = jax.random.normal(k1, (HID, D))
    v = jax.random.normal(k2, (HID,) if k is None else (k, HID))
    return w, v


def _f_hidden(w, v):
    return lambda x: jnp.vdot(v, jax.nn.relu(w @ x))


# ---------------------------------------------------------------------------- Theorem 2 / Alg. 2
def test_theorem2_init_closed_form_and_brute_force():
    v = jax.random.normal(jax.random.key(0), (D,))
    x, r, val = C.theorem2_init(v, shape=(H, W), eps=EPS)
    fac = S.tv_factors(H, W)
    assert float(jnp.max(jnp.abs(x))) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(fac.m @ r), EPS, rtol=1e-4)
    # attained linear loss v^T diag(x) r equals the closed form eps ||M^-1 diag(v) x||
    lin = S.adversarial_loss_linear(lambda z: jnp.vdot(v, z), x, r)
    np.testing.assert_allclose(lin, val, rtol=1e-4)
    np.testing.assert_allclose(val, EPS * jnp.linalg.norm(fac.m_inv @ (v * x)), rtol=1e-5)
    # Theorem 2 is a lower bound of the supremum of Eqn 10 (a convex function of x, so its
    # maximum over the cube is at a vertex: brute force the 2^9 vertices)
    mi = np.asarray(fac.m_inv, np.float64)
    vn = np.asarray(v, np.float64)
    sup = max(np.linalg.norm(mi @ (vn * np.array(s))) for s in itertools.product([-1, 1],
                                                                                 repeat=D))
    assert float(val) <= EPS * sup + 1e-5
    assert float(val) >= 0.5 * EPS * sup  # and not a trivial one


def test_algorithm2_improves_converges_and_is_bounded():
    v = jax.random.normal(jax.random.key(1), (D,))
    run = jax.jit(functools.partial(C.linear_lower_bound, shape=(H, W), eps=EPS, steps=12))
    res = run(v)
    hist = np.asarray(res.history)
    f = lambda z: jnp.vdot(v, z)  # noqa: E731
    x0, r0, _ = C.theorem2_init(v, shape=(H, W), eps=EPS)
    np.testing.assert_allclose(hist[0], S.adversarial_loss(f, x0, r0, shape=(H, W)), rtol=1e-4)
    np.testing.assert_allclose(res.loss, S.adversarial_loss(f, res.x, res.r, shape=(H, W)),
                               rtol=1e-4)
    assert float(res.loss) >= hist[0] - 1e-6 and float(res.loss) == pytest.approx(hist.max())
    assert abs(hist[-1] - hist[-2]) <= 1e-3 * abs(hist[-1])  # converged
    assert set(np.unique(np.asarray(res.x))) <= {-1.0, 1.0}
    fac = S.tv_factors(H, W)
    np.testing.assert_allclose(jnp.linalg.norm(fac.m @ res.r), EPS, rtol=1e-3)
    assert abs(float(jnp.mean(res.r))) < 1e-5  # pseudo-inverse: zero-mean flow
    # Eqn 16 with kappa = 4 (inputs in [-1, 1]) bounds the attained loss
    ub = C.linear_upper_bound(v, S.aabb_radii(H, W), eps=EPS, jacobian_bound=4.0)
    assert float(res.loss) <= float(ub)
    # vmap over weight vectors equals separate runs
    vs = jnp.stack([v, -2.0 * v + 0.1])
    batched = jax.vmap(run)(vs)
    np.testing.assert_allclose(batched.loss[0], res.loss, rtol=1e-4)
    np.testing.assert_allclose(batched.loss[1], run(vs[1]).loss, rtol=1e-4)


# ---------------------------------------------------------------------------- Theorem 1 / Alg. 1
def test_theorem1_init_activates_rows_and_matches_linear_loss():
    w, v = _net(2)
    x, r, val = C.theorem1_init(w, v, shape=(H, W), eps=EPS)
    assert float(jnp.max(jnp.abs(x))) == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.asarray(w @ x) > 0)  # h = 6 < d = 9: all rows independent, all active
    lin = S.adversarial_loss_linear(_f_hidden(w, v), x, r)
    np.testing.assert_allclose(lin, val, rtol=1e-4)
    np.testing.assert_allclose(jnp.linalg.norm(S.tv_factors(H, W).m @ r), EPS, rtol=1e-4)


def test_algorithm1_sandwich_with_sdp_and_duals():
    w, v = _net(3)
    res = jax.jit(functools.partial(C.one_hidden_lower_bound, shape=(H, W), eps=EPS,
                                    steps=10))(w, v)
    hist = np.asarray(res.history)
    f = _f_hidden(w, v)
    np.testing.assert_allclose(res.loss, S.adversarial_loss(f, res.x, res.r, shape=(H, W)),
                               rtol=1e-4)
    assert float(res.loss) >= hist[0] - 1e-6
    assert float(res.loss) > float(res.init_linear) * 0.5
    lam = S.aabb_radii(H, W)
    p = C.sdp_matrix(w, v, lam)
    val, info = C.sdp_bound(p, **SCS)
    assert info["status"] == "optimal"
    # sandwich (kappa = 4 for inputs in [-1, 1]): lower bound <= (kappa/2) eps SDP
    assert float(res.loss) <= 2.0 * EPS * val
    # SDP <= its trivial bounds: sum |P_ij| and n * lambda_max(P); >= z^T P z at vertices
    pn = np.asarray(p, np.float64)
    assert val <= np.abs(pn).sum() + 1e-4
    assert val <= pn.shape[0] * np.linalg.eigvalsh(pn)[-1] + 1e-4
    zs = np.sign(np.random.default_rng(0).normal(size=(2000, pn.shape[0])))
    assert val >= np.max(np.einsum("ni,ij,nj->n", zs, pn, zs)) - 1e-4
    # weak duality for arbitrary c, near-equality at the solver's multipliers and after
    # optimizing c
    for seed in range(3):
        c = jax.random.normal(jax.random.key(seed), (pn.shape[0],)) * 3.0
        assert float(C.sdp_dual_bound(p, c)) >= val - 1e-4
    np.testing.assert_allclose(C.sdp_dual_bound(p, jnp.asarray(info["dual"], jnp.float32)), val,
                               rtol=1e-3)
    c_opt, bound = jax.jit(functools.partial(C.optimize_dual, steps=400))(p)
    assert val - 1e-4 <= float(bound) <= 1.01 * val
    np.testing.assert_allclose(C.sdp_dual_bound(p, c_opt), bound, rtol=1e-5)
    assert float(bound) < float(C.sdp_dual_bound(p, C.dual_init(p)))
    # smoothed dual is still an upper bound
    assert float(C.sdp_dual_bound(p, c_opt, temperature=0.1)) >= float(bound) - 1e-5


def test_naive_bounds_closed_forms():
    w, v = _net(4)
    wn, vn = np.asarray(w, np.float64), np.asarray(v, np.float64)
    fro = float(C.frobenius_bound(w, v, eps=0.3))
    spe = float(C.spectral_bound(w, v, eps=0.3))
    np.testing.assert_allclose(fro, 0.3 * np.linalg.norm(wn, "fro") * np.linalg.norm(vn),
                               rtol=1e-5)
    np.testing.assert_allclose(spe, 0.3 * np.linalg.norm(wn, 2) * np.linalg.norm(vn), rtol=1e-5)
    assert spe <= fro
    with pytest.raises(ValueError, match="eps"):
        C.spectral_bound(w, v, eps=-1.0)


def test_dual_regularizer_is_differentiable_in_weights():
    w, v = _net(5)
    lam = S.aabb_radii(H, W)

    def reg(ww):
        p = C.sdp_matrix(ww, v, lam)
        c, _ = C.optimize_dual(p, steps=100)
        return C.sdp_dual_bound(p, c)

    g = jax.jit(jax.grad(lambda ww: C.sdp_dual_bound(C.sdp_matrix(ww, v, lam),
                                                     jnp.full((HID + D,), 0.5))))(w)
    # finite differences at fixed c (the function is smooth where lambda_max is simple)
    e = jax.random.normal(jax.random.key(9), w.shape)
    fd_fun = lambda t: C.sdp_dual_bound(C.sdp_matrix(w + t * e, v, lam),  # noqa: E731
                                        jnp.full((HID + D,), 0.5))
    fd = (fd_fun(1e-3) - fd_fun(-1e-3)) / 2e-3
    np.testing.assert_allclose(jnp.vdot(g, e), fd, rtol=2e-2)
    gr = jax.jit(jax.grad(reg))(w)
    assert np.all(np.isfinite(np.asarray(gr))) and float(jnp.linalg.norm(gr)) > 0


# ---------------------------------------------------------------------------- multi-class
def test_multiclass_lower_bounds_and_pairwise_sdp():
    k = 3
    w, vk = _net(6, k=k)
    lam = S.aabb_radii(H, W)
    ps = C.pairwise_sdp_matrices(w, vk, lam)
    assert ps.shape == (k, k, HID + D, HID + D)
    np.testing.assert_allclose(ps[0, 1], -ps[1, 0], atol=1e-6)
    np.testing.assert_allclose(ps[2, 2], 0.0)
    label = 1
    res = jax.jit(functools.partial(C.one_hidden_lower_bound, shape=(H, W), eps=EPS,
                                    y=label, steps=4))(w, vk)
    other = int(res.other)
    assert other != label and 0 <= other < k
    f = _f_hidden(w, vk[other] - vk[label])
    np.testing.assert_allclose(res.loss, S.adversarial_loss(f, res.x, res.r, shape=(H, W)),
                               rtol=1e-4)
    val, info = C.multiclass_sdp_bound(w, vk, lam, label, **SCS)
    assert info["per_class"][label] == -np.inf and info["argmax"] != label
    assert float(res.loss) <= 2.0 * EPS * info["per_class"][other] + 1e-4
    assert float(res.loss) <= 2.0 * EPS * val + 1e-4
    # batched dual bounds for all pairs
    c = jax.vmap(jax.vmap(lambda p: C.dual_init(p)))(ps)
    duals = jax.jit(C.sdp_dual_bound)(ps, c)
    assert duals.shape == (k, k)
    assert float(duals[other, label]) >= info["per_class"][other] - 1e-4
    # linear K-class variant
    vl = jax.random.normal(jax.random.key(7), (k, D))
    rl = jax.jit(functools.partial(C.linear_lower_bound, shape=(H, W), eps=EPS, y=0,
                                   steps=4))(vl)
    assert int(rl.other) in (1, 2) and float(rl.loss) > 0
    with pytest.raises(ValueError, match="`y`"):
        C.linear_lower_bound(vl, shape=(H, W), eps=EPS)


# ------------------------------------------------------------------ Burer-Monteiro dual point
def _bm_problem(seed, h=8, shape=(4, 5)):
    k1, k2 = jax.random.split(jax.random.key(seed))
    w = jax.random.normal(k1, (h, shape[0] * shape[1]))
    v = jax.random.normal(k2, (h,))
    return C.sdp_matrix(w, v, S.aabb_radii(*shape)), h


@pytest.mark.parametrize("seed", [0, 1])
def test_optimize_dual_bm_is_certified_and_tight_vs_scs(seed):
    p, h = _bm_problem(seed)
    val, _ = C.sdp_bound(np.asarray(p, np.float64), **SCS)
    run = jax.jit(lambda pp: C.optimize_dual_bm(pp, jax.random.key(0), split=h, steps=300))
    c, bound = run(p)
    c64 = np.asarray(c, np.float64)
    p64 = np.asarray(p, np.float64)
    # the Schur/Cholesky certificate: lambda_max(P - diag(c)) <= 0 (up to float32 rounding)
    assert np.linalg.eigvalsh(p64 - np.diag(c64))[-1] <= 1e-4 * np.abs(c64).max()
    np.testing.assert_allclose(float(bound), c64.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(bound), float(C.sdp_dual_bound(p, c)), rtol=1e-4)
    # weak duality (valid) and tight: within 0.5 % of the SCS optimum
    assert float(bound) >= val * (1 - 1e-4)
    assert float(bound) <= val * 1.005
    # general path (no block structure): an exact eigvalsh certificate, also valid
    c2, b2 = jax.jit(lambda pp: C.optimize_dual_bm(pp, jax.random.key(1), steps=500))(p)
    assert float(b2) >= val * (1 - 1e-4) and float(b2) <= val * 1.05
    # vmap over a stack equals the single calls; same key -> same result
    cs, bs = jax.vmap(lambda pp: C.optimize_dual_bm(pp, jax.random.key(0), split=h,
                                                    steps=300))(jnp.stack([p, -p]))
    np.testing.assert_allclose(bs[0], bound, rtol=1e-5)
    np.testing.assert_allclose(bs[1], bound, rtol=1e-3)  # SDP(-P) = SDP(P) for this P
    np.testing.assert_array_equal(run(p)[0], c)


def test_optimize_dual_bm_validation():
    p, h = _bm_problem(0)
    with pytest.raises(ValueError, match="split"):
        C.optimize_dual_bm(p, jax.random.key(0), split=p.shape[0])
    with pytest.raises(ValueError, match="rank"):
        C.optimize_dual_bm(p, jax.random.key(0), rank=0)


def test_ellipsoid_radius_is_attained_and_bounds_every_zero_mean_flow():
    h, w = 4, 5
    g = np.asarray(S.tv_gram(h, w), np.float64)
    rho = S.ellipsoid_radius(h, w)
    mu, u = np.linalg.eigh(g)
    k = int(np.argmax(mu > 1e-6))  # smallest nonzero eigenvalue (index 0: constants)
    r = u[:, k] / np.sqrt(mu[k])  # ||M r||^2 = r^T G r = 1
    np.testing.assert_allclose(r @ g @ r, 1.0, rtol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(r), rho, rtol=1e-6)  # attained
    rng = np.random.default_rng(0)
    for _ in range(200):
        z = rng.normal(size=h * w)
        z -= z.mean()  # zero-mean: the certified set
        z /= np.sqrt(z @ g @ z)
        assert np.linalg.norm(z) <= rho * (1 + 1e-9)
    # tighter than the AABB's diagonal: rho <= ||lambda||_2
    assert rho <= float(np.linalg.norm(np.asarray(S.aabb_radii(h, w)))) + 1e-6


def test_box_and_ellipsoid_bounds_are_valid_by_sampling_and_ellipsoid_tighter():
    w, v = _net(5)
    f = _f_hidden(w, v)
    lam = S.aabb_radii(H, W)
    rho = S.ellipsoid_radius(H, W)
    eps = 0.3
    g = np.asarray(S.tv_gram(H, W), np.float64)
    bounds = {(kind, norm): float(fn(norm)) for kind, fn in (
        ("box", lambda nm: C.box_bound(w, v, lam, eps=eps, norm=nm, jacobian_bound=2.0)),
        ("ell", lambda nm: C.ellipsoid_bound(w, v, rho, eps=eps, norm=nm, jacobian_bound=2.0)))
        for norm in ("fro", "spectral")}
    wn, vn, ln = (np.asarray(a, np.float64) for a in (w, v, lam))
    np.testing.assert_allclose(bounds["ell", "fro"], 2 * eps * rho * np.linalg.norm(wn)
                               * np.linalg.norm(vn), rtol=1e-5)
    np.testing.assert_allclose(bounds["box", "spectral"], 2 * eps * np.sqrt(D) * np.linalg.norm(
        wn * ln[None], 2) * np.linalg.norm(vn), rtol=1e-5)
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(300):  # images in [0, 1], zero-mean flows on the boundary ||M r|| = eps
        x = rng.uniform(size=D).astype(np.float32)
        r = rng.normal(size=D)
        r -= r.mean()
        r *= eps / np.sqrt(r @ g @ r)
        loss = float(f(S.warp_diagonal(x, jnp.asarray(r, jnp.float32), shape=(H, W))) - f(x))
        worst = max(worst, abs(loss))
    assert worst > 0
    for b in bounds.values():
        assert worst <= b
    # at this size the ellipsoid bound is the tighter one for each norm
    assert bounds["ell", "spectral"] < bounds["box", "spectral"]
    assert bounds["ell", "fro"] < bounds["box", "fro"]
    with pytest.raises(ValueError, match="norm"):
        C.ellipsoid_bound(w, v, rho, eps=eps, norm="l1")
