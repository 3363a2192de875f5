"""Data parallel training on 4 fake CPU devices equals one device (sharded jit and pmap)."""

import json

import numpy as np

from training_testlib import run_python

_SCRIPT = r"""
import functools, json, os
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")  # keeps conftest's -O0
                           + " --xla_force_host_platform_device_count=4")
import jax, numpy as np
from robustjax import objectives, training
from training_testlib import BNNet, TinyMLP, flat, linf_pgd, load_mnist, max_abs_diff

assert jax.device_count() == 4, jax.devices()
(x, y), _ = load_mnist(256)
attack = functools.partial(linf_pgd, eps=0.1, steps=1, step_size=0.05)
adv = objectives.adversarial_objective(attack)
out = {}
for name, model, parallel, with_eval in [("jit_bn_dropout", BNNet(dropout=0.25), "jit", True),
                                         ("pmap_mlp", TinyMLP(), "pmap", False)]:
    init = training.create_train_state(model, jax.random.key(0), (1, 28, 28, 1),
                                       training.make_optimizer(learning_rate=0.05))
    kw = dict(key=jax.random.key(0), steps=2, batch_size=32, progress=False, log_every=1)
    if with_eval:  # 40 examples in batches of 16: the last one padded and masked
        kw.update(eval_ds=(x[:40], y[:40]), eval_every=2, eval_batch_size=16)
    ref, h_ref = training.fit(init, adv, (x, y), parallel="none", **kw)
    got, h_got = training.fit(init, adv, (x, y), parallel=parallel, **kw)
    out[name] = {
        "diff": max_abs_diff(flat(ref.params), flat(got.params)),
        "stats_diff": max_abs_diff(flat(ref.batch_stats), flat(got.batch_stats))
        if ref.batch_stats else 0.0,
        "moved": max_abs_diff(flat(ref.params), flat(init.params)),
        "loss_ref": [r["loss"] for r in h_ref["train"]],
        "loss_got": [r["loss"] for r in h_got["train"]],
        "eval_ref": [r["accuracy"] for r in h_ref["eval"]],
        "eval_got": [r["accuracy"] for r in h_got["eval"]],
    }
print("RESULT" + json.dumps(out))
"""


def test_jit_and_pmap_on_four_devices_equal_one_device():
    proc = run_python(_SCRIPT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    out = json.loads(line[len("RESULT"):])
    for name in ("jit_bn_dropout", "pmap_mlp"):
        r = out[name]
        assert r["moved"] > 1e-3, r  # training changed the parameters
        assert r["diff"] < 1e-5, (name, r)
        assert r["stats_diff"] < 1e-5, (name, r)
        assert len(r["loss_got"]) == 2
        for a, b in zip(r["loss_ref"], r["loss_got"]):
            assert abs(a - b) < 1e-5, (name, r)
        assert len(r["eval_got"]) == (1 if name == "jit_bn_dropout" else 0)
        assert np.allclose(r["eval_ref"], r["eval_got"], atol=1e-6), (name, r)
