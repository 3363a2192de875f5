"""FAB / FAB-T: the exact box-constrained hyperplane projection and the attack."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from robustjax import attacks


def _problem(seed, m=8, d=9, spread=1.0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, 1.0, (m, d))
    w = rng.normal(size=(m, d))
    w[0, :3] = 0.0  # zero weights must give zero steps
    b = np.sum(w * t, 1) + spread * rng.normal(size=m)
    return t, w, b


def _linf_reference(t, w, b):
    """min rho s.t. -rho <= d <= rho, <w, t + d> = b, 0 <= t + d <= 1 (LP in (d, rho))."""
    d = t.size
    c = np.zeros(d + 1)
    c[-1] = 1.0
    eye = np.eye(d)
    a_ub = np.block([[eye, -np.ones((d, 1))], [-eye, -np.ones((d, 1))]])
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(2 * d), A_eq=np.append(w, 0.0)[None],
                  b_eq=[b - w @ t], bounds=[(-ti, 1 - ti) for ti in t] + [(0, None)],
                  method="highs")
    return res.x[-1] if res.status == 0 else None


def _l2_reference(t, w, b):
    dv = cp.Variable(t.size)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(dv)),
                      [w @ (t + dv) == b, t + dv >= 0, t + dv <= 1])
    prob.solve()
    return None if dv.value is None else float(np.linalg.norm(dv.value))


def _feasible(t, w, b):
    lo = np.sum(np.minimum(w * (0 - t), w * (1 - t)), 1)
    hi = np.sum(np.maximum(w * (0 - t), w * (1 - t)), 1)
    need = b - np.sum(w * t, 1)
    return (need >= lo) & (need <= hi)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_matches_lp_qp_reference(norm, seed):
    t, w, b = _problem(seed, spread=0.6)
    got = np.asarray(jax.jit(lambda *a: attacks.fab_projection(*a, norm=norm))(
        jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)),
        np.float64)
    feas = _feasible(t, w, b)
    assert feas.sum() >= 4  # the test exercises the feasible case
    for i in np.flatnonzero(feas):
        ref = _linf_reference(t[i], w[i], b[i]) if norm == "linf" else _l2_reference(
            t[i], w[i], b[i])
        val = np.abs(got[i]).max() if norm == "linf" else np.linalg.norm(got[i])
        # Same optimal value (float32 arithmetic on O(1) data; the reference solvers are
        # accurate to ~1e-8).
        np.testing.assert_allclose(val, ref, rtol=2e-4, atol=2e-5)
        # Our step is feasible: on the hyperplane and inside the box.
        scale = np.abs(w[i]).sum()
        assert abs(w[i] @ (t[i] + got[i]) - b[i]) <= 1e-5 * scale + 1e-5
        assert np.all(t[i] + got[i] >= -1e-6) and np.all(t[i] + got[i] <= 1 + 1e-6)
        if i == 0:
            assert np.all(got[0, :3] == 0.0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_infeasible_goes_to_the_closest_corner(norm):
    # The hyperplane lies beyond the box: the step is the largest decrease of <w, z>, i.e. the
    # corner z_i = 0 where w_i > 0 and z_i = 1 where w_i < 0.
    t, w, _ = _problem(5, m=4)
    b = np.sum(np.minimum(0.0, w), 1) - 1.0  # below min over the box of <w, z>
    assert not _feasible(t, w, b).any()
    got = np.asarray(attacks.fab_projection(t.astype(np.float32), w.astype(np.float32),
                                            b.astype(np.float32), norm=norm))
    corner = np.where(w > 0, 0.0, np.where(w < 0, 1.0, t))
    np.testing.assert_allclose(t + got, corner, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_without_box_is_the_closed_form(norm):
    t, w, b = _problem(3)
    got = np.asarray(attacks.fab_projection(t.astype(np.float32), w.astype(np.float32),
                                            b.astype(np.float32), norm=norm, box=None))
    c = (b - np.sum(w * t, 1))[:, None]
    want = (c * np.sign(w) / np.abs(w).sum(1, keepdims=True) if norm == "linf"
            else c * w / np.sum(w * w, 1, keepdims=True))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


_W = np.asarray(jax.random.normal(jax.random.key(7), (12, 2)), np.float32)
_B = np.asarray([0.3, -0.2], np.float32)


def _linear(x):
    return jnp.reshape(x, (x.shape[0], -1)) @ _W + _B


@pytest.mark.parametrize("targeted", [True, False])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_minimal_distance_of_an_affine_classifier(norm, targeted):
    # For an affine binary classifier the linearization is exact: the minimal adversarial
    # distance inside the box is the projection of x onto the decision hyperplane (LP / QP
    # reference). FAB's extrapolation (η = 1.05) and backward steps (β = 0.9) converge to it.
    x = jax.random.uniform(jax.random.key(3), (6, 2, 6, 1), minval=0.2, maxval=0.8)
    y = jnp.argmax(_linear(x), -1).astype(jnp.int32)
    info = attacks.fab_with_info(_linear, jax.random.key(0), x, y, eps=10.0, norm=norm,
                                 steps=30, n_target_classes=1 if targeted else None)
    xf = np.asarray(x, np.float64).reshape(6, -1)
    wdiff = (_W[:, 1] - _W[:, 0]).astype(np.float64)
    for i in range(6):
        s = 1.0 if int(y[i]) == 1 else -1.0  # boundary: <w1 - w0, z> + b1 - b0 = 0
        bnd = -(_B[1] - _B[0])
        ref = (_linf_reference(xf[i], s * wdiff, s * bnd) if norm == "linf"
               else _l2_reference(xf[i], s * wdiff, s * bnd))
        assert ref is not None
        assert bool(info.success[i])
        dist = float(info.distance[i])
        assert ref * (1 - 1e-4) - 1e-6 <= dist <= ref * 1.02
    pred = np.asarray(jnp.argmax(_linear(info.x_adv), -1))
    assert np.all(pred != np.asarray(y))


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 1.5)])
def test_fab_is_closer_than_pgd_at_equal_success(trained_mlp, norm, eps):
    _, f, x, y = trained_mlp
    correct = np.asarray(jnp.argmax(f(x), -1) == y)
    info = jax.jit(lambda k, xx, yy: attacks.fab_with_info(
        f, k, xx, yy, eps=eps, norm=norm, steps=20, n_target_classes=4))(
            jax.random.key(0), x, y)
    x_pgd = attacks.pgd(f, jax.random.key(0), x, y, eps=eps, norm=norm, steps=20)
    fooled_pgd = np.asarray(jnp.argmax(f(x_pgd), -1) != y) & correct
    succ = np.asarray(info.success)
    # Success only on correctly classified points, adversarial, inside ball and box.
    assert not np.any(succ & ~correct)
    pred = np.asarray(jnp.argmax(f(info.x_adv), -1))
    assert np.all(pred[succ] != np.asarray(y)[succ])
    delta = np.asarray(info.x_adv - x).reshape(len(y), -1)
    nrm = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(nrm <= eps * (1 + 1e-5) + 1e-6)
    assert np.all(delta[~succ] == 0.0)
    np.testing.assert_allclose(nrm[succ], np.asarray(info.distance)[succ], rtol=1e-4,
                               atol=1e-6)
    assert 0 <= info.x_adv.min() and info.x_adv.max() <= 1
    # Equal success (within 3 of ~60 points), at a clearly smaller distance than PGD's.
    assert succ.sum() >= fooled_pgd.sum() - 3
    both = succ & fooled_pgd
    assert both.sum() >= 40
    d_pgd = np.asarray(x_pgd - x).reshape(len(y), -1)
    n_pgd = np.abs(d_pgd).max(1) if norm == "linf" else np.linalg.norm(d_pgd, axis=1)
    assert np.median(nrm[both]) <= 0.8 * np.median(n_pgd[both])


def test_fab_eps_zero_and_misclassified_points_are_unchanged(trained_mlp):
    _, f, x, y = trained_mlp
    wrong = (y + 1) % 10
    out = attacks.fab(f, jax.random.key(0), x[:8], wrong[:8].astype(jnp.int32), eps=0.3,
                      steps=5, n_target_classes=2)
    bad = np.asarray(jnp.argmax(f(x[:8]), -1) != wrong[:8])
    np.testing.assert_array_equal(np.asarray(out)[bad], np.asarray(x[:8])[bad])
    out0 = attacks.fab(f, jax.random.key(0), x[:8], y[:8], eps=0.0, steps=5,
                       n_target_classes=2)
    np.testing.assert_array_equal(np.asarray(out0), np.asarray(x[:8]))


def test_fab_restarts_deterministic_and_jittable(trained_mlp):
    _, f, x, y = trained_mlp
    run = jax.jit(lambda k: attacks.fab_with_info(f, k, x[:16], y[:16], eps=0.08, steps=8,
                                                  n_target_classes=2, restarts=2))
    a, b = run(jax.random.key(1)), run(jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a.x_adv), np.asarray(b.x_adv))
    delta = np.abs(np.asarray(a.x_adv - x[:16])).reshape(16, -1).max(1)
    assert np.all(delta <= 0.08 + 1e-6)
    # More runs never lose a point found by fewer (restart 0 is the single-restart run).
    one = attacks.fab_with_info(f, jax.random.key(1), x[:16], y[:16], eps=0.08, steps=8,
                                n_target_classes=2, restarts=1)
    assert np.all(np.asarray(a.success) >= np.asarray(one.success))


@pytest.mark.parametrize("kw,match", [
    (dict(eps=-0.1), "eps"),
    (dict(eps=0.1, norm="l1"), "norm"),
    (dict(eps=0.1, steps=0), "steps"),
    (dict(eps=0.1, n_target_classes=10), "n_target_classes"),
    (dict(eps=0.1, alpha_max=1.5), "alpha_max"),
    (dict(eps=0.1, beta=-0.5), "beta"),
    (dict(eps=0.1, eta=0.0), "eta"),
    (dict(eps=0.1, restarts=0), "restarts"),
    (dict(eps=float("inf"), restarts=2), "eps"),
])
def test_fab_bad_arguments(trained_mlp, kw, match):
    _, f, x, y = trained_mlp
    with pytest.raises(ValueError, match=match):
        attacks.fab(f, jax.random.key(0), x[:2], y[:2], **kw)


def test_fab_bad_inputs(trained_mlp):
    _, f, x, y = trained_mlp
    with pytest.raises(ValueError, match="`x`"):
        attacks.fab(f, jax.random.key(0), x[:2].at[0, 0, 0, 0].set(jnp.nan), y[:2], eps=0.1)
    with pytest.raises(ValueError, match="`y`"):
        attacks.fab(f, jax.random.key(0), x[:2], jnp.asarray([0, 10], jnp.int32), eps=0.1)
    with pytest.raises(ValueError, match="`y`"):
        attacks.fab(f, jax.random.key(0), x[:2], y[:3], eps=0.1)
