"""Orbax checkpoints of a :class:`~robustjax.training.TrainState`."""

from __future__ import annotations

import os
from typing import Any

import jax
from flax import serialization


def make_checkpoint_manager(directory: str | os.PathLike, *, max_to_keep: int = 3) -> Any:
    """An ``orbax.checkpoint.CheckpointManager`` writing synchronously to ``directory``.

    Synchronous saving keeps the on-disk state in step with the training loop, so a process
    killed after ``save`` returned resumes from that step. Unfinished (killed mid-write)
    checkpoints are temporary directories that orbax ignores.

    Args:
        directory: checkpoint directory (created if missing; absolute path recommended).
        max_to_keep: number of most recent checkpoints kept.

    Returns:
        The checkpoint manager; close it with ``manager.close()``.
    """
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options)


def save_checkpoint(manager: Any, state: Any, *, step: int | None = None) -> None:
    """Save ``state`` (its pytree fields: step, params, opt_state, batch_stats) at ``step``.

    Args:
        manager: from :func:`make_checkpoint_manager`.
        state: a :class:`~robustjax.training.TrainState` (one replica, not ``pmap``-stacked).
        step: checkpoint step; default ``int(state.step)``.
    """
    import orbax.checkpoint as ocp

    if step is None:
        step = int(jax.device_get(state.step))
    manager.save(step, args=ocp.args.StandardSave(serialization.to_state_dict(state)))
    manager.wait_until_finished()


def restore_checkpoint(manager: Any, state: Any, *, step: int | None = None) -> Any:
    """Restore the checkpoint at ``step`` (default: the latest) into the structure of ``state``.

    Args:
        manager: from :func:`make_checkpoint_manager`.
        state: a template :class:`~robustjax.training.TrainState` (same model and optimizer);
            its static fields (``apply_fn``, ``tx``) are kept.

    Returns:
        The restored state, or ``state`` unchanged when there is no checkpoint.
    """
    import orbax.checkpoint as ocp

    if step is None:
        step = manager.latest_step()
    if step is None:
        return state
    target = serialization.to_state_dict(state)
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return serialization.from_state_dict(state, restored)
