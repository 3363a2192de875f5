import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import spatial as S
from robustjax.attacks._stadv import stadv
from robustjax.attacks._stadv import stadv_flow
from robustjax.attacks._stadv import stadv_tau_sweep

_NPZ = os.path.join(os.path.dirname(__file__), "..", "..", "robustjax", "data", "_embedded",
                    "mnist_12k.npz")


def _apply(p, x):
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]


@pytest.fixture(scope="module")
def mnist_model():
    d = np.load(_NPZ)
    xtr = jnp.asarray(d["train_images"][:4000], jnp.float32)[..., None] / 255.0
    ytr = jnp.asarray(d["train_labels"][:4000], jnp.int32)
    xte = np.asarray(d["test_images"][:64], np.float32)[..., None] / 255.0
    yte = np.asarray(d["test_labels"][:64], np.int32)
    k1, k2 = jax.random.split(jax.random.key(1))
    p = {"w1": jax.random.normal(k1, (784, 32)) / 28.0, "b1": jnp.zeros(32),
         "w2": jax.random.normal(k2, (32, 10)) / 6.0, "b2": jnp.zeros(10)}
    opt = optax.adam(3e-3)

    @jax.jit
    def train(p):
        def body(i, c):
            p, st = c
            idx = jax.random.randint(jax.random.fold_in(jax.random.key(0), i), (128,), 0, 4000)
            g = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
                _apply(q, xtr[idx]), ytr[idx]).mean())(p)
            u, st = opt.update(g, st)
            return optax.apply_updates(p, u), st

        return jax.lax.fori_loop(0, 250, body, (p, opt.init(p)))[0]

    p = train(p)
    logits_fn = functools.partial(_apply, p)
    pred = np.asarray(jnp.argmax(logits_fn(xte), -1))
    assert (pred == yte).mean() > 0.8  # the model learned something
    keep = np.nonzero(pred == yte)[0][:8]
    return logits_fn, jnp.asarray(xte[keep]), jnp.asarray(yte[keep])


def _acc(logits_fn, x, y):
    return float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))


def test_stadv_adam_fools_model_with_smooth_flow(mnist_model):
    logits_fn, x, y = mnist_model
    attack = jax.jit(lambda k, xx, yy: stadv_flow(logits_fn, k, xx, yy, optimizer="adam",
                                                  steps=80, learning_rate=0.05, tau=0.05,
                                                  smoothing=0.0))
    x_adv, flow = attack(jax.random.key(0), x, y)
    assert _acc(logits_fn, x, y) == 1.0
    # at least 3 of the 8 fooled (on 282 correctly classified test digits this setting leaves
    # about 0.49 adversarial accuracy; 8 examples are a noisy sample of that)
    assert _acc(logits_fn, x_adv, y) <= 0.625
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0 + 1e-6
    np.testing.assert_allclose(S.warp(x, flow), x_adv, atol=1e-6)
    # smooth: far less variation than the same displacements shuffled over the pixels
    perm = np.random.default_rng(0).permutation(28 * 28)
    shuffled = flow.reshape(flow.shape[0], -1, 2)[:, perm].reshape(flow.shape)
    tv = np.asarray(S.flow_loss(flow, form="paper"))
    tv_sh = np.asarray(S.flow_loss(shuffled, form="paper"))
    assert tv.mean() < 0.7 * tv_sh.mean()
    # deterministic given the key; vmap over an outer axis equals the direct call
    np.testing.assert_allclose(attack(jax.random.key(0), x, y)[0], x_adv, atol=0)
    xa2 = jax.jit(jax.vmap(lambda xx, yy: stadv(
        logits_fn, jax.random.key(0), xx, yy, optimizer="adam", steps=80, learning_rate=0.05,
        smoothing=0.0)))(x.reshape(2, 4, 28, 28, 1), y.reshape(2, 4))
    np.testing.assert_allclose(xa2.reshape(x.shape), x_adv, atol=1e-5)


def test_stadv_lbfgs_decreases_objective_per_example(mnist_model):
    logits_fn, x_all, y_all = mnist_model
    x, y = x_all[:2], y_all[:2]
    run = jax.jit(lambda xx, yy: stadv_flow(logits_fn, jax.random.key(0), xx, yy, steps=12,
                                            optimizer="lbfgs", tau=0.05))
    x_adv, flow = run(x, y)

    def objective(xx, yy, ff):
        m = jnp.take_along_axis(logits_fn(S.warp(xx, ff)), yy[:, None], 1)[:, 0]
        other = jnp.max(jnp.where(jax.nn.one_hot(yy, 10) > 0, -jnp.inf,
                                  logits_fn(S.warp(xx, ff))), -1)
        return jnp.maximum(m - other, 0.0) + 0.05 * S.flow_loss(ff, form="stadv", smoothing=0.1)

    before = objective(x, y, jnp.zeros_like(flow))
    after = objective(x, y, flow)
    assert np.all(np.asarray(after) < np.asarray(before) - 0.3)
    # one L-BFGS per example: example 0's flow does not depend on its batch mate
    _, flow2 = run(x_all[jnp.array([0, 2])], y_all[jnp.array([0, 2])])  # same shapes: no retrace
    np.testing.assert_allclose(flow2[0], flow[0], atol=1e-4)


def test_stadv_tau_sweep_and_targeted(mnist_model):
    logits_fn, x, y = mnist_model
    x, y = x[:4], y[:4]
    sw = stadv_tau_sweep(logits_fn, jax.random.key(0), x, y, taus=(0.0, 2.0), steps=40,
                         optimizer="adam", learning_rate=0.02)
    assert sw.x_adv.shape == (2,) + x.shape and sw.success.shape == (2, 4)
    assert float(sw.flow_loss[1].mean()) < float(sw.flow_loss[0].mean())
    assert int(sw.success[0].sum()) >= int(sw.success[1].sum())
    target = (y + 1) % 10
    xa = stadv(logits_fn, jax.random.key(0), x, target, targeted=True, tau=0.0, steps=60,
               optimizer="adam", learning_rate=0.03)
    margin = lambda xx: (jnp.take_along_axis(logits_fn(xx), target[:, None], 1)[:, 0]  # noqa
                         - jnp.take_along_axis(logits_fn(xx), y[:, None], 1)[:, 0])
    assert np.all(np.asarray(margin(xa)) > np.asarray(margin(x)))


def test_stadv_validation(mnist_model):
    logits_fn, x, y = mnist_model
    with pytest.raises(ValueError, match="optimizer"):
        stadv(logits_fn, jax.random.key(0), x, y, optimizer="sgd")
    with pytest.raises(ValueError, match="tau"):
        stadv(logits_fn, jax.random.key(0), x, y, tau=-1.0)
    with pytest.raises(ValueError, match="steps"):
        stadv(logits_fn, jax.random.key(0), x, y, steps=0)
    with pytest.raises(ValueError, match="y"):
        stadv(logits_fn, jax.random.key(0), x, y[:2])
