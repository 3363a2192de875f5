"""``fit``: learning on real MNIST, metrics log, checkpoints, resume after a kill, validation."""

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import training
from training_testlib import BNNet, TinyConvNet, TinyMLP, flat, load_mnist, max_abs_diff
from training_testlib import run_python


def test_fit_learns_mnist_and_logs(tmp_path):
    (x, y), (xt, yt) = load_mnist(2560, 500)
    state, hist = training.fit(
        TinyConvNet(), training.standard_objective(), (x, y), key=jax.random.key(0),
        epochs=1, batch_size=64, learning_rate=0.1, log_every=10, eval_ds=(xt, yt),
        eval_every=20, eval_batch_size=192, workdir=tmp_path, progress=False)
    assert int(state.step) == 40
    losses = [r["loss"] for r in hist["train"]]
    assert [r["step"] for r in hist["train"]] == [10, 20, 30, 40]
    assert losses[-1] < 0.6 * losses[0], losses
    assert [r["step"] for r in hist["eval"]] == [20, 40]
    assert hist["eval"][-1]["accuracy"] > 0.8, hist["eval"]
    # The eval accuracy (padded last batch, masked) equals a direct computation.
    logits = TinyConvNet().apply({"params": state.params}, xt)
    np.testing.assert_allclose(hist["eval"][-1]["accuracy"],
                               np.mean(np.argmax(logits, -1) == yt), atol=1e-6)
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert records == hist["train"][:2] + hist["eval"][:1] + hist["train"][2:] + hist["eval"][1:]
    assert hist["resumed_from"] is None
    assert os.listdir(tmp_path / "checkpoints")


_RESUME = r"""
import os, pickle, sys
import jax
import jax.numpy as jnp
from robustjax import training
from training_testlib import BNNet, flat, load_mnist
workdir, mode, out = sys.argv[1:4]
(x, y), _ = load_mnist(320)

def callback(step, metrics):
    if mode == "kill" and step == 5:
        os._exit(17)  # die like a killed job: no cleanup, no final checkpoint

state, hist = training.fit(
    BNNet(dropout=0.25), training.standard_objective(), (x, y), key=jax.random.key(1),
    steps=8, batch_size=64, learning_rate=0.1, schedule="cosine", momentum=0.9,
    weight_decay=1e-3, workdir=workdir, checkpoint_every=3, log_every=1, progress=False,
    callback=callback)
with open(out, "wb") as f:
    pickle.dump({"state": flat(state), "history": hist}, f)
"""


def _fit_resume_reference():
    (x, y), _ = load_mnist(320)
    return training.fit(
        BNNet(dropout=0.25), training.standard_objective(), (x, y), key=jax.random.key(1),
        steps=8, batch_size=64, learning_rate=0.1, schedule="cosine", momentum=0.9,
        weight_decay=1e-3, log_every=1, progress=False)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    workdir, out = tmp_path / "run", tmp_path / "out.pkl"
    # A compilation cache shared by the two runs: the rerun skips recompiling the step.
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    killed = run_python(_RESUME, args=(workdir, "kill", out), timeout=180, env=env)
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert not out.exists()
    steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
    assert steps == [3], steps  # step-6 checkpoint never happened
    resumed = run_python(_RESUME, args=(workdir, "resume", out), timeout=180, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open(out, "rb") as f:
        got = pickle.load(f)
    assert got["history"]["resumed_from"] == 3
    assert [r["step"] for r in got["history"]["train"]] == list(range(1, 9))

    ref_state, ref_hist = _fit_resume_reference()
    assert int(ref_state.step) == 8
    assert max_abs_diff(got["state"], flat(ref_state)) < 1e-6  # params, momentum, BN stats
    for a, b in zip(got["history"]["train"], ref_hist["train"]):
        assert a["step"] == b["step"] and abs(a["loss"] - b["loss"]) < 1e-6, (a, b)
    with open(workdir / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == list(range(1, 9))


def test_checkpoint_roundtrip(tmp_path):
    state = training.create_train_state(BNNet(), jax.random.key(0), (1, 8, 8, 1),
                                        training.make_optimizer(learning_rate=0.1))
    state = state.replace(step=state.step + 4,
                          batch_stats=jax.tree.map(lambda v: v + 1.5, state.batch_stats))
    manager = training.make_checkpoint_manager(tmp_path / "ckpt")
    training.save_checkpoint(manager, state)
    template = training.create_train_state(BNNet(), jax.random.key(9), (1, 8, 8, 1),
                                           training.make_optimizer(learning_rate=0.1))
    restored = training.restore_checkpoint(manager, template)
    manager.close()
    assert int(restored.step) == 4
    assert max_abs_diff(flat(restored), flat(state)) == 0.0
    assert restored.apply_fn is not None and restored.tx is template.tx


def test_fit_accepts_a_train_state_and_steps():
    (x, y), _ = load_mnist(64)
    state = training.create_train_state(TinyMLP(), jax.random.key(0), (1, 28, 28, 1),
                                        training.make_optimizer("adam", learning_rate=1e-3))
    out, hist = training.fit(state, training.standard_objective(), (x, y),
                             key=jax.random.key(0), steps=3, batch_size=32,
                             parallel="none", progress=False)
    assert int(out.step) == 3 and len(hist["train"]) == 1 and hist["eval"] == []
    assert max_abs_diff(flat(out.params), flat(state.params)) > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=None), "epochs"),
    (dict(epochs=1), "epochs"),
    (dict(batch_size=100), "batch_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(parallel="tpu"), "parallel"),
    (dict(train_ds="mnist"), "train_ds"),
    (dict(train_ds=(np.zeros((64, 28, 28, 1), np.uint8), np.zeros(64, np.int32))), "train_ds"),
    (dict(eval_every=0), "eval_every"),
    (dict(key=1), "key"),
])
def test_fit_validation(kwargs, match):
    (x, y), _ = load_mnist(64)
    args = dict(train_ds=(x, y), key=jax.random.key(0), steps=2, batch_size=32,
                progress=False)
    args.update(kwargs)
    train_ds = args.pop("train_ds")
    with pytest.raises(ValueError, match=match):
        training.fit(TinyMLP(), training.standard_objective(), train_ds, **args)


def _bad_fit(images, labels, **kw):
    return training.fit(TinyMLP(), training.standard_objective(), (images, labels),
                        key=jax.random.key(0), steps=2, batch_size=4, progress=False, **kw)


@pytest.mark.parametrize("images,labels,match", [
    (np.zeros((8, 1, 8, 8), np.float32), np.zeros(8, np.int32), "NHWC"),
    (np.zeros((8, 8, 8, 1), np.uint8), np.zeros(8, np.int32), "divide by 255"),
    (np.full((8, 8, 8, 1), 255.0, np.float32), np.zeros(8, np.int32), r"\[0.0, 1.0\]"),
    (np.full((8, 8, 8, 1), np.nan, np.float32), np.zeros(8, np.int32), "train_ds.images"),
    (np.zeros((8, 8, 8, 1), np.float32), np.arange(1, 9, dtype=np.int32) + 2, r"\[0, 9\]"),
    (np.zeros((0, 8, 8, 1), np.float32), np.zeros(0, np.int32), "empty"),
])
def test_fit_refuses_bad_data_before_training(images, labels, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        _bad_fit(images, labels, workdir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() or not os.listdir(
        tmp_path / "run" / "checkpoints")


def test_fit_stops_on_non_finite_loss_and_keeps_last_good_checkpoint(tmp_path):
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    y = np.arange(16, dtype=np.int32) % 10
    # An objective whose loss turns NaN at step 3 (the state's step counter is traced).
    base = training.standard_objective()

    def objective(params, state, batch, key):
        loss, aux = base(params, state, batch, key)
        return jnp.where(state.step >= 2, jnp.nan, loss), aux

    with pytest.raises(training.NonFiniteLossError, match="at step 3"):
        training.fit(TinyMLP(), objective, (x, y), key=jax.random.key(0), steps=6,
                     batch_size=4, checkpoint_every=1, workdir=tmp_path, progress=False)
    steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert steps and steps[-1] == 2
