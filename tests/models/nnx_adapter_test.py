"""Flax NNX (and Linen without `train`) models in fit, checkpoints, make_logits_fn and attacks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from robustjax import attacks, data, models, training


class NNXNet(nnx.Module):
    """Conv → BatchNorm → ReLU → Dropout → Linear: exercises batch statistics and dropout."""

    def __init__(self, rngs: nnx.Rngs, dropout: float = 0.1):
        self.conv = nnx.Conv(1, 8, (3, 3), strides=(2, 2), rngs=rngs)
        self.bn = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(8 * 14 * 14, 10, rngs=rngs)

    def __call__(self, x):
        h = self.drop(nnx.relu(self.bn(self.conv(x))))
        return self.out(h.reshape(x.shape[0], -1))


class LinenNoTrain(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _digits(n=1024):
    train = data.subset(data.load_dataset("mnist_embedded", "train"), slice(0, n))
    test = data.subset(data.load_dataset("mnist_embedded", "test"), slice(0, 256))
    return train, test


def _accuracy(logits_fn, ds):
    return float(np.mean(np.argmax(np.asarray(logits_fn(jnp.asarray(ds.images))), -1)
                         == ds.labels))


def test_fit_trains_an_nnx_model_and_attacks_see_eval_mode():
    train, test = _digits()
    model = NNXNet(nnx.Rngs(0))
    state, history = training.fit(model, training.standard_objective(), train,
                                  key=jax.random.key(1), steps=60, batch_size=64,
                                  optimizer="adam", learning_rate=3e-3, progress=False)
    assert int(state.step) == 60
    losses = [r["loss"] for r in history["train"]]
    assert losses[-1] < 0.6 * losses[0]
    # The batch statistics were updated by training (not left at their init).
    assert max(float(jnp.max(jnp.abs(v))) for v in jax.tree.leaves(state.batch_stats)) > 0
    logits_fn = models.make_logits_fn(model, {"params": state.params,
                                              "batch_stats": state.batch_stats})
    assert _accuracy(logits_fn, test) > 0.75
    # Attacking the NNX model with batch norm in eval mode, under jit (issue: trace error).
    x, y = jnp.asarray(test.images[:32]), jnp.asarray(test.labels[:32])
    x_adv = jax.jit(lambda k, x, y: attacks.pgd(logits_fn, k, x, y, eps=0.3, steps=10,
                                                unroll=1))(jax.random.key(2), x, y)
    assert float(jnp.max(jnp.abs(x_adv - x))) <= 0.3 + 1e-6
    assert np.mean(np.argmax(np.asarray(logits_fn(x_adv)), -1) == np.asarray(y)) < 0.5
    # Eval mode is deterministic and per example.
    np.testing.assert_allclose(logits_fn(x[:4]), logits_fn(x)[:4], rtol=1e-5, atol=1e-5)


def test_nnx_resume_equals_uninterrupted(tmp_path):
    train, _ = _digits(256)
    kw = dict(key=jax.random.key(3), batch_size=32, optimizer="adam", learning_rate=1e-3,
              progress=False)
    objective = training.standard_objective()
    ref, _ = training.fit(NNXNet(nnx.Rngs(0)), objective, train, steps=8, **kw)
    training.fit(NNXNet(nnx.Rngs(0)), objective, train, steps=4, workdir=tmp_path, **kw)
    resumed, hist = training.fit(NNXNet(nnx.Rngs(0)), objective, train, steps=8,
                                 workdir=tmp_path, **kw)
    assert hist["resumed_from"] == 4 and int(resumed.step) == 8
    for a, b in zip(jax.tree.leaves((resumed.params, resumed.batch_stats, resumed.opt_state)),
                    jax.tree.leaves((ref.params, ref.batch_stats, ref.opt_state))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_dropout_follows_the_training_keys():
    adapted = models.as_model(NNXNet(nnx.Rngs(0), dropout=0.5))
    variables = adapted.init()
    x = jnp.ones((2, 28, 28, 1))

    @jax.jit
    def run(key):
        return adapted.apply(variables, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": key})[0]

    a, b, c = run(jax.random.key(1)), run(jax.random.key(1)), run(jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.max(jnp.abs(a - c))) > 1e-3
    e1 = adapted.apply(variables, x, train=False)
    e2 = jax.jit(lambda v: adapted.apply(v, x, train=False))(variables)
    np.testing.assert_allclose(e1, e2, rtol=1e-5, atol=1e-6)


def test_linen_model_without_train_argument_trains():
    train, test = _digits(512)
    state, _ = training.fit(LinenNoTrain(), training.standard_objective(), train,
                            key=jax.random.key(0), steps=40, batch_size=64,
                            optimizer="adam", learning_rate=1e-2, progress=False)
    logits_fn = models.make_logits_fn(LinenNoTrain(), {"params": state.params})
    assert _accuracy(logits_fn, test) > 0.7


@pytest.mark.parametrize("bad", [lambda x: x, "mlp", object()])
def test_fit_refuses_what_is_not_a_flax_model(bad):
    train, _ = _digits(64)
    with pytest.raises(ValueError, match="Flax Linen module.*NNX"):
        training.fit(bad, training.standard_objective(), train, key=jax.random.key(0),
                     steps=1, batch_size=32, progress=False)
    with pytest.raises(ValueError, match="Flax Linen module"):
        models.make_logits_fn(bad, {})
