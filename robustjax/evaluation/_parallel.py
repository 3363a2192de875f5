"""Data-parallel evaluation: shard each batch of an attack over the local devices.

An attack is a per-example computation, so the cheapest way to use several devices (GPUs, TPU
cores, or the cores of a CPU host split into host devices) is to shard its batch: the program is
one ``jax.jit`` whose batch arguments carry a ``NamedSharding`` over a one-axis mesh of the local
devices (the layout of :func:`robustjax.training.make_mesh` with ``jax.local_devices()``) and
whose key is replicated. XLA partitions the computation (GSPMD) and every device attacks its own
rows; no communication is needed for per-example attacks.

**Same result as one device.** A sharded ``jax.jit`` computes the same function as the
unsharded one, including its random draws: JAX's partitionable Threefry (the default since JAX
0.5) generates every element of ``random.uniform(key, (B, ...))`` from its own index, so the
noise an example receives does not depend on how the batch is cut. Batches are padded to a
multiple of the device count by repeating their last row, and the padding rows are dropped; by
the same property the real rows' draws are those of the unpadded batch. Results then agree with
one device up to the float effects of a different per-device batch size on XLA's kernels
(bit-identical in the tests on CPU).

**CPU hosts.** XLA:CPU runs one program with a thread pool that keeps about 1.5 of 2 cores busy
on a small CNN; splitting the host into one single-threaded device per core keeps them all busy::

    XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false"

set before ``import jax`` (see README, "Performance"). With these flags a plain ``jax.jit``
call runs on one device and one thread: wrap it with :func:`data_parallel`, or let
:func:`robustjax.evaluation.robustness_report` / :func:`robustjax.evaluation.autoattack`
(which shard by default when several local devices exist) do it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["data_parallel", "local_mesh"]

DATA_AXIS = "data"


def local_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A one-axis mesh (axis ``"data"``) over ``devices`` (default: ``jax.local_devices()``).

    Args:
      devices: the devices to shard batches over; default every device of this process.

    Returns:
      ``jax.sharding.Mesh`` of shape ``(len(devices),)``.

    Raises:
      ValueError: ``devices`` is empty.
    """
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("`devices` must not be empty.")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def round_up(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ``>= size``."""
    return -(-int(size) // int(multiple)) * int(multiple)


def sharded_jit(fn: Callable[..., Any], mesh: Mesh | None, batch_argnums: Sequence[int],
                num_args: int) -> Callable[..., Any]:
    """``jax.jit(fn)`` with the arguments ``batch_argnums`` sharded along the mesh's data axis
    and the others replicated (plain ``jax.jit`` when ``mesh`` is ``None`` or has one device).
    Batch arguments must have a leading dimension divisible by the device count."""
    if mesh is None or mesh.devices.size == 1:
        return jax.jit(fn)
    data = NamedSharding(mesh, P(DATA_AXIS))
    repl = NamedSharding(mesh, P())
    shardings = tuple(data if i in batch_argnums else repl for i in range(num_args))
    return jax.jit(fn, in_shardings=shardings)


def resolve_mesh(devices: Sequence[Any] | None) -> Mesh | None:
    """The mesh for a ``devices`` argument of the evaluation drivers; ``None`` for one device."""
    if devices is not None:
        devices = list(devices)
        if not devices:
            raise ValueError("`devices` must not be empty.")
        for d in devices:
            if not isinstance(d, jax.Device):
                raise ValueError(f"`devices` must hold jax.Device objects, got {d!r}.")
    mesh = local_mesh(devices)
    return None if mesh.devices.size == 1 else mesh


def _pad_rows(a: jax.Array, size: int) -> jax.Array:
    m = a.shape[0]
    if m == size:
        return a
    return jnp.concatenate([a, jnp.repeat(a[-1:], size - m, axis=0)], axis=0)


def data_parallel(
    fn: Callable[..., Any],
    *,
    devices: Sequence[Any] | None = None,
) -> Callable[..., Any]:
    """Jit ``fn(key, x, y, ...)`` with its batch sharded over ``devices``.

    ``fn`` is a per-example computation of a replicated first argument (a PRNG key, or any
    pytree) and batch arguments whose leaves share a leading dimension ``N`` (e.g. a bound
    attack ``(key, x, y) -> x_adv`` from :func:`robustjax.evaluation.bind_attack`, or
    ``autoattack_fn(logits_fn, eps=0.3)``). The returned function pads every batch leaf to a
    multiple of the device count ``D`` (repeating the last row), runs one sharded ``jax.jit``
    program (each device computes ``ceil(N / D)`` rows), and returns ``fn``'s outputs with the
    padding rows dropped from every leaf whose leading dimension is the padded batch.

    Same key, same per-example result as ``jax.jit(fn)`` on one device (see the module
    docstring: JAX's partitionable Threefry makes the draws independent of the batch cut), up
    to float effects of XLA's per-device kernels. ``fn`` must treat examples independently
    (no batch statistics: e.g. eval-mode batch norm). With one device it is ``jax.jit(fn)``.

    Args:
      fn: ``fn(key, *batch) -> outputs`` (pytrees; batch leaves ``[N, ...]``).
      devices: devices to shard over; default ``jax.local_devices()``.

    Returns:
      ``wrapped(key, *batch)``, compiled once per input shape.

    Raises:
      ValueError: ``fn`` not callable, empty ``devices``; on call, batch leaves with different
        leading dimensions or an empty batch.

    Example::

        import jax
        from robustjax import attacks, evaluation

        pgd = evaluation.data_parallel(evaluation.bind_attack(
            attacks.pgd, logits_fn, eps=0.3, steps=40, step_size=0.01))
        x_adv = pgd(jax.random.key(0), x, y)     # batch split over jax.local_devices()

    Cost: ``fn``'s cost on ``D * ceil(N / D)`` rows, ``D``-way parallel; one compilation per
    input shape.
    """
    if not callable(fn):
        raise ValueError(f"`fn` must be callable, got {type(fn).__name__}.")
    mesh = resolve_mesh(devices)
    if mesh is None:
        dev = local_mesh(devices).devices.flat[0]
        jitted = jax.jit(fn)

        def single(key, *batch):
            batch = jax.device_put(batch, dev)
            return jitted(key, *batch)

        single.__name__ = getattr(fn, "__name__", "data_parallel")
        return single
    num = mesh.devices.size
    data = NamedSharding(mesh, P(DATA_AXIS))
    repl = NamedSharding(mesh, P())
    cache: dict[int, Callable[..., Any]] = {}

    def compiled(nargs):
        if nargs not in cache:
            def body(key, *batch):
                out = fn(key, *batch)
                b = jax.tree.leaves(batch)[0].shape[0]
                return jax.tree.map(
                    lambda o: (jax.lax.with_sharding_constraint(o, data)
                               if getattr(o, "ndim", 0) >= 1 and o.shape[0] == b else o), out)

            cache[nargs] = jax.jit(body, in_shardings=(repl,) + (data,) * nargs)
        return cache[nargs]

    def wrapped(key, *batch):
        leaves = jax.tree.leaves(batch)
        if not leaves:
            raise ValueError("data_parallel needs at least one batch argument after `key`.")
        sizes = {np.shape(a)[0] if np.ndim(a) else None for a in leaves}
        if len(sizes) != 1 or None in sizes:
            raise ValueError("batch arguments must share a leading dimension, got "
                             f"{sorted(map(str, sizes))}.")
        n = sizes.pop()
        if n == 0:
            raise ValueError("`x` must hold at least one example.")
        size = round_up(n, num)
        padded = jax.tree.map(lambda a: _pad_rows(jnp.asarray(a), size), batch)
        out = compiled(len(batch))(key, *padded)
        if size == n:
            return out
        return jax.tree.map(
            lambda o: o[:n] if getattr(o, "ndim", 0) >= 1 and o.shape[0] == size else o, out)

    wrapped.__name__ = getattr(fn, "__name__", "data_parallel")
    return wrapped
