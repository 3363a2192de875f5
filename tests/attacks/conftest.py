"""Fixtures for the attack tests: a tiny MLP trained in-test on the embedded MNIST subset."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

_NPZ = os.path.join(os.path.dirname(__file__), "..", "..", "robustjax", "data", "_embedded",
                    "mnist_12k.npz")


def mlp_logits(params, x):
    h = jnp.reshape(x, (x.shape[0], -1))
    h = jax.nn.relu(h @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


@pytest.fixture(scope="session")
def mnist_small():
    """2,000 train and 64 test MNIST digits, ``float32 [N, 28, 28, 1]`` in [0, 1]."""
    d = np.load(_NPZ)
    xtr = d["train_images"][:2000].astype(np.float32)[..., None] / 255.0
    ytr = d["train_labels"][:2000].astype(np.int32)
    xte = d["test_images"][:64].astype(np.float32)[..., None] / 255.0
    yte = d["test_labels"][:64].astype(np.int32)
    return xtr, ytr, xte, yte


@pytest.fixture(scope="session")
def trained_mlp(mnist_small):
    """784-32-10 ReLU MLP trained full-batch with Adam for 150 steps (~90 % test accuracy).

    Returns ``(params, logits_fn, x_test [64, 28, 28, 1], y_test [64])``.
    """
    xtr, ytr, xte, yte = mnist_small
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {
        "w1": jax.random.normal(k1, (784, 32)) * (1 / 28.0),
        "b1": jnp.zeros(32),
        "w2": jax.random.normal(k2, (32, 10)) * (1 / np.sqrt(32)),
        "b2": jnp.zeros(10),
    }
    tx = optax.adam(1e-2)

    @jax.jit
    def train(params):
        def step(_, carry):
            p, s = carry
            g = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
                mlp_logits(q, xtr), ytr).mean())(p)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, 150, step, (params, tx.init(params)))[0]

    params = train(params)

    def logits_fn(x):
        return mlp_logits(params, x)

    return params, logits_fn, jnp.asarray(xte), jnp.asarray(yte)


def accuracy(logits_fn, x, y):
    return float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))
