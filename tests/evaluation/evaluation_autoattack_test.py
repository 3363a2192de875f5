"""AutoAttack ensemble: worst case over members, bucketed host-side gather, versions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import attacks
from robustjax import data
from robustjax import evaluation as ev
from robustjax import losses
from robustjax import projections


@functools.lru_cache(maxsize=None)
def _model():
    """Softmax regression on 14×14 (2×2-pooled) real digits; ~85 % test accuracy."""
    tr = data.load_dataset("mnist_embedded", "train")
    te = data.load_dataset("mnist_embedded", "test")

    def pool(a):
        a = np.asarray(a[..., :1], np.float32)
        return a.reshape(a.shape[0], 14, 2, 14, 2, 1).mean(axis=(2, 4))

    xtr, ytr = pool(tr.images[:2000]), np.asarray(tr.labels[:2000], np.int32)
    xte, yte = pool(te.images[:48]), np.asarray(te.labels[:48], np.int32)
    params = {"w": jnp.zeros((196, 10)), "b": jnp.zeros(10)}
    tx = optax.adam(0.05)

    def f(p, x):
        return jnp.reshape(x, (x.shape[0], -1)) @ p["w"] + p["b"]

    @jax.jit
    def train(p):
        def step(_, c):
            q, s = c
            g = jax.grad(lambda r: jnp.mean(losses.cross_entropy(f(r, xtr), ytr)))(q)
            u, s = tx.update(g, s, q)
            return optax.apply_updates(q, u), s
        return jax.lax.fori_loop(0, 150, step, (p, tx.init(p)))[0]

    params = train(params)
    return jax.jit(functools.partial(f, params)), xte, yte


def _margin(f, x, y):
    return np.asarray(losses.margin(f(jnp.asarray(x)), jnp.asarray(y)))


def test_ensemble_is_worst_case_over_members_run_alone():
    f, x, y = _model()
    eps = 0.06
    members = {
        "fgsm-half": functools.partial(attacks.fgsm, eps=eps / 2),  # weakest first
        "pgd-cw": functools.partial(attacks.pgd, eps=eps, steps=5, loss="cw",
                                    random_start=False),
        "fgsm": functools.partial(attacks.fgsm, eps=eps),
    }
    res = ev.autoattack(f, jax.random.key(0), x, y, eps=eps, attacks=members, batch_size=16,
                        progress=False)
    clean_m = _margin(f, x, y)
    alone, ambiguous = [], np.abs(clean_m) < 1e-4
    for name, a in members.items():
        xa = a(f, jax.random.key(0), jnp.asarray(x), jnp.asarray(y))
        m = _margin(f, xa, y)
        alone.append(m > 0)
        ambiguous |= np.abs(m) < 1e-4
    want = (clean_m > 0) & np.all(alone, axis=0)
    ok = ~ambiguous
    assert ok.mean() > 0.9
    np.testing.assert_array_equal(res.robust[ok], want[ok])
    np.testing.assert_array_equal(res.clean_correct[ok], (clean_m > 0)[ok])
    # broken_by: the first member that breaks the point, -1 for robust / clean-misclassified.
    first = np.where(np.any(~np.asarray(alone), axis=0), np.argmax(~np.asarray(alone), axis=0),
                     -1)
    first = np.where(clean_m > 0, first, -1)
    np.testing.assert_array_equal(res.broken_by[ok], first[ok])
    assert res.attack_names == tuple(members)
    # The test exercises every member: each breaks something the earlier ones did not.
    assert set(np.unique(res.broken_by[res.broken_by >= 0]).tolist()) >= {0, 1}
    accs = list(res.per_attack_robust_accuracy.values())
    assert all(a >= b for a, b in zip(accs, accs[1:]))
    assert accs[-1] == pytest.approx(res.robust.mean())
    # x_adv: the breaking point where broken (misclassified, in the ball), x elsewhere.
    broken = res.broken_by >= 0
    assert np.all(_margin(f, res.x_adv, y)[broken] < 0)
    np.testing.assert_array_equal(res.x_adv[~broken], x[~broken])
    assert np.max(np.abs(res.x_adv - x)) <= eps + 1e-6


def test_standard_autoattack_default_members():
    f, x, y = _model()
    eps = 0.05
    res = ev.autoattack(f, jax.random.key(0), x[:24], y[:24], eps=eps, progress=False)
    assert res.attack_names == ("apgd-ce", "apgd-t", "fab-t", "square")
    d = np.asarray(projections.per_example_norm(jnp.asarray(res.x_adv - x[:24]), norm="linf"))
    assert np.all(d <= eps + 1e-6) and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    broken = res.broken_by >= 0
    assert np.all(_margin(f, res.x_adv, y[:24])[broken] < 0)
    assert not np.any(res.robust & ~res.clean_correct)
    # No weaker than PGD-100 on its own (a point robust to AutoAttack resists APGD-CE, the
    # first member, which is at least as strong; allow one digit of randomness).
    xp = attacks.pgd(f, jax.random.key(1), x[:24], y[:24], eps=eps, steps=100)
    pgd_robust = (_margin(f, xp, y[:24]) > 0) & res.clean_correct
    assert res.robust.sum() <= pgd_robust.sum() + 1
    assert 0 < res.clean_correct.sum()
    assert res.per_attack_robust_accuracy["apgd-ce"] > 0  # later members had points to attack


def test_rand_version_attacks_a_randomized_model():
    f, x, y = _model()

    def noisy(key, v):
        return f(v + 0.1 * jax.random.normal(key, v.shape))

    res = ev.autoattack(noisy, jax.random.key(0), x[:16], y[:16], eps=0.1, version="rand",
                        progress=False)
    assert res.attack_names == ("apgd-ce", "apgd-dlr")
    assert np.max(np.abs(res.x_adv - x[:16])) <= 0.1 + 1e-6
    assert res.robust.mean() < 0.5 * res.clean_correct.mean()


def test_autoattack_bad_input():
    f, x, y = _model()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="version"):
        ev.autoattack(f, key, x, y, eps=0.1, version="fast")
    with pytest.raises(ValueError, match="eps"):
        ev.autoattack(f, key, x, y, eps=0.0)
    with pytest.raises(ValueError, match="norm"):
        ev.autoattack(f, key, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="y"):
        ev.autoattack(f, key, x, y + 10, eps=0.1)
    cheat = {"far": lambda lf, k, v, w: jnp.clip(v + 0.5, 0.0, 1.0)}
    with pytest.raises(ValueError, match="left the linf ball"):
        ev.autoattack(f, key, x, y, eps=0.1, attacks=cheat, progress=False)


def test_pure_autoattack_fn_matches_host_ensemble_under_jit():
    f, x, y = _model()
    eps = 0.06
    members = {
        "fgsm-half": functools.partial(attacks.fgsm, eps=eps / 2),
        "pgd-cw": functools.partial(attacks.pgd, eps=eps, steps=5, loss="cw",
                                    random_start=False),
    }
    aa = jax.jit(ev.autoattack_fn(f, eps=eps, attacks=members))
    xa = np.asarray(aa(jax.random.key(0), jnp.asarray(x), jnp.asarray(y)))
    res = ev.autoattack(f, jax.random.key(0), x, y, eps=eps, attacks=members, progress=False)
    m = _margin(f, xa, y)
    stable = np.abs(m) > 1e-4
    assert stable.mean() > 0.9
    np.testing.assert_array_equal(((m > 0) & res.clean_correct)[stable], res.robust[stable])
    assert np.max(np.abs(xa - x)) <= eps + 1e-6
    # As a column of robustness_report (a BoundAttack compiled once).
    rep = ev.robustness_report(f, x, y, {"AA": ev.autoattack_fn(f, eps=eps, attacks=members)},
                               key=jax.random.key(0), progress=False)
    assert abs(rep.robust_accuracy["AA"] - res.robust_accuracy) <= 1.5 / len(y)
    with pytest.raises(ValueError, match="rand"):
        ev.autoattack_fn(f, eps=eps, version="rand")


def test_member_lists_follow_the_reference_versions():
    std = ev.autoattack_members("standard", eps=0.3, norm="linf", num_classes=10)
    assert list(std) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert std["apgd-ce"].func is attacks.apgd and std["apgd-ce"].keywords["restarts"] == 1
    assert std["apgd-ce"].keywords["steps"] == 100 and std["apgd-ce"].keywords["loss"] == "ce"
    assert std["apgd-t"].keywords["n_target_classes"] == 9
    assert std["fab-t"].func is attacks.fab
    assert std["fab-t"].keywords["n_target_classes"] == 9
    assert std["square"].func is attacks.square and std["square"].keywords["n_queries"] == 5000
    plus = ev.autoattack_members("plus", eps=0.3, norm="l2", num_classes=10)
    assert list(plus) == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert plus["apgd-ce"].keywords["restarts"] == plus["apgd-dlr"].keywords["restarts"] == 5
    assert plus["apgd-dlr"].keywords["loss"] == "dlr"
    assert plus["fab"].keywords["n_target_classes"] is None and plus["fab"].keywords["restarts"] == 5
    assert plus["square"].keywords["restarts"] == 5
    assert all(p.keywords["norm"] == "l2" and p.keywords["eps"] == 0.3 for p in plus.values())
    rand = ev.autoattack_members("rand", eps=0.3, norm="linf", num_classes=10)
    assert list(rand) == ["apgd-ce", "apgd-dlr"]
    assert all(p.keywords["eot_samples"] == 20 for p in rand.values())
    five = ev.autoattack_members("standard", eps=0.3, norm="linf", num_classes=5)
    assert five["apgd-t"].keywords["n_target_classes"] == 4
