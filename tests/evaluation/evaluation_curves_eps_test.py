"""accuracy_vs_eps compiles one attack for every eps (eps traced) and matches per-eps runs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import attacks, evaluation


def _linear_model(seed=0, n=48):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(64, 10)).astype(np.float32))
    x = rng.uniform(size=(n, 8, 8, 1)).astype(np.float32)
    logits_fn = lambda v: v.reshape(v.shape[0], -1) @ w  # noqa: E731
    y = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1)).astype(np.int32)
    y[: n // 4] = (y[: n // 4] + 1) % 10                      # some clean errors too
    return logits_fn, x, y


def test_accuracy_vs_eps_one_compile_and_same_curve():
    logits_fn, x, y = _linear_model()
    calls = []

    def factory(eps):
        calls.append(eps)
        return evaluation.bind_attack(attacks.pgd, logits_fn, eps=eps, steps=5,
                                      step_size=0.05, unroll=1)

    eps_values = (0.0, 0.01, 0.03, 0.1)
    curve = evaluation.accuracy_vs_eps(logits_fn, x, y, factory, eps_values,
                                       key=jax.random.key(0), batch_size=48)
    traced = [e for e in calls if isinstance(e, jax.core.Tracer)]
    assert len(traced) == len(calls) <= 2       # eval_shape + one jit trace, whatever M is
    # Reference: the same keys, one static-eps attack per eps (the former path).
    k = evaluation.attack_key(jax.random.key(0), "accuracy_vs_eps", 0)
    clean = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1)) == y
    for e, acc in zip(eps_values, curve.accuracy):
        x_adv = attacks.pgd(logits_fn, k, jnp.asarray(x), jnp.asarray(y), eps=e, steps=5,
                            step_size=0.05, unroll=1)
        ref = np.mean(clean & (np.asarray(jnp.argmax(logits_fn(x_adv), -1)) == y))
        assert abs(acc - ref) <= 2.0 / len(y), (e, acc, ref)
    assert curve.accuracy[0] == np.mean(clean)
    assert np.all(np.diff(curve.accuracy) <= 2.0 / len(y))


def test_accuracy_vs_eps_static_only_factory_still_works():
    logits_fn, x, y = _linear_model(1)

    def factory(eps):
        eps = float(eps)  # refuses a tracer: falls back to one compile per eps
        return functools.partial(lambda k, xx, yy, e: attacks.fgsm(logits_fn, k, xx, yy, eps=e),
                                 e=eps)

    curve = evaluation.accuracy_vs_eps(logits_fn, x, y, factory, (0.0, 0.1),
                                       key=jax.random.key(0))
    assert curve.accuracy.shape == (2,) and curve.accuracy[1] <= curve.accuracy[0]
