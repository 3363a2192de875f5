"""``fit``: the data-parallel training loop with evaluation, metrics log, checkpoints, resume."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax._src import validation
from robustjax._src.types import PRNGKey
from robustjax.training._checkpoint import make_checkpoint_manager
from robustjax.training._checkpoint import restore_checkpoint
from robustjax.training._checkpoint import save_checkpoint
from robustjax.training._objectives import Objective
from robustjax.training._optimizers import make_optimizer
from robustjax.training._parallel import make_runner
from robustjax.training._train_state import TrainState
from robustjax.training._train_state import create_train_state

_PARALLEL = ("auto", "jit", "pmap", "none")


def as_arrays(ds: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images float32 [N,H,W,C], labels int32 [N])`` from a ``Dataset``, tuple or dict."""
    if isinstance(ds, dict):
        images, labels = ds.get("image"), ds.get("label")
    elif hasattr(ds, "images") and hasattr(ds, "labels"):
        images, labels = ds.images, ds.labels
    elif isinstance(ds, (tuple, list)) and len(ds) == 2:
        images, labels = ds
    else:
        raise ValueError(
            f"`{name}` must be a Dataset(images, labels), an (images, labels) tuple or a dict "
            f'with "image" and "label"; got {type(ds).__name__}.'
        )
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 4 and images.shape[-1] > min(images.shape[1:3]):
        raise ValueError(
            f"`{name}.images` must be NHWC [N, H, W, C] (channels last); got shape "
            f"{images.shape}, whose channel count {images.shape[-1]} exceeds height/width — "
            "an NCHW array? Transpose with x.transpose(0, 2, 3, 1).")
    if images.ndim >= 1 and images.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (0 examples).")
    if np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"`{name}.images` must be floats in [0, 1], got dtype {images.dtype} "
                         "(divide by 255).")
    validation.check_images(images, f"{name}.images", box=(0.0, 1.0))
    validation.check_labels(labels, f"{name}.labels", batch_size=images.shape[0])
    return images.astype(np.float32, copy=False), labels.astype(np.int32, copy=False)


class NonFiniteLossError(ValueError, FloatingPointError):
    """Training produced a non-finite loss; raised by :func:`fit` before the state is saved."""


def _check_label_range(state, images, labels, name):
    """Labels in ``[0, K)`` with ``K`` the model's class count (from ``jax.eval_shape``)."""
    try:
        variables = {"params": state.params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        out = jax.eval_shape(lambda v, x: state.apply_fn(v, x, train=False), variables,
                             jax.ShapeDtypeStruct((1,) + images.shape[1:], jnp.float32))
    except Exception:  # noqa: BLE001 - a model that is not a classifier: nothing to check
        return
    if len(getattr(out, "shape", ())) == 2:
        validation.check_labels(labels, f"{name}.labels", num_classes=int(out.shape[-1]))


def epoch_permutation(key: PRNGKey, epoch: int, num_examples: int) -> np.ndarray:
    """The example order of ``epoch``: a deterministic function of ``(key, epoch)``."""
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), num_examples))


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _to_float(metrics: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def fit(
    model_or_state: Any,
    objective: Objective,
    train_ds: Any,
    *,
    key: PRNGKey,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 128,
    tx: optax.GradientTransformation | None = None,
    optimizer: str = "sgd",
    learning_rate: float | Callable = 0.1,
    schedule: str | Callable = "constant",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    eval_ds: Any = None,
    eval_every: int | None = None,
    eval_batch_size: int | None = None,
    eval_loss: str | Callable = "ce",
    log_every: int = 50,
    workdir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    max_checkpoints: int = 3,
    parallel: str = "auto",
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
) -> tuple[TrainState, dict[str, Any]]:
    """Train ``objective`` data-parallel, with evaluation, a JSON-lines log and checkpoints.

    **Data order.** Epoch ``e`` visits the training set in the order
    ``permutation(fold_in(data_key, e))`` in batches of ``batch_size`` (the remainder is
    dropped); step ``s`` uses ``train_step(state, batch, step_key)``, which folds ``s`` into the
    key. Hence the run is a deterministic function of ``key`` and the arguments, independent of
    the number of devices and processes, and a resumed run reproduces an uninterrupted one.

    **Resume.** With ``workdir``, a checkpoint is saved every ``checkpoint_every`` steps and at
    the end under ``workdir/checkpoints`` (orbax); rerunning the same call restores the latest
    one and continues from its step (records after it are dropped from ``metrics.jsonl``).

    **Parallelism.** ``"jit"``: sharded ``jax.jit`` over all devices (batch sharded on
    ``"data"``, state replicated); ``"pmap"``: ``jax.pmap`` over the local devices (per-device
    batch norm, statistics averaged); ``"none"``: one device; ``"auto"``: ``"jit"`` when there
    is more than one device. With several processes (see ``initialize_distributed``), each
    process passes the full dataset and feeds its own consecutive share of each global batch.

    Args:
        model_or_state: a Flax classifier — a Linen module (initialised here with the input
            shape of ``train_ds``; a ``train`` argument is optional) or an NNX module (its
            current parameters and batch statistics are the starting point; see
            :func:`robustjax.models.as_model`) — or a :class:`TrainState` (then ``tx`` and the
            optimizer arguments are ignored). Anything else raises ``ValueError``. To
            evaluate or attack the result, ``robustjax.models.make_logits_fn(model,
            {"params": state.params, "batch_stats": state.batch_stats})`` (eval mode).
        objective: ``objective(params, state, batch, key) -> (loss, (batch_stats, metrics))``.
        train_ds: ``Dataset(images [N,H,W,C], labels [N])``, a tuple, or a dict.
        key: PRNG key for initialisation, data order and the steps' randomness.
        epochs: number of epochs (exactly one of ``epochs`` / ``steps``).
        steps: number of steps.
        batch_size: global batch size, divisible by the number of devices.
        tx: optax optimizer; default :func:`make_optimizer` from the next five arguments.
        optimizer, learning_rate, schedule, weight_decay, momentum: see :func:`make_optimizer`
            (``total_steps`` is the run's number of steps).
        eval_ds: optional evaluation set (same formats), evaluated in eval mode.
        eval_every: evaluate every this many steps (and at the end); default: every epoch.
        eval_batch_size: evaluation batch size; default ``batch_size``.
        eval_loss: loss reported on ``eval_ds``.
        log_every: log mean training metrics every this many steps (and at the end).
        workdir: directory for ``metrics.jsonl`` and ``checkpoints/`` (written by process 0).
        checkpoint_every: checkpoint period in steps; default: every epoch.
        max_checkpoints: number of checkpoints kept.
        parallel: ``"auto"``, ``"jit"``, ``"pmap"`` or ``"none"``.
        progress: show a tqdm progress bar (process 0).
        callback: called as ``callback(step, metrics)`` after each step (host floats).

    Returns:
        ``(state, history)``: the final :class:`TrainState` (one local replica) and
        ``{"train": [...], "eval": [...], "resumed_from": step or None}`` — the records also
        written to ``metrics.jsonl``, each ``{"step", "split", "epoch", <metrics>}``.

    Cost: ``steps`` objective evaluations with gradients, plus evaluation passes.
    """
    validation.check_key(key)
    validation.check_choice(parallel, "parallel", _PARALLEL)
    validation.check_positive_int(batch_size, "batch_size")
    validation.check_positive_int(log_every, "log_every")
    if (epochs is None) == (steps is None):
        raise ValueError("Give exactly one of `epochs` and `steps`.")
    images, labels = as_arrays(train_ds, "train_ds")
    n = images.shape[0]
    if batch_size > n:
        raise ValueError(f"`batch_size` ({batch_size}) exceeds the {n} training examples.")
    steps_per_epoch = n // batch_size
    if steps is None:
        validation.check_positive_int(epochs, "epochs")
        total_steps = epochs * steps_per_epoch
    else:
        validation.check_positive_int(steps, "steps")
        total_steps = int(steps)
    eval_every = steps_per_epoch if eval_every is None else eval_every
    checkpoint_every = steps_per_epoch if checkpoint_every is None else checkpoint_every
    validation.check_positive_int(eval_every, "eval_every")
    validation.check_positive_int(checkpoint_every, "checkpoint_every")
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    validation.check_positive_int(eval_batch_size, "eval_batch_size")
    if eval_ds is not None:
        eval_images, eval_labels = as_arrays(eval_ds, "eval_ds")

    runner = make_runner(objective, parallel, loss=eval_loss)
    shards = runner.num_shards
    for value, arg in ((batch_size, "batch_size"), (eval_batch_size, "eval_batch_size")):
        if value % shards or value % jax.process_count():
            raise ValueError(
                f"`{arg}` ({value}) must be divisible by the number of devices ({shards})."
            )

    init_key, data_key, step_key = jax.random.split(key, 3)
    if isinstance(model_or_state, TrainState):
        state = model_or_state
    else:
        if tx is None:
            tx = make_optimizer(
                optimizer, learning_rate=learning_rate, schedule=schedule,
                total_steps=total_steps, weight_decay=weight_decay, momentum=momentum,
            )
        state = create_train_state(model_or_state, init_key, (1,) + images.shape[1:], tx)
    _check_label_range(state, images, labels, "train_ds")
    if eval_ds is not None:
        _check_label_range(state, eval_images, eval_labels, "eval_ds")

    is_chief = jax.process_index() == 0
    manager, log_path, history = None, None, {"train": [], "eval": [], "resumed_from": None}
    if workdir is not None:
        workdir = os.fspath(workdir)
        if is_chief:
            os.makedirs(workdir, exist_ok=True)
        manager = make_checkpoint_manager(
            os.path.join(workdir, "checkpoints"), max_to_keep=max_checkpoints
        )
        if manager.latest_step() is not None:
            state = restore_checkpoint(manager, state)
            history["resumed_from"] = int(jax.device_get(state.step))
        log_path = os.path.join(workdir, "metrics.jsonl")
        restored_step = int(jax.device_get(state.step))
        old = [r for r in _read_jsonl(log_path) if r["step"] <= restored_step]
        for record in old:
            history[record["split"]].append(record)
        if is_chief:
            with open(log_path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in old)

    def log(record):
        history[record["split"]].append(record)
        if log_path is not None and is_chief:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def evaluate(placed_state):
        sums, count = {}, 0.0
        for lo in range(0, eval_images.shape[0], eval_batch_size):
            x = eval_images[lo:lo + eval_batch_size]
            y = eval_labels[lo:lo + eval_batch_size]
            real = x.shape[0]
            pad = eval_batch_size - real
            batch = {
                "image": np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]),
                "label": np.concatenate([y, np.zeros((pad,), y.dtype)]),
                "mask": np.concatenate([np.ones(real, np.float32), np.zeros(pad, np.float32)]),
            }
            m = _to_float(runner.evaluate(placed_state, batch))
            for k in ("loss", "accuracy"):
                sums[k] = sums.get(k, 0.0) + m[k] * m["count"]
            count += m["count"]
        return {k: v / max(count, 1.0) for k, v in sums.items()}

    start = int(jax.device_get(state.step))
    placed = runner.place_state(state)
    bar = None
    if progress and is_chief and start < total_steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start, desc="train", dynamic_ncols=True)
    perm, perm_epoch, pending = None, None, []
    try:
        for step in range(start, total_steps):
            epoch, i = divmod(step, steps_per_epoch)
            if perm_epoch != epoch:
                perm, perm_epoch = epoch_permutation(data_key, epoch, n), epoch
            idx = perm[i * batch_size:(i + 1) * batch_size]
            batch = {"image": images[idx], "label": labels[idx]}
            placed, metrics = runner.train(placed, batch, step_key)
            # Blocking on every step keeps multi-device collectives from piling up (and
            # deadlocking on fake CPU devices); it also gives exact per-step metrics.
            metrics = _to_float(jax.block_until_ready(metrics))
            finite = metrics.pop("_finite", 1.0) == 1.0
            done = step + 1
            if not (finite and np.isfinite(metrics.get("loss", 0.0))):
                raise NonFiniteLossError(
                    f"fit: the training loss or its gradient became non-finite (loss "
                    f"{metrics.get('loss')}) at step {done} (epoch "
                    f"{done / steps_per_epoch:.2f}); stopped without saving this state"
                    + (f" — the last checkpoint under {workdir} is the last good one"
                       if manager is not None else "")
                    + ". Lower the learning rate or check the data and the objective.")
            pending.append(metrics)
            if bar is not None:
                bar.update(1)
            if done % log_every == 0 or done == total_steps:
                mean = {k: float(np.mean([m[k] for m in pending])) for k in pending[0]}
                log({"step": done, "split": "train", "epoch": done / steps_per_epoch, **mean})
                pending = []
                if bar is not None:
                    bar.set_postfix({k: f"{mean[k]:.4g}" for k in ("loss", "accuracy")
                                     if k in mean})
            if eval_ds is not None and (done % eval_every == 0 or done == total_steps):
                log({"step": done, "split": "eval", "epoch": done / steps_per_epoch,
                     **evaluate(placed)})
            if manager is not None and (done % checkpoint_every == 0 or done == total_steps):
                save_checkpoint(manager, runner.checkpoint_state(placed), step=done)
            if callback is not None:
                callback(done, metrics)
    finally:
        if bar is not None:
            bar.close()
        if manager is not None:
            manager.close()
    return runner.local_state(placed), history
