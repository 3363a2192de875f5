"""Carlini–Wagner ℓ2: closed form on a binary linear model, failure semantics, vs PGD-ℓ2."""

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import attacks
from robustjax import losses

N = 8
_W = np.asarray(jax.random.normal(jax.random.key(1), (12, 2)), np.float32)


def linear2(x):
    return jnp.reshape(x, (x.shape[0], -1)) @ _W


def test_cw_linear_distance_close_to_hyperplane_distance():
    # Binary linear model: the smallest ℓ2 perturbation that flips the label is
    # |margin| / ||w_0 - w_1|| (the distance to the hyperplane; far from the box walls here).
    x = 0.5 + 0.02 * jax.random.normal(jax.random.key(0), (N, 2, 3, 2))
    y = jnp.argmax(linear2(x), -1)
    xa = jax.jit(lambda k, x, y: attacks.carlini_wagner_l2(
        linear2, k, x, y, steps=200, learning_rate=0.01, initial_const=1.0))(
            jax.random.key(0), x, y)
    dist = np.linalg.norm(np.asarray(xa - x).reshape(N, -1), axis=1)
    m = np.abs(np.asarray(losses.margin(linear2(x), y)))
    d_min = m / np.linalg.norm(_W[:, 0] - _W[:, 1])
    assert np.all(np.asarray(jnp.argmax(linear2(xa), -1)) != np.asarray(y))
    assert np.all(dist >= d_min - 1e-5)  # nobody can do better than the hyperplane distance
    assert np.all(dist <= 1.15 * d_min + 1e-3)  # and CW gets close to it


def test_cw_failures_return_input_unchanged(trained_mlp):
    _, f, x, y = trained_mlp
    x, y = x[:16], y[:16]
    # Almost no optimisation: most examples fail and must come back unchanged.
    xa = attacks.carlini_wagner_l2(f, jax.random.key(0), x, y, steps=2, binary_search_steps=1,
                                   initial_const=1e-3)
    changed = np.any(np.asarray(xa != x).reshape(16, -1), axis=1)
    pred = np.asarray(jnp.argmax(f(xa), -1))
    clean_ok = np.asarray(jnp.argmax(f(x), -1)) == np.asarray(y)
    assert np.all(pred[changed] != np.asarray(y)[changed])  # changed ⇒ successful
    assert np.all(~changed[clean_ok & (pred == np.asarray(y))])  # failed ⇒ unchanged
    assert np.sum(~changed) >= 8


def test_cw_l2_not_above_pgd_l2_at_equal_success(trained_mlp):
    _, f, x, y = trained_mlp
    x, y = x[:32], y[:32]
    eps = 1.5
    xp = attacks.pgd(f, jax.random.key(0), x, y, eps=eps, norm="l2", steps=20,
                     step_size=0.25)
    xc = jax.jit(lambda k, x, y: attacks.carlini_wagner_l2(
        f, k, x, y, steps=100, learning_rate=0.05, binary_search_steps=5, initial_const=1.0))(
            jax.random.key(0), x, y)
    ok_p = np.asarray(jnp.argmax(f(xp), -1)) != np.asarray(y)
    ok_c = np.asarray(jnp.argmax(f(xc), -1)) != np.asarray(y)
    both = ok_p & ok_c
    assert both.sum() >= 10
    d_p = np.linalg.norm(np.asarray(xp - x).reshape(32, -1), axis=1)
    d_c = np.linalg.norm(np.asarray(xc - x).reshape(32, -1), axis=1)
    assert np.all(ok_c[ok_p])  # CW (unbounded) succeeds wherever PGD does
    assert np.median(d_c[both]) <= np.median(d_p[both])
    assert np.mean(d_c[both] <= d_p[both] + 1e-3) >= 0.9
    assert np.all((np.asarray(xc) >= 0) & (np.asarray(xc) <= 1))


def test_cw_kappa_confidence_and_vmap():
    x = 0.5 + 0.02 * jax.random.normal(jax.random.key(0), (2, N, 2, 3, 2))
    y = jnp.argmax(linear2(x[0]), -1)
    fn = lambda x: attacks.carlini_wagner_l2(linear2, jax.random.key(0), x, y, steps=60,
                                             learning_rate=0.02, kappa=0.5, initial_const=1.0)
    xa = jax.jit(jax.vmap(fn))(x)
    np.testing.assert_allclose(xa[1], jax.jit(fn)(x[1]), atol=1e-5)
    m = np.asarray(losses.margin(linear2(xa[0]), y))
    succeeded = np.any(np.asarray(xa[0] != x[0]).reshape(N, -1), axis=1)
    assert succeeded.sum() >= N // 2
    assert np.all(m[succeeded] < -0.5)  # successes carry the requested confidence


def test_cw_defaults_break_an_undefended_model(trained_mlp):
    # Default settings must not overstate robustness: >= 99 % of the correctly classified
    # digits of an undefended model are broken (the old lr 0.01 left pixels at 0/1 stuck).
    _, f, x, y = trained_mlp
    r = jax.jit(lambda k, v, w: attacks.carlini_wagner_l2_with_info(f, k, v, w))(
        jax.random.key(0), x, y)
    clean_ok = np.asarray(jnp.argmax(f(x), -1) == y)
    fooled = np.asarray(jnp.argmax(f(r.x_adv), -1) != y)
    assert np.sum(clean_ok & fooled) >= 0.99 * np.sum(clean_ok)
    # The info agrees with the returned points: success <=> misclassified (kappa = 0),
    # l2 = ||x_adv - x|| where successful and inf elsewhere, x unchanged where not.
    succ = np.asarray(r.success)
    np.testing.assert_array_equal(succ[clean_ok], fooled[clean_ok])
    d = np.linalg.norm(np.asarray(r.x_adv - x).reshape(len(y), -1), axis=1)
    np.testing.assert_allclose(np.asarray(r.l2)[succ], d[succ], rtol=1e-4, atol=1e-5)
    assert np.all(np.isinf(np.asarray(r.l2)[~succ]))
    np.testing.assert_array_equal(np.asarray(r.x_adv)[~succ], np.asarray(x)[~succ])
    # Same x_adv as the plain function.
    xa = jax.jit(lambda k, v, w: attacks.carlini_wagner_l2(f, k, v, w))(jax.random.key(0), x, y)
    np.testing.assert_array_equal(np.asarray(xa), np.asarray(r.x_adv))
