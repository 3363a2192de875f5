"""Argument validation of every attack."""

import jax
import jax.numpy as jnp
import pytest

from robustjax import attacks

W = jnp.ones((12, 3))


def f(x):
    return jnp.reshape(x, (x.shape[0], -1)) @ W


X = jnp.full((4, 2, 3, 2), 0.5)
Y = jnp.array([0, 1, 2, 0], jnp.int32)
KEY = jax.random.key(0)

ALL = [
    (attacks.fgsm, dict(eps=0.1)),
    (attacks.pgd, dict(eps=0.1, steps=2)),
    (attacks.random_targeted, dict(eps=0.1, steps=2)),
    (attacks.multi_targeted, dict(eps=0.1, steps=2)),
    (attacks.carlini_wagner_l2, dict(steps=2)),
    (attacks.nes_attack, dict(steps=2, num_samples=2)),
]


@pytest.mark.parametrize("attack,kw", ALL)
def test_common_input_errors(attack, kw):
    with pytest.raises(ValueError, match="y"):
        attack(f, KEY, X, Y[:3], **kw)  # label count mismatch
    with pytest.raises(ValueError, match="y"):
        attack(f, KEY, X, Y + 5, **kw)  # labels out of range (concrete)
    with pytest.raises(ValueError, match="x"):
        attack(f, KEY, X[0, 0, 0], Y, **kw)  # wrong rank
    with pytest.raises(ValueError, match="x"):
        attack(f, KEY, X + 2.0, Y, **kw)  # outside the box
    with pytest.raises(ValueError, match="key"):
        attack(f, 0, X, Y, **kw)
    with pytest.raises(ValueError, match="logits_fn"):
        attack(lambda x: x, KEY, X, Y, **kw)  # not [N, K]
    out = jax.jit(lambda k, x, y: attack(f, k, x, y, **kw))(KEY, X, Y)  # fine under jit
    assert out.shape == X.shape


@pytest.mark.parametrize("attack", [attacks.pgd, attacks.random_targeted,
                                    attacks.multi_targeted])
def test_pgd_family_hyperparameter_errors(attack):
    with pytest.raises(ValueError, match="eps"):
        attack(f, KEY, X, Y, eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        attack(f, KEY, X, Y, eps=0.1, steps=0)
    with pytest.raises(ValueError, match="norm"):
        attack(f, KEY, X, Y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="loss"):
        attack(f, KEY, X, Y, eps=0.1, loss="hinge")
    with pytest.raises(ValueError, match="restarts"):
        attack(f, KEY, X, Y, eps=0.1, restarts=0)
    with pytest.raises(ValueError, match="restarts"):
        attack(f, KEY, X, Y, eps=0.1, restarts=2, random_start=False)
    with pytest.raises(ValueError, match="step_size"):
        attack(f, KEY, X, Y, eps=0.1, step_size=-1.0)
    with pytest.raises(ValueError, match="step_rule"):
        attack(f, KEY, X, Y, eps=0.1, step_rule="momentum")


def test_other_hyperparameter_errors():
    with pytest.raises(ValueError, match="eps"):
        attacks.fgsm(f, KEY, X, Y, eps=-1.0)
    with pytest.raises(ValueError, match="norm"):
        attacks.fgsm(f, KEY, X, Y, eps=0.1, norm="l0")
    with pytest.raises(ValueError, match="steps"):
        attacks.carlini_wagner_l2(f, KEY, X, Y, steps=0)
    with pytest.raises(ValueError, match="binary_search_steps"):
        attacks.carlini_wagner_l2(f, KEY, X, Y, binary_search_steps=0)
    with pytest.raises(ValueError, match="kappa"):
        attacks.carlini_wagner_l2(f, KEY, X, Y, kappa=-1.0)
    with pytest.raises(ValueError, match="num_samples"):
        attacks.nes_attack(f, KEY, X, Y, num_samples=5)
    with pytest.raises(ValueError, match="forward"):
        attacks.bpda(None)
