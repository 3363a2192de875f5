"""Two processes on loopback (``jax.distributed`` + gloo) train like one process."""

import argparse
import pickle
import socket

import jax
import pytest

from robustjax import training
from training_testlib import BNNet, flat, load_mnist, max_abs_diff, start_python

_WORKER = r"""
import argparse, pickle, sys
from robustjax import training
parser = training.add_distributed_args(argparse.ArgumentParser())
parser.add_argument("--out")
args = parser.parse_args()
assert training.initialize_from_args(args)
import jax
from training_testlib import BNNet, flat, load_mnist
assert jax.process_count() == 2 and jax.device_count() == 2, jax.devices()
(x, y), _ = load_mnist(256)
state, hist = training.fit(
    BNNet(dropout=0.25), training.standard_objective(), (x, y), key=jax.random.key(2),
    steps=3, batch_size=32, learning_rate=0.05, parallel="jit", log_every=1,
    progress=False)
if jax.process_index() == 0:
    with open(args.out, "wb") as f:
        pickle.dump({"state": flat(state), "history": hist}, f)
print("done", jax.process_index())
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    port, out = _free_port(), tmp_path / "out.pkl"
    procs = [start_python(_WORKER, args=("--coordinator_address", f"127.0.0.1:{port}",
                                         "--num_processes", "2", "--process_id", str(i),
                                         "--out", out))
             for i in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    with open(out, "rb") as f:
        got = pickle.load(f)

    (x, y), _ = load_mnist(256)
    ref, hist = training.fit(
        BNNet(dropout=0.25), training.standard_objective(), (x, y), key=jax.random.key(2),
        steps=3, batch_size=32, learning_rate=0.05, parallel="none", log_every=1,
        progress=False)
    assert max_abs_diff(got["state"], flat(ref)) < 1e-5
    assert len(got["history"]["train"]) == 3
    for a, b in zip(got["history"]["train"], hist["train"]):
        assert abs(a["loss"] - b["loss"]) < 1e-5


def test_initialize_distributed_validation_and_flags():
    assert training.initialize_distributed() is False  # single process: no-op
    with pytest.raises(ValueError, match="together"):
        training.initialize_distributed("127.0.0.1:1234")
    with pytest.raises(ValueError, match="process_id"):
        training.initialize_distributed("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes"):
        training.initialize_distributed("127.0.0.1:1234", 0, 0)
    args = training.add_distributed_args(argparse.ArgumentParser()).parse_args(
        ["--coordinator_address", "h:1", "--num_processes", "4", "--process_id", "3"])
    assert (args.coordinator_address, args.num_processes, args.process_id) == ("h:1", 4, 3)
    assert training.initialize_from_args(argparse.Namespace()) is False
