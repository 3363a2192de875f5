"""PGD and its targeted / random-targeted / multi-targeted forms."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import attacks
from robustjax import losses

D, N = 12, 8
_W2 = np.asarray(jax.random.normal(jax.random.key(1), (D, 2)), np.float32)


def linear2(x):
    return jnp.reshape(x, (x.shape[0], -1)) @ _W2


def _x():
    return jax.random.uniform(jax.random.key(3), (N, 2, 3, 2), minval=0.2, maxval=0.8)


def _acc(f, x, y):
    return float(jnp.mean(jnp.argmax(f(x), -1) == y))


def _margin(f, x, y):
    return np.asarray(losses.margin(f(x), y))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_linear_converges_to_ball_vertex(norm):
    # Binary linear model + CW loss: the ascent direction is the constant w_1 - w_0, so PGD
    # (without box) ends at the ball's vertex (ℓ∞, from a random start) / the boundary point
    # along it (ℓ2, from the centre: from a random start the ℓ2 projection only converges
    # asymptotically).
    x = _x()
    y = jnp.zeros(N, jnp.int32)
    d = (_W2[:, 1] - _W2[:, 0]).reshape(1, 2, 3, 2)
    eps = 0.1 if norm == "linf" else 0.5
    got = jax.jit(lambda k, x, y: attacks.pgd(
        linear2, k, x, y, eps=eps, norm=norm, steps=10, step_size=eps / 3, loss="cw",
        box=None, random_start=(norm == "linf")))(jax.random.key(0), x, y)
    want = x + (eps * np.sign(d) if norm == "linf" else eps * d / np.linalg.norm(d))
    np.testing.assert_allclose(got, want, atol=1e-5)


@hypothesis.settings(max_examples=6, deadline=None)
@hypothesis.given(
    eps=st.floats(0.0, 0.6),
    norm=st.sampled_from(["linf", "l2"]),
    rule=st.sampled_from(["sign", "normalized", "adam"]),
    step=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
def test_pgd_never_leaves_ball_or_box(eps, norm, rule, step, seed):
    x = jax.random.uniform(jax.random.key(seed), (N, 2, 3, 2))
    y = jnp.arange(N, dtype=jnp.int32) % 2
    xa, trace = attacks.pgd_with_trace(linear2, jax.random.key(seed), x, y, eps=eps, norm=norm,
                                       steps=2, step_size=step, step_rule=rule)
    delta = np.asarray(xa - x).reshape(N, -1)
    nrm = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(nrm <= eps * (1 + 1e-5) + 1e-6)
    assert np.all(np.asarray(xa) >= 0) and np.all(np.asarray(xa) <= 1)
    assert trace.shape == (2, N)


def test_pgd_trace_matches_and_increases_on_linear_model():
    x = _x()
    y = jnp.zeros(N, jnp.int32)
    kw = dict(eps=0.2, steps=6, step_size=0.02, loss="cw", random_start=False, box=None)
    xa, trace = attacks.pgd_with_trace(linear2, jax.random.key(0), x, y, **kw)
    np.testing.assert_allclose(xa, attacks.pgd(linear2, jax.random.key(0), x, y, **kw),
                               atol=1e-6)
    # The loss at step 0 is the clean attack loss, and it increases by the ℓ1 norm of d·step.
    np.testing.assert_allclose(trace[0], -_margin(linear2, x, y), rtol=1e-5, atol=1e-5)
    inc = 0.02 * np.abs(_W2[:, 1] - _W2[:, 0]).sum()
    np.testing.assert_allclose(np.diff(np.asarray(trace), axis=0), inc, rtol=1e-4)


def test_pgd_schedule_and_adam_first_step_equal_fgsm(trained_mlp):
    _, f, x, y = trained_mlp
    x, y = x[:16], y[:16]
    eps = 0.1
    want = attacks.fgsm(f, jax.random.key(0), x, y, eps=eps)
    # One step of size eps, then zero steps: equals FGSM.
    sched = optax.piecewise_constant_schedule(eps, {1: 0.0})
    got = attacks.pgd(f, jax.random.key(0), x, y, eps=eps, steps=4, step_size=sched,
                      random_start=False)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # Adam's first update is m̂ / (sqrt(v̂) + 1e-8) = g / (|g| + 1e-8).
    g = jax.grad(lambda z: jnp.sum(losses.cross_entropy(f(z), y)))(x)
    want = jnp.clip(x + eps * g / (jnp.abs(g) + 1e-8), 0, 1)
    got = attacks.pgd(f, jax.random.key(0), x, y, eps=eps, steps=1, step_size=eps,
                      step_rule="adam", random_start=False)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_pgd_attack_strength_restarts_and_multitargeted(trained_mlp):
    _, f, x, y = trained_mlp
    eps = 0.06
    clean = _acc(f, x, y)
    assert clean > 0.8
    key = jax.random.key(7)
    kw = dict(eps=eps, steps=10, step_size=0.015)
    run = jax.jit(lambda k, x, y: attacks.pgd(f, k, x, y, **kw))
    run_r = jax.jit(lambda k, x, y: attacks.pgd(f, k, x, y, restarts=4, **kw))
    run_mt = jax.jit(lambda k, x, y: attacks.multi_targeted(f, k, x, y, **kw))
    x1, xr, xmt = run(key, x, y), run_r(key, x, y), run_mt(key, x, y)
    acc1, accr, accmt = _acc(f, x1, y), _acc(f, xr, y), _acc(f, xmt, y)
    assert acc1 < clean
    # Restarts keep, per example, the best of R runs, restart 0 being the single run.
    assert accr <= acc1
    assert np.all(_margin(f, xr, y) <= _margin(f, x1, y) + 1e-4)
    # Multi-targeted is at least as strong as untargeted PGD here (LLR paper's evaluation).
    assert accmt <= acc1
    for xa in (xr, xmt):
        assert float(jnp.max(jnp.abs(xa - x))) <= eps + 1e-6
    # Same key, same result; another key, another start.
    np.testing.assert_array_equal(run(key, x, y), x1)
    assert not np.allclose(run(jax.random.key(8), x, y), x1)


def test_targeted_and_random_targeted(trained_mlp):
    _, f, x, y = trained_mlp
    x, y = x[:32], y[:32]
    target = (y + 3) % 10
    xa = attacks.pgd(f, jax.random.key(0), x, y, eps=0.3, steps=20, step_size=0.03,
                     target=target)
    assert np.mean(np.asarray(jnp.argmax(f(xa), -1) == target)) > 0.9
    xr = jax.jit(lambda k, x, y: attacks.random_targeted(f, k, x, y, eps=0.3, steps=20,
                                                         step_size=0.03))(jax.random.key(1), x, y)
    pred = np.asarray(jnp.argmax(f(xr), -1))
    assert np.mean(pred != np.asarray(y)) > 0.9
    assert float(jnp.max(jnp.abs(xr - x))) <= 0.3 + 1e-6


def test_pgd_jit_equals_nojit_and_vmap_equals_loop():
    xs = jax.random.uniform(jax.random.key(5), (2, N, 2, 3, 2))
    ys = jnp.zeros((2, N), jnp.int32)
    keys = jax.random.split(jax.random.key(0), 2)

    def fn(k, x, y):
        return attacks.pgd(linear2, k, x, y, eps=0.1, steps=3, restarts=2, step_rule="adam",
                           step_size=0.02)

    batched = jax.vmap(fn)(keys, xs, ys)
    jitted = jax.jit(fn)
    for i in range(2):
        np.testing.assert_allclose(batched[i], jitted(keys[i], xs[i], ys[i]), atol=1e-6)
    np.testing.assert_allclose(fn(keys[0], xs[0], ys[0]), batched[0], atol=1e-6)  # no jit
    mt = lambda k, x, y: attacks.multi_targeted(linear2, k, x, y, eps=0.1, steps=2)
    np.testing.assert_allclose(jax.jit(jax.vmap(mt))(keys, xs, ys)[1],
                               jax.jit(mt)(keys[1], xs[1], ys[1]), atol=1e-6)


def test_unroll_gives_identical_result():
    x = _x()
    y = jnp.zeros(N, jnp.int32)
    a = attacks.pgd(linear2, jax.random.key(0), x, y, eps=0.1, steps=5, unroll=1)
    b = attacks.pgd(linear2, jax.random.key(0), x, y, eps=0.1, steps=5, unroll=5)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_pgd_eot_draws_fresh_samples_at_every_step():
    # A randomized model that uses one of two linear classifiers per draw. With a key-taking
    # model and eot_samples=1, each of the T sign steps follows the draw of that step, so pixels
    # where the two gradients' signs disagree end strictly inside the T·α box; a model with its
    # key bound once follows one classifier at every step (|δ| = T·α at every pixel).
    d, k, t, alpha = 24, 2, 20, 0.01  # K = 2: each classifier's gradient sign is constant
    wa = jax.random.normal(jax.random.key(10), (d, k))
    wb = jax.random.normal(jax.random.key(11), (d, k))

    def randomized(key, x):
        use_a = jax.random.bernoulli(key)
        w = jnp.where(use_a, wa, wb)
        return x.reshape(x.shape[0], -1) @ w

    x = jnp.full((2, 2, 12, 1), 0.5)
    y = jnp.array([0, 1])
    kw = dict(eps=1.0, steps=t, step_size=alpha, random_start=False, box=None)
    fresh = jax.jit(lambda key: attacks.pgd(randomized, key, x, y, eot_samples=1, **kw))(
        jax.random.key(0))
    bound = jax.jit(lambda key: attacks.pgd(lambda v: randomized(key, v), key, x, y, **kw))(
        jax.random.key(0))
    inside_fresh = np.mean(np.abs(np.asarray(fresh - x)) < t * alpha - 1e-4)
    inside_bound = np.mean(np.abs(np.asarray(bound - x)) < t * alpha - 1e-4)
    assert inside_bound == 0.0
    assert inside_fresh > 0.1
    # Same key, same result.
    again = jax.jit(lambda key: attacks.pgd(randomized, key, x, y, eot_samples=1, **kw))(
        jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(fresh))


def test_unroll_default_is_rolled():
    # With canonical convolution gradients (robustjax/_src/conv_grad.py) the rolled loop runs
    # at the unrolled speed on XLA:CPU, so every default is a rolled loop.
    from robustjax.attacks._pgd import resolve_unroll

    assert resolve_unroll(None) == 1
    assert resolve_unroll(3) == 3
    assert resolve_unroll(True) is True


def test_every_pgd_family_attack_takes_a_randomized_model():
    # fgsm, random_targeted and multi_targeted accept a key-taking model with eot_samples, stay
    # in the ε-ball and the box, and are reproducible; with the noise switched off they equal the
    # deterministic attack on the same model.
    w = jax.random.normal(jax.random.key(3), (12, 3))
    det = lambda v: v.reshape(v.shape[0], -1) @ w  # noqa: E731

    def noisy(scale):
        return lambda key, v: det(v) + scale * jax.random.normal(key, (v.shape[0], 3))

    x = jax.random.uniform(jax.random.key(4), (4, 2, 6, 1), minval=0.2, maxval=0.8)
    y = jnp.array([0, 1, 2, 0])
    for attack, kw in ((attacks.fgsm, {}), (attacks.random_targeted, dict(steps=3)),
                       (attacks.multi_targeted, dict(steps=3))):
        run = jax.jit(lambda k, f=attack, kw=kw: f(noisy(1.0), k, x, y, eps=0.1, eot_samples=2,
                                                   **kw))
        xa = run(jax.random.key(0))
        assert float(jnp.max(jnp.abs(xa - x))) <= 0.1 + 1e-6
        assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
        np.testing.assert_array_equal(np.asarray(run(jax.random.key(0))), np.asarray(xa))
        quiet = attack(noisy(0.0), jax.random.key(0), x, y, eps=0.1, eot_samples=2, **kw)
        plain = attack(det, jax.random.key(0), x, y, eps=0.1, **kw)
        if attack is attacks.fgsm:
            np.testing.assert_allclose(np.asarray(quiet), np.asarray(plain), atol=1e-6)
