"""Train state, objectives, train/eval steps and optimizers (single device, in process)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import objectives, training
from training_testlib import BNNet, TinyMLP, flat, linf_pgd, max_abs_diff

X_SHAPE = (8, 8, 8, 1)


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(size=(n, 8, 8, 1)).astype(np.float32),
            "label": rng.integers(0, 10, size=n).astype(np.int32)}


def _ce(logits, y):
    picked = jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, -1) - picked)


def test_create_train_state_with_and_without_batch_norm():
    tx = optax.sgd(0.1)
    s = training.create_train_state(BNNet(), jax.random.key(0), (1, 8, 8, 1), tx)
    assert isinstance(s, training.TrainState) and int(s.step) == 0
    assert set(s.batch_stats["BatchNorm_0"]) == {"mean", "var"}
    np.testing.assert_array_equal(s.batch_stats["BatchNorm_0"]["var"], np.ones(8))
    m = training.create_train_state(TinyMLP(), jax.random.key(0), (1, 8, 8, 1), tx)
    assert m.batch_stats == {}
    assert set(m.variables()) == {"params"}
    # Same key -> same parameters.
    s2 = training.create_train_state(BNNet(), jax.random.key(0), (1, 8, 8, 1), tx)
    assert max_abs_diff(flat(s.params), flat(s2.params)) == 0.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_shape=(8,)), "input_shape"),
    (dict(tx="sgd"), "tx"),
    (dict(key=0), "key"),
])
def test_create_train_state_validation(kwargs, match):
    args = dict(model=TinyMLP(), key=jax.random.key(0), input_shape=(1, 8, 8, 1),
                tx=optax.sgd(0.1))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        training.create_train_state(**args)


def test_standard_step_matches_manual_sgd_and_batch_norm_update():
    """Reference: hand-written loss, jax.grad and SGD update; BN running mean by its formula."""
    model = BNNet()
    lr = 0.1
    state = training.create_train_state(model, jax.random.key(1), (1, 8, 8, 1), optax.sgd(lr))
    batch = _batch()
    step = training.make_train_step(training.standard_objective())
    new_state, metrics = jax.jit(step)(state, batch, jax.random.key(2))

    def loss(params):
        logits, _ = model.apply({"params": params, "batch_stats": state.batch_stats},
                                batch["image"], train=True, mutable=["batch_stats"])
        return _ce(logits, batch["label"])

    value, grads = jax.jit(jax.value_and_grad(loss))(state.params)
    expect = jax.tree.map(lambda p, g: p - lr * g, state.params, grads)
    assert max_abs_diff(flat(new_state.params), flat(expect)) < 1e-6
    np.testing.assert_allclose(metrics["loss"], value, rtol=1e-6)
    assert int(new_state.step) == 1
    # Running mean: 0.9 * 0 + 0.1 * batch mean of the first layer's features.
    w, b = state.params["Dense_0"]["kernel"], state.params["Dense_0"]["bias"]
    feats = np.asarray(batch["image"]).reshape(8, -1) @ np.asarray(w) + np.asarray(b)
    np.testing.assert_allclose(new_state.batch_stats["BatchNorm_0"]["mean"],
                               0.1 * feats.mean(axis=0), atol=1e-6)
    assert not np.allclose(new_state.batch_stats["BatchNorm_0"]["var"], 1.0)


def test_train_step_jit_equals_no_jit_and_uses_step_keys():
    state = training.create_train_state(BNNet(dropout=0.5), jax.random.key(0), (1, 8, 8, 1),
                                        optax.sgd(0.1, momentum=0.9))
    step = training.make_train_step(training.standard_objective())
    batch, key = _batch(), jax.random.key(3)
    s_eager, m_eager = step(state, batch, key)
    s_jit, m_jit = jax.jit(step)(state, batch, key)
    assert max_abs_diff(flat(s_eager), flat(s_jit)) < 1e-6
    np.testing.assert_allclose(m_eager["loss"], m_jit["loss"], rtol=1e-6)
    # The step counter is folded into the key: dropout masks differ between steps 0 and 1
    # given the same base key, so the same batch gives a different loss at step 1 ...
    s1 = s_jit.replace(params=state.params, opt_state=state.opt_state)
    _, m1 = jax.jit(step)(s1, batch, key)
    assert abs(float(m1["loss"]) - float(m_jit["loss"])) > 1e-6
    # ... and is reproducible.
    _, m1b = jax.jit(step)(s1, batch, key)
    np.testing.assert_array_equal(m1["loss"], m1b["loss"])


def test_train_step_under_vmap_over_an_ensemble():
    tx = optax.sgd(0.1)
    keys = jax.random.split(jax.random.key(0), 2)
    model = TinyMLP()
    states = [training.create_train_state(model, k, (1, 8, 8, 1), tx) for k in keys]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    step = training.make_train_step(training.standard_objective())
    batch = _batch()
    step_keys = jax.random.split(jax.random.key(5), 2)
    out, _ = jax.jit(jax.vmap(step, in_axes=(0, None, 0)))(stacked, batch, step_keys)
    jitted = jax.jit(step)
    for i in range(2):
        one, _ = jitted(states[i], batch, step_keys[i])
        got = jax.tree.map(lambda x: x[i], out.params)
        assert max_abs_diff(flat(got), flat(one.params)) < 1e-6


def test_adversarial_objective_matches_manual_madry_step():
    """Attack in eval mode with per-example keys, then train-mode loss on x_adv only."""
    model = BNNet()
    state = training.create_train_state(model, jax.random.key(0), (1, 8, 8, 1), optax.sgd(0.1))
    # Make running statistics differ from batch statistics so eval mode matters.
    state = state.replace(batch_stats=jax.tree.map(lambda v: v + 0.3, state.batch_stats))
    batch = _batch()
    attack = functools.partial(linf_pgd, eps=0.1, steps=3, step_size=0.04)
    objective = objectives.adversarial_objective(attack)
    key = jax.random.key(7)
    (loss, (stats, metrics)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
        state.params, state, batch, key)

    attack_key, _ = jax.random.split(key)
    eval_vars = {"params": state.params, "batch_stats": state.batch_stats}
    logits_fn = lambda z: model.apply(eval_vars, z, train=False)  # noqa: E731
    keys = jax.vmap(lambda i: jax.random.fold_in(attack_key, i))(jnp.arange(8))
    one = jax.jit(lambda k, x, y: attack(logits_fn, k, x, y))
    x_adv = jnp.concatenate([one(keys[i], batch["image"][i:i + 1], batch["label"][i:i + 1])
                             for i in range(8)])
    assert float(jnp.max(jnp.abs(x_adv - batch["image"]))) <= 0.1 + 1e-6

    def ref_loss(params):
        logits, upd = model.apply({"params": params, "batch_stats": state.batch_stats}, x_adv,
                                  train=True, mutable=["batch_stats"])
        return _ce(logits, batch["label"]), upd["batch_stats"]

    (ref, ref_stats), ref_grads = jax.jit(jax.value_and_grad(ref_loss, has_aux=True))(
        state.params)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)
    assert max_abs_diff(flat(grads), flat(ref_grads)) < 1e-5  # Danskin: no grad via attack
    assert max_abs_diff(flat(stats), flat(ref_stats)) < 1e-6
    # The adversarial loss exceeds the clean one.
    clean, _ = training.standard_objective()(state.params, state, batch, key)
    assert float(loss) > float(clean)
    assert set(metrics) >= {"loss", "accuracy"}


def test_adversarial_objective_mix_concatenates_clean_and_adversarial():
    model = TinyMLP()
    state = training.create_train_state(model, jax.random.key(0), (1, 8, 8, 1), optax.sgd(0.1))
    batch = _batch()

    def shift(logits_fn, key, x, y):  # deterministic "attack"
        del logits_fn, key, y
        return jnp.clip(x + 0.2, 0.0, 1.0)

    loss, (_, metrics) = objectives.adversarial_objective(shift, mix=0.25)(
        state.params, state, batch, jax.random.key(0))
    apply = lambda z: model.apply({"params": state.params}, z)  # noqa: E731
    clean = _ce(apply(batch["image"]), batch["label"])
    adv = _ce(apply(jnp.clip(batch["image"] + 0.2, 0, 1)), batch["label"])
    np.testing.assert_allclose(loss, 0.75 * clean + 0.25 * adv, rtol=1e-5)
    np.testing.assert_allclose(metrics["clean_loss"], clean, rtol=1e-5)
    assert set(metrics) >= {"loss", "accuracy", "clean_accuracy", "adv_loss"}


def test_example_keys_depend_on_global_index_only():
    key = jax.random.key(0)
    full = training.example_keys(key, {"image": jnp.zeros((8, 2))})
    half = training.example_keys(key, {"image": jnp.zeros((4, 2)),
                                       "index": jnp.arange(4, 8)})
    np.testing.assert_array_equal(jax.random.key_data(full[4:]), jax.random.key_data(half))
    assert full.shape == (8,)


def test_adversarial_objective_validation():
    with pytest.raises(ValueError, match="mix"):
        objectives.adversarial_objective(linf_pgd, mix=1.5)
    with pytest.raises(ValueError, match="attack_fn"):
        objectives.adversarial_objective("pgd")
    with pytest.raises(ValueError, match="loss"):
        training.standard_objective(loss="mse")
    with pytest.raises(ValueError, match="objective"):
        training.make_train_step(None)
    state = training.create_train_state(TinyMLP(), jax.random.key(0), (1, 8, 8, 1),
                                        optax.sgd(0.1))
    with pytest.raises(ValueError, match="batch"):
        training.make_train_step(training.standard_objective())(
            state, (np.zeros((2, 8, 8, 1)), np.zeros(2, np.int32)), jax.random.key(0))


def test_eval_step_masked_means():
    model = TinyMLP()
    state = training.create_train_state(model, jax.random.key(0), (1, 8, 8, 1), optax.sgd(0.1))
    batch = _batch()
    mask = np.array([1, 1, 1, 0, 1, 0, 1, 1], np.float32)
    out = jax.jit(training.make_eval_step())(state, {**batch, "mask": mask})
    logits = np.asarray(model.apply({"params": state.params}, batch["image"]))
    keep = mask > 0
    ce = np.asarray(jax.nn.logsumexp(logits, -1)) - logits[np.arange(8), batch["label"]]
    np.testing.assert_allclose(out["loss"], ce[keep].mean(), rtol=1e-5)
    np.testing.assert_allclose(out["accuracy"], (logits.argmax(-1) == batch["label"])[keep].mean())
    assert float(out["count"]) == 6.0


def test_make_optimizer_weight_decay_only_on_kernels():
    params = {"Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
    grads = jax.tree.map(jnp.zeros_like, params)
    tx = training.make_optimizer("sgd", learning_rate=0.1, weight_decay=0.5, momentum=0.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.1 * 0.5 * np.ones((3, 2)))
    np.testing.assert_allclose(updates["Dense_0"]["bias"], np.zeros(2))
    tx = training.make_optimizer("adamw", learning_rate=0.1, weight_decay=0.5)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.1 * 0.5 * np.ones((3, 2)),
                               rtol=1e-6)
    np.testing.assert_allclose(updates["Dense_0"]["bias"], np.zeros(2))


def test_make_schedule_values():
    cos = training.make_schedule(1.0, "cosine", total_steps=100)
    np.testing.assert_allclose([cos(0), cos(50), cos(100)], [1.0, 0.5, 0.0], atol=1e-6)
    pw = training.make_schedule(1.0, "piecewise", total_steps=100)
    np.testing.assert_allclose([pw(49), pw(51), pw(80)], [1.0, 0.1, 0.01], rtol=1e-6)
    warm = training.make_schedule(1.0, "linear", total_steps=20, warmup_steps=10)
    np.testing.assert_allclose([warm(5), warm(10), warm(15)], [0.5, 1.0, 0.5], atol=1e-6)
    assert training.make_schedule(0.3, "constant") == 0.3


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="rmsprop"), "name"),
    (dict(momentum=1.0), "momentum"),
    (dict(schedule="cosine"), "total_steps"),
    (dict(schedule="exp", total_steps=10), "schedule"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(learning_rate=0.0), "learning_rate"),
])
def test_make_optimizer_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        training.make_optimizer(**kwargs)
