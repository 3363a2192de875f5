"""Shared machinery for benchmarks against PyTorch libraries (torchattacks) on the same weights.

* :data:`TORCH_NET` — source of a torch copy of :class:`robustjax.models.MnistCNN` (ReLU,
  SAME padding, 2×2 max pooling, flatten in NHWC order as Flax) and ``load_net(d)``, which
  builds it from an ``.npz`` written by :func:`export_mnist_cnn`. Worker scripts are
  ``TORCH_NET + their own code`` and run in the torch virtual environment.
* :func:`export_mnist_cnn` — Flax ``MnistCNN`` parameters (+ arrays) to that ``.npz``.
* :class:`TorchWorker` — a worker subprocess speaking one JSON line per request/answer.
* :func:`find_torch_python` — the Python of the torch environment (``--torch-python``,
  ``/work/torchvenv`` or ``/work/tavenv``).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import textwrap

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
