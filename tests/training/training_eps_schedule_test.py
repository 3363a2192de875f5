"""ε ramp-up: traced ε in the attacks and ``adversarial_objective(eps_schedule=...)``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import attacks, objectives, training
from training_testlib import TinyMLP, flat, max_abs_diff


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(size=(n, 8, 8, 1)).astype(np.float32),
            "label": rng.integers(0, 10, size=n).astype(np.int32)}


def _state():
    return training.create_train_state(TinyMLP(), jax.random.key(0), (1, 8, 8, 1),
                                       optax.sgd(0.1))


def test_pgd_and_fgsm_accept_a_traced_eps_equal_to_the_static_one():
    state, batch = _state(), _batch()
    logits_fn = functools.partial(state.apply_fn, {"params": state.params})
    x, y, key = jnp.asarray(batch["image"]), jnp.asarray(batch["label"]), jax.random.key(3)
    for attack in (functools.partial(attacks.pgd, steps=3, unroll=1), attacks.fgsm):
        static = attack(logits_fn, key, x, y, eps=0.2)
        traced = jax.jit(lambda e, a=attack: a(logits_fn, key, x, y, eps=e))(jnp.float32(0.2))
        np.testing.assert_allclose(traced, static, atol=1e-6)
        assert float(jnp.max(jnp.abs(traced - x))) <= 0.2 + 1e-6


@pytest.mark.parametrize("eps", [jnp.float32(-0.1), jnp.float32(jnp.nan), jnp.ones(2)])
def test_concrete_bad_array_eps_is_rejected(eps):
    state, batch = _state(), _batch()
    logits_fn = functools.partial(state.apply_fn, {"params": state.params})
    with pytest.raises(ValueError, match="eps"):
        attacks.pgd(logits_fn, jax.random.key(0), batch["image"], batch["label"], eps=eps,
                    steps=2)


def test_eps_schedule_feeds_the_attack_the_scheduled_eps():
    """Zero ε at step 0 gives the standard objective; at a later step, the fixed-ε objective."""
    state, batch = _state(), _batch()
    pgd = functools.partial(attacks.pgd, steps=2, unroll=1)   # step_size follows eps
    schedule = optax.linear_schedule(0.0, 0.3, 10)
    ramp = objectives.adversarial_objective(pgd, eps_schedule=schedule)
    step = jax.jit(training.make_train_step(ramp))
    std = jax.jit(training.make_train_step(training.standard_objective()))
    key = jax.random.key(1)
    s_ramp, m_ramp = step(state, batch, key)
    s_std, m_std = std(state, batch, key)
    np.testing.assert_allclose(m_ramp["loss"], m_std["loss"], rtol=1e-6)
    assert max_abs_diff(flat(s_ramp.params), flat(s_std.params)) < 1e-6

    later = state.replace(step=10)   # schedule(10) = 0.3
    fixed = jax.jit(training.make_train_step(
        objectives.adversarial_objective(functools.partial(pgd, eps=0.3))))
    s_a, m_a = step(later, batch, key)
    s_b, m_b = fixed(later, batch, key)
    np.testing.assert_allclose(m_a["loss"], m_b["loss"], rtol=1e-5)
    assert float(m_a["loss"]) > float(m_ramp["loss"])   # the attack is active at step 10
    # One compilation serves every ε of the ramp.
    assert step._cache_size() == 1
