"""Bad input to the attacks, losses, evaluation and training: every case ends in a ValueError (or
TypeError) that names the argument, eagerly and under ``jax.jit`` in the checked mode
(``robustjax.checked``); none returns output silently.

The core packages (defenses, linearity, spatial, certify, implicit) have their own probe in
``tests/bad_input_core_test.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robustjax
from robustjax import attacks, evaluation, losses, training

N, H, W, C, K = 3, 6, 6, 1, 10
_W = jax.random.normal(jax.random.key(0), (H * W * C, K)) * 0.1


def logits_fn(x):
    return jnp.reshape(x, (x.shape[0], -1)) @ _W


X = jax.random.uniform(jax.random.key(1), (N, H, W, C), minval=0.1, maxval=0.9)
Y = jnp.array([0, 3, 9], jnp.int32)
KEY = jax.random.key(2)

# (name, function (key, x, y, eps) -> output). Small budgets: the probe is about validation.
ATTACKS = {
    "fgsm": lambda k, x, y, e: attacks.fgsm(logits_fn, k, x, y, eps=e),
    "pgd": lambda k, x, y, e: attacks.pgd(logits_fn, k, x, y, eps=e, steps=2),
    "pgd_with_trace": lambda k, x, y, e: attacks.pgd_with_trace(logits_fn, k, x, y, eps=e,
                                                                steps=2).x_adv,
    "random_targeted": lambda k, x, y, e: attacks.random_targeted(logits_fn, k, x, y, eps=e,
                                                                  steps=2),
    "multi_targeted": lambda k, x, y, e: attacks.multi_targeted(logits_fn, k, x, y, eps=e,
                                                                steps=1),
    "apgd": lambda k, x, y, e: attacks.apgd(logits_fn, k, x, y, eps=e, steps=2),
    "apgd_targeted": lambda k, x, y, e: attacks.apgd_targeted(logits_fn, k, x, y, eps=e,
                                                              steps=2, n_target_classes=2),
    "fab": lambda k, x, y, e: attacks.fab(logits_fn, k, x, y, eps=e, steps=2,
                                          n_target_classes=2),
    "square": lambda k, x, y, e: attacks.square(logits_fn, k, x, y, eps=e, n_queries=3),
}
# Attacks without an ε (minimum-norm / penalty attacks): the same data cases.
UNBOUNDED = {
    "carlini_wagner_l2": lambda k, x, y: attacks.carlini_wagner_l2(
        logits_fn, k, x, y, steps=2, binary_search_steps=1),
    "nes_attack": lambda k, x, y: attacks.nes_attack(logits_fn, k, x, y, steps=2, num_samples=4),
    "stadv": lambda k, x, y: attacks.stadv(logits_fn, k, x, y, steps=2, optimizer="adam"),
    "generative_cw_l2": lambda k, x, y: attacks.generative_cw_l2(
        logits_fn, k, x, y, steps=2, binary_search_steps=1),
}

# (case, x, y, argument the message must name). Value cases also run under the checked jit.
DATA_CASES = [
    ("nan", X.at[0, 0, 0, 0].set(jnp.nan), Y, "x", True),
    ("pixels_0_255", X * 255.0, Y, "x", True),
    ("label_too_large", X, Y.at[2].set(K), "y", True),
    ("negative_label", X, Y.at[0].set(-1), "y", True),
    ("nchw", jnp.transpose(X, (0, 3, 1, 2)), Y, "x", False),
    ("empty", X[:0], Y[:0], "x", False),
    ("float_labels", X, Y.astype(jnp.float32), "y", False),
    ("batch_mismatch", X, Y[:2], "y", False),
]


def _raises_naming(fn, name):
    with pytest.raises((ValueError, TypeError), match=f"`{name}`"):
        out = fn()
        jax.block_until_ready(out)


# Every value case under the checked jit for the cheap attacks; one value case for the others
# (the checks are the same shared validation code; compiling APGD/FAB per case is slow).
FULL_CHECKED = ("fgsm", "pgd", "square", "carlini_wagner_l2")


@pytest.mark.parametrize("case,x,y,name,value", DATA_CASES, ids=[c[0] for c in DATA_CASES])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_eps_attacks_refuse_bad_data(attack, case, x, y, name, value):
    f = ATTACKS[attack]
    _raises_naming(lambda: f(KEY, x, y, 0.1), name)
    if value and (attack in FULL_CHECKED or case == "label_too_large"):
        # Value errors are invisible to shapes: the checked mode catches them under jit.
        _raises_naming(lambda: robustjax.checked(f)(KEY, x, y, jnp.float32(0.1)), name)


@pytest.mark.parametrize("case,x,y,name,value", DATA_CASES, ids=[c[0] for c in DATA_CASES])
@pytest.mark.parametrize("attack", sorted(UNBOUNDED))
def test_unbounded_attacks_refuse_bad_data(attack, case, x, y, name, value):
    f = UNBOUNDED[attack]
    _raises_naming(lambda: f(KEY, x, y), name)
    if value and (attack in FULL_CHECKED or case == "label_too_large"):
        _raises_naming(lambda: robustjax.checked(f)(KEY, x, y), name)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("eps", [-0.1, float("nan")], ids=["negative", "nan"])
def test_eps_attacks_refuse_bad_eps(attack, eps):
    f = ATTACKS[attack]
    _raises_naming(lambda: f(KEY, X, Y, eps), "eps")
    if attack in FULL_CHECKED or eps < 0:
        # A traced ε (vmap over budgets, a jitted ramp) is checked in the checked mode.
        _raises_naming(lambda: robustjax.checked(f)(KEY, X, Y, jnp.float32(eps)), "eps")


def test_checked_mode_passes_good_input_and_matches_the_plain_result():
    f = ATTACKS["pgd"]
    got = robustjax.checked(f)(KEY, X, Y, jnp.float32(0.1))
    want = jax.jit(f)(KEY, X, Y, jnp.float32(0.1))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_plain_jit_skips_value_checks_at_no_cost():
    # Without the checked mode a jitted attack still runs (the checks compile away): the
    # documented contract is that value checks under plain jit are opt-in.
    out = jax.jit(ATTACKS["pgd"])(KEY, X, Y.at[2].set(K), jnp.float32(0.1))
    assert out.shape == X.shape


def test_targets_are_validated():
    for bad in (Y.at[0].set(K), Y[:2]):
        _raises_naming(lambda: attacks.pgd(logits_fn, KEY, X, Y, eps=0.1, steps=1, target=bad),
                       "target")
        _raises_naming(lambda: attacks.fgsm(logits_fn, KEY, X, Y, eps=0.1, target=bad), "target")
    checked = robustjax.checked(
        lambda t: attacks.pgd(logits_fn, KEY, X, Y, eps=0.1, steps=1, target=t))
    _raises_naming(lambda: checked(Y.at[0].set(K)), "target")


LABEL_CASES = [c for c in DATA_CASES if c[3] == "y"]


@pytest.mark.parametrize("case,x,y,name,value", LABEL_CASES, ids=[c[0] for c in LABEL_CASES])
def test_losses_refuse_bad_labels_and_logits(case, x, y, name, value):
    logits = jnp.zeros((len(Y), K))
    for f in (losses.cross_entropy, losses.margin, losses.dlr_loss, losses.cw_loss):
        _raises_naming(lambda: f(logits, y), "y")
    _raises_naming(lambda: losses.cross_entropy(logits.at[0, 0].set(jnp.nan), Y), "logits")
    _raises_naming(lambda: robustjax.checked(losses.cross_entropy)(logits, Y.at[1].set(K)), "y")


def _attack_for_report(k, x, y):
    return attacks.pgd(logits_fn, k, x, y, eps=0.1, steps=1)


EVALUATIONS = {
    "robustness_report": lambda x, y: evaluation.robustness_report(
        logits_fn, x, y, {"pgd": _attack_for_report}, key=KEY, progress=False,
        masking_checks=False),
    "accuracy_vs_eps": lambda x, y: evaluation.accuracy_vs_eps(
        logits_fn, x, y, lambda e: functools.partial(attacks.pgd, logits_fn, eps=e, steps=1),
        [0.0, 0.1], key=KEY),
    "accuracy_vs_distortion": lambda x, y: evaluation.accuracy_vs_distortion(
        logits_fn, x, y, x),
    "unbounded_attack_accuracy": lambda x, y: evaluation.unbounded_attack_accuracy(
        logits_fn, x, y, lambda e: functools.partial(attacks.pgd, logits_fn, eps=e, steps=1),
        key=KEY),
    "autoattack": lambda x, y: evaluation.autoattack(
        logits_fn, KEY, x, y, eps=0.1, progress=False, steps=1, n_queries=2),
    "correct": lambda x, y: evaluation.correct(logits_fn, x, y),
}


@pytest.mark.parametrize("case,x,y,name,value", DATA_CASES, ids=[c[0] for c in DATA_CASES])
@pytest.mark.parametrize("fn", sorted(EVALUATIONS))
def test_evaluation_refuses_bad_data(fn, case, x, y, name, value):
    if fn == "accuracy_vs_distortion" and case == "batch_mismatch":
        name = "y"
    _raises_naming(lambda: EVALUATIONS[fn](x, y), name)


def test_report_refuses_labels_one_to_ten():
    # The classic off-by-one: labels 1..10 for a 10-class model gave ~0 % accuracy silently.
    y = jnp.arange(1, N + 1).at[-1].set(10)
    _raises_naming(lambda: EVALUATIONS["robustness_report"](X, y), "y")


@pytest.mark.parametrize("case,x,y,name,value", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_fit_refuses_bad_data(case, x, y, name, value):
    from robustjax.models import MLP

    with pytest.raises((ValueError, TypeError)):
        training.fit(MLP(hidden=4, num_classes=K), training.standard_objective(), (x, y),
                     key=KEY, steps=1, batch_size=max(len(y), 1), progress=False)


def test_swept_hyperparameters_accept_traced_values():
    # vmap over per-example ε (one example per lane), over κ and over τ: the checks accept
    # traced values and the results respect each lane's value.
    eps = jnp.array([0.0, 0.05, 0.2])
    out = jax.vmap(lambda x, y, e: attacks.pgd(logits_fn, KEY, x[None], y[None], eps=e,
                                               steps=3)[0])(X, Y, eps)
    dist = np.max(np.abs(np.asarray(out - X)).reshape(N, -1), axis=1)
    assert np.all(dist <= np.asarray(eps) + 1e-6) and dist[0] == 0.0 and dist[2] > 0.05
    kappas = jnp.array([0.0, 1.0])
    cw = jax.vmap(lambda k: losses.cw_loss(logits_fn(X), Y, kappa=k))(kappas)
    m = np.asarray(losses.margin(logits_fn(X), Y))
    np.testing.assert_allclose(np.asarray(cw), np.maximum(m[None], -np.asarray(kappas)[:, None]),
                               atol=1e-6)
    xs = jax.vmap(lambda k: attacks.carlini_wagner_l2(logits_fn, KEY, X, Y, kappa=k, steps=2,
                                                      binary_search_steps=1))(kappas)
    assert xs.shape == (2,) + X.shape
    taus = jnp.array([0.0, 0.5])
    st = jax.vmap(lambda t: attacks.stadv(logits_fn, KEY, X, Y, tau=t, steps=2,
                                          optimizer="adam"))(taus)
    assert st.shape == (2,) + X.shape and bool(jnp.all(jnp.isfinite(st)))
    with pytest.raises(ValueError, match="`kappa`"):
        robustjax.checked(lambda k: losses.cw_loss(logits_fn(X), Y, kappa=k))(jnp.float32(-1.0))
