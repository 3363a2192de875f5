"""Data parallelism: a sharded ``jax.jit`` over a device mesh, and a ``jax.pmap`` path.

Both paths compute the same update as one device on the whole batch (the objective's mean
loss over the global batch). In the ``jit`` path the batch is a global array sharded along the
mesh axis ``"data"`` and the state is replicated; XLA inserts the gradient all-reduce. In the
``pmap`` path each device gets ``batch_size / num_devices`` rows and ``make_train_step(...,
axis_name="batch")`` averages gradients with ``lax.pmean``. Several processes
(``jax.distributed``) are handled by building global arrays from each process's rows with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from robustjax._src.types import PyTree
from robustjax.training._objectives import Objective
from robustjax.training._steps import make_eval_step
from robustjax.training._steps import make_train_step

DATA_AXIS = "data"
PMAP_AXIS = "batch"


def make_mesh(devices: Sequence[Any] | None = None, *, axis_name: str = DATA_AXIS) -> Mesh:
    """A one-axis mesh over ``devices`` (default: all devices of all processes).

    Args:
        devices: devices to use; default ``jax.devices()``.
        axis_name: name of the data-parallel mesh axis.

    Returns:
        ``jax.sharding.Mesh`` of shape ``(len(devices),)``.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("`devices` must not be empty.")
    return Mesh(np.asarray(devices), (axis_name,))


def _is_multiprocess() -> bool:
    return jax.process_count() > 1


def shard_batch(batch: PyTree, mesh: Mesh, *, axis_name: str = DATA_AXIS) -> PyTree:
    """Place this process's rows of a batch as global arrays sharded along ``axis_name``.

    Args:
        batch: pytree of ``[n_local, ...]`` arrays, this process's consecutive share of the
            global batch (the whole batch in a single process).
        mesh: the data-parallel mesh.
        axis_name: mesh axis to shard the leading dimension over.

    Returns:
        The same pytree of ``jax.Array`` s of global shape ``[n_local * process_count, ...]``.
    """
    sharding = NamedSharding(mesh, P(axis_name))
    if not _is_multiprocess():
        return jax.device_put(batch, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Replicate a pytree (e.g. a ``TrainState``) on every device of ``mesh``.

    In several processes every process must pass the same values.
    """
    sharding = NamedSharding(mesh, P())
    if not _is_multiprocess():
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def to_local(tree: PyTree) -> PyTree:
    """One local copy of a replicated pytree (``jax.Array`` s on this process's first device)."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x.addressable_data(0)
        if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
            return jax.device_put(x, jax.local_devices()[0])
        return x

    return jax.tree.map(one, tree)


def pmap_replicate(tree: PyTree, devices: Sequence[Any] | None = None) -> PyTree:
    """Stack ``len(devices)`` copies of every leaf for ``jax.pmap`` (default: local devices)."""
    devices = jax.local_devices() if devices is None else list(devices)
    n = len(devices)
    return jax.tree.map(lambda x: np.stack([np.asarray(x)] * n), tree)


def pmap_unreplicate(tree: PyTree) -> PyTree:
    """The first copy of a ``pmap``-replicated pytree."""
    return jax.tree.map(lambda x: x[0], tree)


def pmap_split(batch: PyTree, num_devices: int) -> PyTree:
    """Reshape ``[n, ...]`` leaves to ``[num_devices, n // num_devices, ...]``."""

    def split(x):
        x = np.asarray(x)
        if x.shape[0] % num_devices:
            raise ValueError(
                f"batch of {x.shape[0]} rows does not split over {num_devices} devices."
            )
        return x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])

    return jax.tree.map(split, batch)


class _Runner:
    """Runs train/eval steps for one parallel mode (internal to ``fit``).

    ``train(state, global_batch, key)`` takes the *global* host batch (numpy); each mode
    takes this process's rows itself.
    """

    num_shards = 1

    def place_state(self, state):
        return state

    def local_state(self, placed):
        return placed

    def checkpoint_state(self, placed):
        return self.local_state(placed)

    def _process_rows(self, batch):
        p, n = jax.process_index(), jax.process_count()
        if n == 1:
            return batch

        def rows(x):
            size = x.shape[0] // n
            return x[p * size:(p + 1) * size]

        return jax.tree.map(rows, batch)


class SingleDeviceRunner(_Runner):
    def __init__(self, objective: Objective, *, loss="ce"):
        self._train = jax.jit(make_train_step(objective))
        self._eval = jax.jit(make_eval_step(loss=loss))

    def place_state(self, state):
        return jax.device_put(state, jax.local_devices()[0])

    def train(self, state, batch, key):
        return self._train(state, batch, key)

    def evaluate(self, state, batch):
        return self._eval(state, batch)


class JitRunner(_Runner):
    """Sharded ``jax.jit``: batch sharded on ``"data"``, state replicated."""

    def __init__(self, objective: Objective, *, loss="ce", mesh: Mesh | None = None):
        self.mesh = make_mesh() if mesh is None else mesh
        self.num_shards = self.mesh.devices.size
        repl = NamedSharding(self.mesh, P())
        data = NamedSharding(self.mesh, P(DATA_AXIS))
        train_step = make_train_step(objective)
        eval_step = make_eval_step(loss=loss)

        def train(state, batch, key_data):
            return train_step(state, batch, jax.random.wrap_key_data(key_data))

        self._train = jax.jit(
            train, in_shardings=(repl, data, repl), out_shardings=(repl, repl)
        )
        self._eval = jax.jit(eval_step, in_shardings=(repl, data), out_shardings=repl)

    def place_state(self, state):
        return replicate(state, self.mesh)

    def local_state(self, placed):
        return to_local(placed)

    def checkpoint_state(self, placed):
        # Several processes: save the replicated global arrays (orbax writes them once).
        return placed if _is_multiprocess() else to_local(placed)

    def train(self, state, batch, key):
        batch = shard_batch(self._process_rows(batch), self.mesh)
        key_data = np.asarray(jax.random.key_data(key))
        return self._train(state, batch, key_data)

    def evaluate(self, state, batch):
        return self._eval(state, shard_batch(self._process_rows(batch), self.mesh))


class PmapRunner(_Runner):
    """``jax.pmap`` over the local devices with ``lax.pmean`` of gradients."""

    def __init__(self, objective: Objective, *, loss="ce"):
        self.devices = jax.local_devices()
        self.num_shards = len(self.devices) * jax.process_count()
        self._train = jax.pmap(
            make_train_step(objective, axis_name=PMAP_AXIS),
            axis_name=PMAP_AXIS, in_axes=(0, 0, None), devices=self.devices,
        )
        self._eval = jax.pmap(
            make_eval_step(loss=loss, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS,
            devices=self.devices,
        )

    def place_state(self, state):
        return pmap_replicate(state, self.devices)

    def local_state(self, placed):
        return pmap_unreplicate(placed)

    def train(self, state, batch, key):
        batch = pmap_split(self._process_rows(batch), len(self.devices))
        state, metrics = self._train(state, batch, key)
        return state, pmap_unreplicate(metrics)

    def evaluate(self, state, batch):
        batch = pmap_split(self._process_rows(batch), len(self.devices))
        return pmap_unreplicate(self._eval(state, batch))


def make_runner(objective: Objective, parallel: str, *, loss="ce") -> _Runner:
    """The runner for ``parallel`` in ``{"auto", "jit", "pmap", "none"}``."""
    if parallel == "auto":
        parallel = "jit" if (jax.device_count() > 1) else "none"
    if parallel == "none":
        if _is_multiprocess():
            raise ValueError('`parallel="none"` cannot run in several processes; use "jit".')
        return SingleDeviceRunner(objective, loss=loss)
    if parallel == "jit":
        return JitRunner(objective, loss=loss)
    if parallel == "pmap":
        return PmapRunner(objective, loss=loss)
    raise ValueError(f'`parallel` must be one of "auto", "jit", "pmap", "none"; got {parallel!r}.')
