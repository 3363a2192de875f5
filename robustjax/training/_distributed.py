"""Multi-process (multi-host) start-up: ``jax.distributed`` plus command-line flags."""

from __future__ import annotations

import argparse
from typing import Any

import jax


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Any = None,
    cpu_collectives: str | None = "gloo",
) -> bool:
    """Join a multi-process JAX job (``jax.distributed.initialize``); call before any JAX work.

    With no arguments and ``num_processes`` unset this is a no-op for a single process
    (returns ``False``), so scripts may always call it. On a managed cluster (SLURM, TPU pods,
    ...) ``jax.distributed.initialize()`` autodetects everything: pass ``num_processes=-1``; or
    give the three values explicitly, e.g. ``initialize_distributed("10.0.0.1:1234", 2, 0)``
    on the first host and ``..., 2, 1)`` on the second.

    On CPU, cross-process collectives need an implementation: ``cpu_collectives="gloo"``
    (default) sets ``jax_cpu_collectives_implementation`` before initialising.

    Afterwards ``jax.devices()`` lists the devices of all processes, and
    ``fit(..., parallel="jit")`` trains data-parallel across them, each process feeding its own
    share of each global batch.

    Args:
        coordinator_address: ``"host:port"`` of process 0's coordinator service.
        num_processes: total number of processes; ``None`` with no address → single process,
            ``-1`` → let JAX autodetect the cluster.
        process_id: this process's index in ``[0, num_processes)``.
        local_device_ids: restrict this process to these local devices.
        cpu_collectives: CPU collectives implementation (``"gloo"``, ``"mpi"``) or ``None``.

    Returns:
        ``True`` if ``jax.distributed`` was initialised, ``False`` for a single process.
    """
    if coordinator_address is None and num_processes is None and process_id is None:
        return False
    if num_processes == -1:
        num_processes = None
        explicit = False
    else:
        explicit = True
    if explicit:
        if coordinator_address is None or num_processes is None or process_id is None:
            raise ValueError(
                "`coordinator_address`, `num_processes` and `process_id` must be given together "
                "(or num_processes=-1 to autodetect)."
            )
        if not isinstance(num_processes, int) or num_processes < 1:
            raise ValueError(f"`num_processes` must be a positive int, got {num_processes!r}.")
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ValueError(
                f"`process_id` must be in [0, {num_processes}), got {process_id!r}."
            )
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )
    return True


def add_distributed_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--coordinator_address``, ``--num_processes`` and ``--process_id`` to ``parser``."""
    group = parser.add_argument_group("distributed")
    group.add_argument("--coordinator_address", type=str, default=None,
                       help="host:port of process 0 (multi-process training).")
    group.add_argument("--num_processes", type=int, default=None,
                       help="total number of processes (-1: autodetect on a cluster).")
    group.add_argument("--process_id", type=int, default=None, help="index of this process.")
    return parser


def define_distributed_flags() -> None:
    """Define the same three flags with ``absl.flags`` (idempotent)."""
    from absl import flags

    if "coordinator_address" in flags.FLAGS:
        return
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
    flags.DEFINE_integer("num_processes", None, "total number of processes.")
    flags.DEFINE_integer("process_id", None, "index of this process.")


def initialize_from_args(args: Any = None) -> bool:
    """:func:`initialize_distributed` from an argparse namespace or, if ``None``, absl flags."""
    if args is None:
        from absl import flags

        args = flags.FLAGS
    return initialize_distributed(
        coordinator_address=getattr(args, "coordinator_address", None),
        num_processes=getattr(args, "num_processes", None),
        process_id=getattr(args, "process_id", None),
    )
