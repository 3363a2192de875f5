"""Data-parallel evaluation on 2 fake CPU devices equals one device, example by example.

``evaluation.data_parallel``, ``evaluation.robustness_report`` and ``evaluation.autoattack``
shard each batch over ``jax.local_devices()``; the single-device reference is the same call with
``devices=jax.local_devices()[:1]`` (or a plain ``jax.jit``). Tolerance: a sharded ``jax.jit``
computes the same function, and JAX's partitionable Threefry draws every noise element from its
own index, so neither the split nor the padding rows change any example's inputs; the only
admissible difference is float rounding of XLA's per-device kernels (a few float32 ulps of a
pixel in [0, 1], 1e-6). Predictions must agree exactly. The devices run with
``--xla_cpu_multi_thread_eigen=false`` (the CPU recipe of the README) in a subprocess, since
``XLA_FLAGS`` must be set before ``import jax``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = r"""
import functools, json, os
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")  # conftest's -O0, if any
                           + " --xla_force_host_platform_device_count=2"
                           + " --xla_cpu_multi_thread_eigen=false")
import jax, jax.numpy as jnp, numpy as np
import flax.linen as nn
from robustjax import attacks, data, evaluation

assert jax.local_device_count() == 2, jax.devices()
one = jax.local_devices()[:1]


class Net(nn.Module):  # small CNN, no batch statistics
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2))(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2))(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


net = Net()
variables = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
logits_fn = jax.jit(lambda v: net.apply(variables, v))
test = data.load_dataset("mnist_embedded", "test")
x = np.asarray(test.images[:37], np.float32)
y = np.array(jnp.argmax(logits_fn(x), -1), np.int32)   # every point correct clean
y[::5] = (y[::5] + 1) % 10                              # and some misclassified
out = {}

def diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))

# 1. data_parallel around a bound PGD (random start): odd batch (padded to 14), even batch.
pgd = evaluation.bind_attack(attacks.pgd, logits_fn, eps=0.1, steps=5, step_size=0.03,
                             random_start=True)
ref_fn, par_fn = jax.jit(pgd), evaluation.data_parallel(pgd)
for n in (13, 16):
    ref = ref_fn(jax.random.key(1), x[:n], y[:n])
    got = par_fn(jax.random.key(1), x[:n], y[:n])
    out[f"dp_{n}"] = {"diff": diff(ref, got), "shape": list(got.shape),
                      "moved": diff(ref, x[:n])}
got = par_fn(jax.random.key(1), x[:16], y[:16])
out["dp_num_devices"] = len(got.sharding.device_set)
# autoattack_fn (one pure program) under data_parallel
aa_fn = evaluation.autoattack_fn(
    logits_fn, eps=0.1, attacks=evaluation.autoattack_members(
        "standard", eps=0.1, norm="linf", num_classes=10, steps=3, n_queries=20))
out["dp_autoattack_fn"] = diff(jax.jit(aa_fn)(jax.random.key(2), x[:9], y[:9]),
                               evaluation.data_parallel(aa_fn)(jax.random.key(2), x[:9], y[:9]))

# 2. robustness_report: 37 points in batches of 15 (odd: each padded to 16 on 2 devices).
suite = {"FGSM": evaluation.bind_attack(attacks.fgsm, logits_fn, eps=0.1),
         "PGD": pgd}
kw = dict(key=jax.random.key(3), batch_size=15, progress=False)
r1 = evaluation.robustness_report(logits_fn, x, y, suite, devices=one, **kw)
r2 = evaluation.robustness_report(logits_fn, x, y, suite, **kw)
out["report"] = {
    "clean_equal": bool(np.array_equal(r1.clean_predictions, r2.clean_predictions)),
    "adv_equal": {k: bool(np.array_equal(r1.adv_predictions[k], r2.adv_predictions[k]))
                  for k in suite},
    "linf": max(diff(r1.linf[k], r2.linf[k]) for k in suite),
    "l2": max(diff(r1.l2[k], r2.l2[k]) for k in suite),
    "robust": r2.robust_accuracy, "clean": r2.clean_accuracy,
}

# 3. autoattack (gathers the robust points, buckets 8/16 on 2 devices) with small budgets.
kw = dict(eps=0.01, batch_size=16, progress=False, steps=3, n_queries=20)
a1 = evaluation.autoattack(logits_fn, jax.random.key(4), x, y, devices=one, **kw)
a2 = evaluation.autoattack(logits_fn, jax.random.key(4), x, y, **kw)
out["autoattack"] = {
    "robust_equal": bool(np.array_equal(a1.robust, a2.robust)),
    "broken_by_equal": bool(np.array_equal(a1.broken_by, a2.broken_by)),
    "x_adv": diff(a1.x_adv, a2.x_adv),
    "per_attack": [a1.per_attack_robust_accuracy, a2.per_attack_robust_accuracy],
}
# 4. accuracy_vs_eps (one compiled attack, eps traced, sharded) and accuracy_vs_distortion.
factory = lambda e: evaluation.bind_attack(attacks.pgd, logits_fn, eps=e, steps=5,
                                           step_size=0.03)
kw = dict(key=jax.random.key(5), batch_size=15)
c1 = evaluation.accuracy_vs_eps(logits_fn, x, y, factory, [0.0, 0.05, 0.1], devices=one, **kw)
c2 = evaluation.accuracy_vs_eps(logits_fn, x, y, factory, [0.0, 0.05, 0.1], **kw)
xa = np.asarray(ref_fn(jax.random.key(6), x, y))
d1 = evaluation.accuracy_vs_distortion(logits_fn, x, y, xa, batch_size=15, devices=one)
d2 = evaluation.accuracy_vs_distortion(logits_fn, x, y, xa, batch_size=15)
out["curves"] = {"eps": [c1.accuracy.tolist(), c2.accuracy.tolist()],
                 "dist_equal": bool(np.array_equal(d1.x, d2.x)
                                    and np.array_equal(d1.accuracy, d2.accuracy))}
try:
    evaluation.data_parallel(pgd, devices=[])
    out["empty_devices"] = "no error"
except ValueError as e:
    out["empty_devices"] = str(e)
print("RESULT" + json.dumps(out))
"""

TOL = 1e-6  # a few float32 ulps of a pixel in [0, 1]


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    # Only the optimisation level passes through (tests/conftest.py); device flags are the script's.
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if f.startswith("--xla_backend_optimization_level"))
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_data_parallel_equals_one_device(result):
    for n in (13, 16):
        r = result[f"dp_{n}"]
        assert r["shape"] == [n, 28, 28, 1]
        assert r["moved"] > 0.05, r  # the attack did something
        assert r["diff"] <= TOL, r
    assert result["dp_num_devices"] == 2
    assert result["dp_autoattack_fn"] <= TOL


def test_robustness_report_sharded_equals_one_device(result):
    r = result["report"]
    assert r["clean_equal"]
    assert all(r["adv_equal"].values()), r
    assert r["linf"] <= TOL and r["l2"] <= TOL, r
    assert 0.0 < r["clean"] < 1.0


def test_autoattack_sharded_equals_one_device(result):
    r = result["autoattack"]
    assert r["robust_equal"] and r["broken_by_equal"], r
    assert r["x_adv"] <= TOL, r
    assert r["per_attack"][0] == r["per_attack"][1]


def test_curves_sharded_equal_one_device(result):
    r = result["curves"]
    assert r["eps"][0] == r["eps"][1], r
    assert r["eps"][0][0] > r["eps"][0][2]  # the attack lowers accuracy as eps grows
    assert r["dist_equal"]


def test_empty_devices_raise(result):
    assert "`devices`" in result["empty_devices"]


def test_single_device_data_parallel_is_jit():
    import jax
    import jax.numpy as jnp

    from robustjax import evaluation

    def f(key, x, y):
        return x * 2.0 + y[:, None] + jax.random.uniform(key, x.shape)

    x = jnp.ones((3, 4))
    y = jnp.arange(3.0)
    k = jax.random.key(0)
    np.testing.assert_array_equal(evaluation.data_parallel(f, devices=jax.local_devices()[:1])(
        k, x, y), jax.jit(f)(k, x, y))
    with pytest.raises(ValueError, match="`fn`"):
        evaluation.data_parallel(3)


def test_autoattack_reuses_its_jitted_members_across_calls():
    import functools

    import jax
    import jax.numpy as jnp

    from robustjax import attacks, evaluation

    traces = []
    w = jax.random.normal(jax.random.key(0), (784, 10))

    def logits_fn(v):
        traces.append(v.shape)  # runs only when traced
        return v.reshape(v.shape[0], -1) @ w

    x = jax.random.uniform(jax.random.key(1), (12, 28, 28, 1))
    y = jnp.argmax(logits_fn(x), -1)
    members = {"fgsm": functools.partial(attacks.fgsm, eps=0.01)}
    kw = dict(eps=0.01, attacks=members, progress=False)
    first = evaluation.autoattack(logits_fn, jax.random.key(2), x, y, **kw)
    n_traces = len(traces)
    second = evaluation.autoattack(logits_fn, jax.random.key(2), x, y, **kw)
    assert len(traces) == n_traces  # neither retraced nor recompiled
    np.testing.assert_array_equal(first.robust, second.robust)
