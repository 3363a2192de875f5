"""Square Attack: query budget, ball/box invariants, p schedule, success on an undefended MLP."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import attacks
from robustjax.attacks import _square


class _Counter:
    def __init__(self):
        self.calls = 0
        self.rows = 0

    def __call__(self, x):
        self.calls += 1
        self.rows += x.shape[0]


def _counting(f, counter):
    def g(x):
        jax.debug.callback(lambda xx: counter(np.asarray(xx)), x, ordered=True)
        return f(x)
    return g


def _robust_model(x):
    # Constant, confidently class-0 logits: no query can ever succeed.
    n = x.shape[0]
    return jnp.zeros((n, 10)).at[:, 0].set(10.0) + 0.0 * jnp.sum(x, axis=(1, 2, 3))[:, None]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("restarts", [1, 2])
def test_square_uses_exactly_its_budget(norm, restarts):
    counter = _Counter()
    f = _counting(_robust_model, counter)
    x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 2))
    y = jnp.zeros(3, jnp.int32)
    info = jax.jit(lambda k: attacks.square_with_info(
        f, k, x, y, eps=0.1, norm=norm, n_queries=37, restarts=restarts))(jax.random.key(0))
    jax.effects_barrier()
    assert counter.calls == 37 * restarts  # the model saw exactly the budget
    assert counter.rows == 3 * 37 * restarts
    assert int(info.calls) == 37 * restarts
    np.testing.assert_array_equal(np.asarray(info.n_queries), 37 * restarts)
    assert not np.any(np.asarray(info.success))
    np.testing.assert_array_equal(np.asarray(info.x_adv), np.asarray(x))


def test_square_fools_undefended_mlp_and_charges_queries_consistently(trained_mlp):
    _, f0, x, y = trained_mlp
    counter = _Counter()
    f = _counting(f0, counter)
    budget = 300
    info = jax.jit(lambda k: attacks.square_with_info(
        f, k, x, y, eps=0.15, norm="linf", n_queries=budget))(jax.random.key(0))
    jax.effects_barrier()
    succ = np.asarray(info.success)
    q = np.asarray(info.n_queries)
    clean_acc = float(jnp.mean(jnp.argmax(f0(x), -1) == y))
    adv_acc = float(jnp.mean(jnp.argmax(f0(info.x_adv), -1) == y))
    # Measured: clean 0.94, 0.11 after 300 queries at eps=0.1; keep a wide margin.
    assert clean_acc > 0.8 and adv_acc <= 0.3
    assert counter.calls == int(info.calls) <= budget
    assert np.all((q >= 1) & (q <= budget))
    # Unsuccessful examples used the whole budget and are returned unchanged; successful
    # ones are misclassified with the recorded (non-positive) margin and stopped early.
    assert np.all(q[~succ] == budget)
    np.testing.assert_array_equal(np.asarray(info.x_adv)[~succ], np.asarray(x)[~succ])
    pred = np.asarray(jnp.argmax(f0(info.x_adv), -1))
    assert np.all(pred[succ] != np.asarray(y)[succ])
    assert np.all(np.asarray(info.margin)[succ] <= 0)
    assert np.median(q[succ]) < budget / 2
    if succ.all():
        assert int(info.calls) == q.max()


@hypothesis.settings(max_examples=4, deadline=None)
@hypothesis.given(
    eps=st.floats(0.0, 2.0),
    norm=st.sampled_from(["linf", "l2"]),
    seed=st.integers(0, 2**16),
    hw=st.sampled_from([(5, 5), (8, 6), (28, 28)]),
)
def test_square_never_leaves_ball_or_box(eps, norm, seed, hw):
    # Pixels near 0 and 1 make the box active; a random linear model is easy to fool, so the
    # returned points are real perturbations.
    h, w = hw
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jnp.round(jax.random.uniform(kx, (4, h, w, 1)) * 4) / 4
    wmat = jax.random.normal(kw, (h * w, 3))

    def f(z):
        return z.reshape(z.shape[0], -1) @ wmat

    y = jnp.argmax(f(x), -1).astype(jnp.int32)
    xa = attacks.square(f, jax.random.key(seed), x, y, eps=eps, norm=norm, n_queries=25)
    delta = np.asarray(xa - x, np.float64).reshape(4, -1)
    nrm = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(nrm <= eps * (1 + 1e-5) + 1e-6)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0


def test_square_l2_spends_the_budget_and_fools(trained_mlp):
    _, f, x, y = trained_mlp
    info = attacks.square_with_info(f, jax.random.key(1), x, y, eps=2.0, norm="l2",
                                    n_queries=300)
    succ = np.asarray(info.success)
    assert succ.mean() >= 0.6  # measured 0.81 at eps = 1.5
    delta = np.asarray(info.x_adv - x).reshape(len(y), -1)
    nrm = np.linalg.norm(delta, axis=1)
    assert np.all(nrm <= 2.0 * (1 + 1e-5))
    # The ℓ2 update renormalizes to eps before the box clip: the clip only shortens it, and
    # on MNIST (mostly black background) it keeps well over half of it.
    assert np.median(nrm[succ]) >= 1.0


def test_p_schedule_and_window_sides():
    # Halvings after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 on the 10,000 scale.
    p = [attacks.square_p_schedule(i, 10000, 0.8, rescale_schedule=False)
         for i in (0, 10, 11, 50, 51, 200, 201, 8000, 8001, 9999)]
    np.testing.assert_allclose(p, [0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.8 / 256, 0.8 / 512,
                                   0.8 / 512])
    # Rescaled to 5000 queries: iteration i counts as int(2 i).
    assert attacks.square_p_schedule(5, 5000, 0.8) == 0.8
    assert attacks.square_p_schedule(6, 5000, 0.8) == 0.4
    assert attacks.square_p_schedule(4001, 5000, 0.8) == 0.8 / 512
    # Window side: round(sqrt(p h w)), ℓ∞ at least 1, ℓ2 odd and at least 3, at most h, w.
    assert _square._side(0.8, 28, 28, "linf") == 25
    assert _square._side(0.8 / 512, 28, 28, "linf") == 1
    assert _square._side(0.8 / 512, 28, 28, "l2") == 3
    assert _square._side(0.05, 28, 28, "l2") == 7


@pytest.mark.parametrize("s", [3, 4, 7, 10])
def test_eta_pattern(s):
    e = _square._eta(s)
    assert e.shape == (s, s)
    np.testing.assert_allclose(np.sum(e ** 2), 1.0, rtol=1e-12)
    assert np.all(e[: s // 2] > 0) and np.all(e[s // 2:] < 0)
    # Each half peaks at its centre.
    top = e[: s // 2]
    assert top[(s // 2) // 2, s // 2] == top.max()


def test_square_deterministic_jit_and_rank3(trained_mlp):
    _, f, x, y = trained_mlp
    run = jax.jit(lambda k: attacks.square(f, k, x[:8], y[:8], eps=0.1, n_queries=20))
    np.testing.assert_array_equal(np.asarray(run(jax.random.key(2))),
                                  np.asarray(run(jax.random.key(2))))
    out = attacks.square(lambda z: f(z[..., None]), jax.random.key(2), x[:8, ..., 0], y[:8],
                         eps=0.1, n_queries=20)
    assert out.shape == x[:8, ..., 0].shape


@pytest.mark.parametrize("kw,match", [
    (dict(eps=-0.1), "eps"),
    (dict(eps=0.1, norm="l1"), "norm"),
    (dict(eps=0.1, n_queries=0), "n_queries"),
    (dict(eps=0.1, p_init=0.0), "p_init"),
    (dict(eps=0.1, p_init=1.5), "p_init"),
    (dict(eps=0.1, restarts=0), "restarts"),
])
def test_square_bad_arguments(trained_mlp, kw, match):
    _, f, x, y = trained_mlp
    with pytest.raises(ValueError, match=match):
        attacks.square(f, jax.random.key(0), x[:2], y[:2], **kw)


def test_square_bad_inputs(trained_mlp):
    _, f, x, y = trained_mlp
    with pytest.raises(ValueError, match="`x`"):
        attacks.square(f, jax.random.key(0), x[:2].reshape(2, -1), y[:2], eps=0.1)
    with pytest.raises(ValueError, match="`x`"):
        attacks.square(f, jax.random.key(0), x[:2] + 2.0, y[:2], eps=0.1)
    with pytest.raises(ValueError, match="`y`"):
        attacks.square(f, jax.random.key(0), x[:2], jnp.asarray([0, -1], jnp.int32), eps=0.1)
