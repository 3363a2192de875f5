"""Auto-PGD (APGD-CE / APGD-DLR) and APGD-T."""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import attacks
from robustjax import projections


def _paper_checkpoints(steps):
    """The paper's rule written with exact fractions: p0 = 0, p1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); w_j = ceil(p_j * N_iter) for p_j < 1."""
    ps = [Fraction(0), Fraction(22, 100)]
    while True:
        nxt = ps[-1] + max(ps[-1] - ps[-2] - Fraction(3, 100), Fraction(6, 100))
        if nxt >= 1:
            break
        ps.append(nxt)
    ws = []
    for p in ps[1:]:
        w = math.ceil(p * steps)
        if 1 <= w < steps and (not ws or w > ws[-1]):
            ws.append(w)
    return tuple(ws)


def test_checkpoints_follow_the_paper_rule():
    for n in range(1, 400):
        assert attacks.apgd_checkpoints(n) == _paper_checkpoints(n), n
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 for N_iter = 100.
    assert attacks.apgd_checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
    with pytest.raises(ValueError, match="steps"):
        attacks.apgd_checkpoints(0)


def _replay_schedule(loss0, loss, checkpoints, eps, rho):
    """Step sizes implied by the paper's two conditions, replayed in NumPy from the trace."""
    t, n = loss.shape
    eta = np.full(n, np.float32(2.0) * np.float32(eps), np.float32)
    f_max = loss0.copy()
    prev = loss0.copy()
    inc = np.zeros(n)
    f_last = loss0.copy()
    reduced_last = np.ones(n, bool)
    last_cp = 0
    out = np.zeros((t, n))
    for i in range(t):
        inc += loss[i] > prev
        prev = loss[i]
        f_max = np.maximum(f_max, loss[i])
        if (i + 1) in checkpoints:
            cond1 = inc < rho * (i + 1 - last_cp)
            cond2 = ~reduced_last & (f_last >= f_max)
            red = cond1 | cond2
            eta = np.where(red, eta / 2, eta)
            reduced_last = red
            f_last = f_max.copy()
            inc[:] = 0
            last_cp = i + 1
        out[i] = eta
    return out


@pytest.mark.parametrize("loss,norm,eps", [("ce", "linf", 0.03), ("dlr", "l2", 1.0)])
def test_step_size_schedule_matches_paper_conditions(trained_mlp, loss, norm, eps):
    _, f, x, y = trained_mlp
    steps = 30
    _, _, tr = attacks.apgd_with_trace(f, jax.random.key(1), x, y, eps=eps, norm=norm,
                                       steps=steps, loss=loss)
    assert tr.checkpoints == attacks.apgd_checkpoints(steps)
    want = _replay_schedule(np.asarray(tr.loss0), np.asarray(tr.loss), tr.checkpoints, eps,
                            0.75)
    np.testing.assert_allclose(np.asarray(tr.eta), want, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(tr.f_max),
                                  np.maximum.accumulate(
                                      np.concatenate([np.asarray(tr.loss0)[None],
                                                      np.asarray(tr.loss)]), axis=0)[1:])
    eta = np.asarray(tr.eta)
    # Halvings happen only at checkpoints, and the data exercise both outcomes.
    eta0 = np.full((1, eta.shape[1]), np.float32(2.0) * np.float32(eps), np.float32)
    full = np.concatenate([eta0, eta])
    changed = np.nonzero(np.any(np.diff(full, axis=0) != 0, axis=1))[0]
    assert set((changed + 1).tolist()) <= set(tr.checkpoints)
    at_cp = [full[w] < full[w - 1] for w in tr.checkpoints]
    assert np.any(at_cp) and not np.all(at_cp)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_apgd_stays_in_ball_and_box_and_returns_successes(trained_mlp, norm, eps):
    _, f, x, y = trained_mlp
    for loss in ("ce", "dlr"):
        xa, succ, _ = attacks.apgd_with_trace(f, jax.random.key(0), x, y, eps=eps, norm=norm,
                                              steps=10, loss=loss, restarts=2)
        d = np.asarray(projections.per_example_norm(xa - x, norm=norm))
        assert np.all(d <= eps * (1 + 1e-5) + 1e-6)
        assert float(jnp.min(xa)) >= 0.0 and float(jnp.max(xa)) <= 1.0
        pred = np.asarray(jnp.argmax(f(xa), -1))
        # The returned point is a success exactly where the run reports one.
        np.testing.assert_array_equal(pred != np.asarray(y), np.asarray(succ))
        assert np.mean(np.asarray(succ)) > 0.5  # eps large enough to break most digits


def test_apgd_at_least_as_strong_as_pgd(trained_mlp):
    _, f, x, y = trained_mlp
    key = jax.random.key(0)
    robust_apgd = robust_pgd = 0
    for eps in (0.03, 0.05):
        xa = jax.jit(lambda k, v, w: attacks.apgd(f, k, v, w, eps=eps, steps=20))(key, x, y)
        xp = jax.jit(lambda k, v, w: attacks.pgd(f, k, v, w, eps=eps, steps=20))(key, x, y)
        robust_apgd += int(jnp.sum(jnp.argmax(f(xa), -1) == y))
        robust_pgd += int(jnp.sum(jnp.argmax(f(xp), -1) == y))
    # Equal iterations (20 gradient steps each): APGD no weaker, up to one digit in 128.
    assert robust_apgd <= robust_pgd + 1, (robust_apgd, robust_pgd)
    assert robust_apgd < 0.8 * 128  # and it does break many digits


def test_apgd_targeted_reaches_targets_and_is_strong(trained_mlp):
    _, f, x, y = trained_mlp
    logits = np.asarray(f(x))
    t = attacks._apgd.top_targets(jnp.asarray(logits), y, 3)
    for i in range(len(y)):
        order = [c for c in np.argsort(-logits[i], kind="stable") if c != int(y[i])]
        assert set(np.asarray(t[:, i]).tolist()) == set(order[:3])
    assert np.all(np.asarray(t) != np.asarray(y)[None])
    # Targeted DLR towards the runner-up class reaches it for most digits at a large eps.
    xa = attacks.apgd(f, jax.random.key(0), x, y, eps=0.15, steps=15, loss="dlr_targeted",
                      target=t[0])
    hit = np.asarray(jnp.argmax(f(xa), -1) == t[0])
    assert hit.mean() > 0.8
    xt = jax.jit(lambda k, v, w: attacks.apgd_targeted(
        f, k, v, w, eps=0.05, steps=15, n_target_classes=3))(jax.random.key(0), x, y)
    assert float(jnp.max(jnp.abs(xt - x))) <= 0.05 + 1e-6
    acc_t = float(jnp.mean(jnp.argmax(f(xt), -1) == y))
    assert acc_t < float(jnp.mean(jnp.argmax(f(x), -1) == y)) - 0.3


def test_apgd_vmaps_over_groups(trained_mlp):
    _, f, x, y = trained_mlp
    xs, ys = x.reshape((2, 32) + x.shape[1:]), y.reshape(2, 32)
    keys = jax.random.split(jax.random.key(0), 2)
    run = lambda k, v, w: attacks.apgd(f, k, v, w, eps=0.05, steps=10)  # noqa: E731
    out = jax.jit(jax.vmap(run))(keys, xs, ys)
    assert out.shape == xs.shape
    assert float(jnp.max(jnp.abs(out - xs))) <= 0.05 + 1e-6
    for g in range(2):
        direct = run(keys[g], xs[g], ys[g])
        a = int(jnp.sum(jnp.argmax(f(out[g]), -1) == ys[g]))
        b = int(jnp.sum(jnp.argmax(f(direct), -1) == ys[g]))
        assert abs(a - b) <= 2  # same attack; only rounding of the batched program differs


def test_apgd_eot_on_randomized_model(trained_mlp):
    _, f, x, y = trained_mlp

    def noisy(key, v):
        return f(v + 0.05 * jax.random.normal(key, v.shape))

    xa = jax.jit(lambda k, v, w: attacks.apgd(noisy, k, v, w, eps=0.1, steps=10,
                                              eot_samples=4))(jax.random.key(0), x, y)
    assert float(jnp.max(jnp.abs(xa - x))) <= 0.1 + 1e-6
    acc = float(jnp.mean(jnp.argmax(f(xa), -1) == y))
    assert acc < 0.3
    with pytest.raises(ValueError, match="key"):
        attacks.apgd(noisy, 0, x, y, eps=0.1, eot_samples=2)


def test_apgd_same_key_same_result(trained_mlp):
    _, f, x, y = trained_mlp
    a = attacks.apgd(f, jax.random.key(5), x[:8], y[:8], eps=0.05, steps=3)
    b = attacks.apgd(f, jax.random.key(5), x[:8], y[:8], eps=0.05, steps=3)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=-0.1), "eps"),
    (dict(eps=0.1, norm="l1"), "norm"),
    (dict(eps=0.1, loss="cw"), "loss"),
    (dict(eps=0.1, steps=0), "steps"),
    (dict(eps=0.1, restarts=0), "restarts"),
    (dict(eps=0.1, rho=1.5), "rho"),
    (dict(eps=0.1, alpha=0.0), "alpha"),
    (dict(eps=0.1, loss="dlr_targeted"), "target"),
    (dict(eps=0.1, loss="dlr", target=np.zeros(4, np.int32)), "target"),
])
def test_apgd_bad_input(trained_mlp, kwargs, match):
    _, f, x, y = trained_mlp
    with pytest.raises(ValueError, match=match):
        attacks.apgd(f, jax.random.key(0), x[:4], y[:4], **kwargs)


def test_apgd_targeted_bad_input(trained_mlp):
    _, f, x, y = trained_mlp
    with pytest.raises(ValueError, match="n_target_classes"):
        attacks.apgd_targeted(f, jax.random.key(0), x[:4], y[:4], eps=0.1, n_target_classes=10)
    with pytest.raises(ValueError, match="x"):
        attacks.apgd_targeted(f, jax.random.key(0), x[:4] * 3.0, y[:4], eps=0.1)


def test_apgd_early_exit_is_exact(trained_mlp):
    # The rolled loop stops once every point is misclassified; the per-point result (first
    # misclassified iterate, frozen from then on) equals the fixed-length scan's.
    _, f, x, y = trained_mlp
    ok = np.asarray(jnp.argmax(f(x), -1) == y)
    xs, ys = x[ok][:16], y[ok][:16]
    calls = []

    def counted(v):
        jax.debug.callback(lambda: calls.append(1))
        return f(v)

    key = jax.random.key(3)
    early = attacks.apgd(counted, key, xs, ys, eps=0.3, steps=100)  # rolled: early exit
    n_early = len(calls)
    full = attacks.apgd(f, key, xs, ys, eps=0.3, steps=100, unroll=2)  # fixed-length scan
    assert bool(jnp.all(jnp.argmax(f(early), -1) != ys))  # eps = 0.3 breaks this MLP
    assert n_early < 100  # stopped early (1 initial + one per iteration)
    assert bool(jnp.all(jnp.argmax(f(full), -1) != ys))
    # Only the rolled loop (unroll 1) exits early; unroll=True stays a fully unrolled scan.
    for unroll, loop in ((1, "while["), (True, "scan["), (2, "scan[")):
        jaxpr = str(jax.make_jaxpr(lambda v, u=unroll: attacks.apgd(
            f, key, v, ys, eps=0.3, steps=3, unroll=u))(xs))
        assert loop in jaxpr and ("while[" in jaxpr) == (loop == "while["), unroll
    # Same iterates; the two programs may round differently (a sign() of a near-zero gradient
    # entry can flip on another CPU), so compare per point and allow one in eight to differ.
    same = np.all(np.abs(np.asarray(early - full)).reshape(len(ys), -1) <= 1e-6, axis=1)
    assert same.mean() >= 7 / 8, same


def test_apgd_targeted_equals_per_target_apgd_runs(trained_mlp):
    # APGD-T folds its targets into one batch; target j must still be the run
    # apgd(key=fold_in(key, j), loss="dlr_targeted", target=j-th ranked class).
    from robustjax.attacks._apgd import top_targets

    _, f, x, y = trained_mlp
    xs, ys = x[:12], y[:12]
    key = jax.random.key(7)
    nt = 3
    got = attacks.apgd_targeted(f, key, xs, ys, eps=0.06, steps=10, n_target_classes=nt,
                                unroll=2)
    targets = top_targets(f(xs), ys, nt)
    runs = [attacks.apgd(f, jax.random.fold_in(key, j), xs, ys, eps=0.06, steps=10,
                         loss="dlr_targeted", target=targets[j], unroll=2) for j in range(nt)]
    wrong = [np.asarray(jnp.argmax(f(r), -1) != ys) for r in runs]
    broken_any = np.any(wrong, axis=0)
    # Same runs in a differently shaped program: a borderline point may round the other way.
    agree = np.asarray(jnp.argmax(f(got), -1) != ys) == broken_any
    assert agree.mean() >= 11 / 12, agree
    # The kept point is the first target's (rank order) that misclassified, else the best loss.
    first = np.argmax(wrong, axis=0)
    same = [np.max(np.abs(np.asarray(got[i] - runs[first[i]][i]))) <= 1e-6
            for i in range(len(ys)) if broken_any[i]]
    assert len(same) >= 3 and np.mean(same) >= 7 / 8, same
