"""Shared machinery for benchmarks against PyTorch libraries (torchattacks) on the same weights.

* :data:`TORCH_NET` — source of a torch copy of :class:`robustjax.models.MnistCNN` (ReLU,
  SAME padding, 2×2 max pooling, flatten in NHWC order as Flax) and ``load_net(d)``, which
  builds it from an ``.npz`` written by :func:`export_mnist_cnn`. Worker scripts are
  ``TORCH_NET + their own code`` and run in the torch virtual environment.
* :func:`export_mnist_cnn` — Flax ``MnistCNN`` parameters (+ arrays) to that ``.npz``.
* :class:`TorchWorker` — a worker subprocess speaking one JSON line per request/answer.
* :func:`find_torch_python` — the Python of the torch environment (``--torch-python``,
  ``/work/torchvenv`` or ``/work/tavenv``).
* :func:`add_device_flags` / :func:`configure_xla` — ``--devices`` / ``--eigen-threads`` /
  ``--cpu-recipe`` options that set ``XLA_FLAGS`` before JAX is imported (host devices, one
  thread each: the README's CPU recipe), and :func:`device_info` to report them.
* :func:`train_madry_cnn` — the Madry MNIST CNN briefly trained (standard training) on the
  embedded digits, shared by ``attacks.py`` and ``autoattack.py``.
* :func:`uptime` — the ``uptime`` line (load average) for before/after records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

TORCH_NET = textwrap.dedent(
    r"""
    import numpy as np
    import torch

    class Net(torch.nn.Module):
        # torch copy of robustjax.models.MnistCNN: [conv k x k SAME -> relu -> maxpool 2]*L
        # -> flatten (NHWC order, as Flax) -> fc -> relu -> fc.
        def __init__(self, in_ch, features, kernel, hidden, classes, hw):
            super().__init__()
            chans = [in_ch] + list(features)
            self.convs = torch.nn.ModuleList(
                torch.nn.Conv2d(a, b, kernel, padding=kernel // 2)
                for a, b in zip(chans[:-1], chans[1:]))
            side = hw // 2 ** len(features)
            self.f1 = torch.nn.Linear(side * side * chans[-1], hidden)
            self.f2 = torch.nn.Linear(hidden, classes)

        def forward(self, x):
            for c in self.convs:
                x = torch.nn.functional.max_pool2d(torch.relu(c(x)), 2)
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
            return self.f2(torch.relu(self.f1(x)))

    def load_net(d):
        feats = [int(v) for v in d["arch_features"]]
        net = Net(int(d["arch_in_ch"]), feats, int(d["arch_kernel"]), int(d["arch_hidden"]),
                  int(d["arch_classes"]), int(d["arch_hw"])).eval()
        with torch.no_grad():
            for i, c in enumerate(net.convs):
                c.weight.copy_(torch.from_numpy(d[f"conv{i}_w"]).permute(3, 2, 0, 1))
                c.bias.copy_(torch.from_numpy(d[f"conv{i}_b"]))
            for i, f in enumerate((net.f1, net.f2)):
                f.weight.copy_(torch.from_numpy(d[f"dense{i}_w"]).T)
                f.bias.copy_(torch.from_numpy(d[f"dense{i}_b"]))
        for p in net.parameters():
            p.requires_grad_(False)
        return net
    """
)


def export_mnist_cnn(params, path: str, *, hw: int = 28, in_ch: int = 1, kernel: int | None = None,
                     **arrays) -> None:
    """Write Flax ``MnistCNN`` ``params`` (``Conv_i``/``Dense_i``) and ``arrays`` to ``path``."""
    convs = sorted((k for k in params if k.startswith("Conv")), key=lambda s: int(s.split("_")[1]))
    denses = sorted((k for k in params if k.startswith("Dense")),
                    key=lambda s: int(s.split("_")[1]))
    if len(denses) != 2:
        raise ValueError(f"expected two Dense layers, got {denses}")
    out = {}
    for i, k in enumerate(convs):
        out[f"conv{i}_w"] = np.asarray(params[k]["kernel"], np.float32)
        out[f"conv{i}_b"] = np.asarray(params[k]["bias"], np.float32)
    for i, k in enumerate(denses):
        out[f"dense{i}_w"] = np.asarray(params[k]["kernel"], np.float32)
        out[f"dense{i}_b"] = np.asarray(params[k]["bias"], np.float32)
    ksize = kernel or out["conv0_w"].shape[0]
    out.update(
        arch_features=np.asarray([out[f"conv{i}_w"].shape[-1] for i in range(len(convs))]),
        arch_kernel=ksize, arch_hidden=out["dense0_w"].shape[1],
        arch_classes=out["dense1_w"].shape[1], arch_in_ch=in_ch, arch_hw=hw)
    np.savez(path, **out, **arrays)


def find_torch_python(explicit: str | None = None) -> str | None:
    """``explicit``, else the first existing torch environment's Python, else ``None``."""
    if explicit:
        return explicit
    for p in ("/work/torchvenv/bin/python", "/work/tavenv/bin/python"):
        if os.path.exists(p):
            return p
    return None


class TorchWorker:
    """Run ``script`` (Python source) with ``python script npz`` in a subprocess.

    The worker prints one JSON line when ready (kept in ``info``); then each :meth:`run`
    writes one request line to its stdin and reads one JSON line back.
    """

    def __init__(self, python: str, script: str, npz: str, env: dict | None = None):
        fd, self.script = tempfile.mkstemp(suffix="_torch_worker.py")
        with os.fdopen(fd, "w") as f:
            f.write(script)
        self.proc = subprocess.Popen(
            [python, self.script, npz], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=dict(os.environ, **(env or {})),
        )
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("torch worker exited before it was ready")
        self.info = json.loads(line)

    def run(self, request: str) -> dict:
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"torch worker died on request {request!r}")
        return json.loads(line)

    def close(self) -> None:
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        finally:
            if os.path.exists(self.script):
                os.unlink(self.script)


def add_device_flags(parser) -> None:
    """Add ``--devices``, ``--eigen-threads`` and ``--cpu-recipe`` to an argparse parser."""
    parser.add_argument(
        "--devices", type=int, default=None,
        help="CPU host devices (--xla_force_host_platform_device_count); robustjax then "
             "shards each batch over them (evaluation.data_parallel). Default: XLA's (1)")
    parser.add_argument(
        "--eigen-threads", choices=("on", "off"), default=None,
        help="--xla_cpu_multi_thread_eigen: 'off' runs each host device on one thread")
    parser.add_argument(
        "--cpu-recipe", action="store_true",
        help="the README's CPU recipe: --devices <cores> --eigen-threads off")


def configure_xla(args) -> str:
    """Set ``XLA_FLAGS`` from the parsed device options; must run before ``import jax``."""
    if "jax" in sys.modules:
        raise RuntimeError("configure_xla must run before jax is imported")
    if args.cpu_recipe:
        args.devices = args.devices or os.cpu_count()
        args.eigen_threads = args.eigen_threads or "off"
    flags = os.environ.get("XLA_FLAGS", "").split()
    if args.devices:
        flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={args.devices}")
    if args.eigen_threads:
        flags = [f for f in flags if not f.startswith("--xla_cpu_multi_thread_eigen")]
        flags.append("--xla_cpu_multi_thread_eigen=" + (
            "true" if args.eigen_threads == "on" else "false"))
    os.environ["XLA_FLAGS"] = " ".join(flags)
    return os.environ["XLA_FLAGS"]


def device_info() -> dict:
    """Backend, local device count and ``XLA_FLAGS`` (imports jax)."""
    import jax

    return {"backend": jax.default_backend(), "local_devices": jax.local_device_count(),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__,
            "cpu_count": os.cpu_count(),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}


def uptime() -> str:
    """The ``uptime`` line (or the load average when ``uptime`` is missing)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:  # pragma: no cover
        return f"loadavg {os.getloadavg()}"


def embedded_mnist():
    """``(x_train, y_train, x_test, y_test)`` of the embedded digits, NHWC float32 in [0, 1]."""
    here = os.path.dirname(os.path.abspath(__file__))
    npz = os.path.join(here, "..", "..", "robustjax", "data", "_embedded", "mnist_12k.npz")
    d = np.load(npz)
    return (d["train_images"].astype(np.float32)[..., None] / 255.0,
            d["train_labels"].astype(np.int32),
            d["test_images"].astype(np.float32)[..., None] / 255.0,
            d["test_labels"].astype(np.int32))


def train_madry_cnn(train_steps: int = 300, *, seed: int = 0):
    """``robustjax.models.MadryCNN`` (5×5 convs 32/64, fc 1024) after ``train_steps`` Adam
    steps (lr 1e-3, batch 64) of standard training on the embedded digits.

    Returns ``(model, variables, seconds)``; deterministic given ``seed``.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from robustjax.models import MadryCNN

    model = MadryCNN()
    xtr, ytr, _, _ = embedded_mnist()
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)))
    params = variables["params"]
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, xb, yb):
        def loss(p):
            logits = model.apply({"params": p}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        g = jax.grad(loss)(params)
        upd, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state

    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    for _ in range(train_steps):
        idx = rng.integers(0, len(xtr), 64)
        params, opt_state = train_step(params, opt_state, xtr[idx], ytr[idx])
    jax.block_until_ready(params)
    return model, {"params": params}, time.perf_counter() - t
