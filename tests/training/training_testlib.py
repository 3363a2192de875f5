"""Shared helpers for the training tests: tiny models, a tiny PGD, MNIST, subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


class BNNet(nn.Module):
    """Dense → BatchNorm → ReLU → (dropout) → Dense: exercises batch_stats and dropout."""

    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8)(x.reshape((x.shape[0], -1)))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x).reshape((x.shape[0], -1))
        if self.dropout:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(10)(x)


class TinyMLP(nn.Module):
    """Flatten → Dense(16) → tanh → Dense(10); no batch norm."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(10)(jnp.tanh(nn.Dense(16)(x)))


def linf_pgd(logits_fn, key, x, y, *, eps, steps, step_size):
    """Reference ℓ∞ PGD with a uniform random start (written independently of the library)."""

    def loss(z):
        logits = logits_fn(z)
        return jnp.sum(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
            logits, y[:, None], -1)[:, 0])

    z = jnp.clip(x + jax.random.uniform(key, x.shape, minval=-eps, maxval=eps), 0.0, 1.0)

    def body(_, z):
        z = z + step_size * jnp.sign(jax.grad(loss)(z))
        return jnp.clip(jnp.clip(z, x - eps, x + eps), 0.0, 1.0)

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, z))


def load_mnist(n_train: int, n_test: int = 0):
    """Real MNIST digits (float32 NHWC in [0,1], int32 labels) from the embedded subset."""
    try:
        from robustjax.data import load_dataset

        tr, te = load_dataset("mnist_embedded", "train"), load_dataset("mnist_embedded", "test")
        train = (np.asarray(tr.images[:n_train]), np.asarray(tr.labels[:n_train]))
        test = (np.asarray(te.images[:n_test]), np.asarray(te.labels[:n_test]))
    except Exception:  # pylint: disable=broad-except
        d = np.load(os.path.join(REPO, "robustjax", "data", "_embedded", "mnist_12k.npz"))
        train = (d["train_images"][:n_train, ..., None].astype(np.float32) / 255.0,
                 d["train_labels"][:n_train].astype(np.int32))
        test = (d["test_images"][:n_test, ..., None].astype(np.float32) / 255.0,
                d["test_labels"][:n_test].astype(np.int32))
    return train, test


def flat(tree) -> dict[str, np.ndarray]:
    """Flatten a pytree to ``{path: numpy array}`` (for npz files and comparisons)."""
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(tree))
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def max_abs_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    return max(float(np.max(np.abs(a[k] - b[k]))) if a[k].size else 0.0 for k in a)


def run_python(code: str, *, env: dict | None = None, timeout: float = 120.0,
               args: tuple = ()) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (CPU only, this directory importable)."""
    full_env = dict(os.environ)
    full_env.update({"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
                     "PYTHONPATH": os.pathsep.join([HERE, REPO, full_env.get("PYTHONPATH", "")])})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def start_python(code: str, *, env: dict | None = None, args: tuple = ()) -> subprocess.Popen:
    full_env = dict(os.environ)
    full_env.update({"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
                     "PYTHONPATH": os.pathsep.join([HERE, REPO, full_env.get("PYTHONPATH", "")])})
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


class TinyConvNet(nn.Module):
    """Two strided 3×3 convs and a dense layer (a small MNIST CNN)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2))(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2))(x))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))
