"""Accuracy–distortion curves: robust accuracy against ε, and against a minimum-norm budget.

Chen, Xie & Zhu (ICML 2020) report accuracy–distortion curves for DefenseGAN, ABS and adversarial
training; :func:`accuracy_vs_eps` runs a bounded attack at every ε, :func:`accuracy_vs_distortion`
turns one run of a minimum-norm attack (Carlini–Wagner ℓ2) into the whole curve.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax._src import validation as V
from robustjax._src.types import ArrayLike, BoundAttack, LogitsFn, PRNGKey
from robustjax.evaluation import _parallel
from robustjax.evaluation._report import _check_dataset
from robustjax.evaluation._report import _evaluate
from robustjax.evaluation._report import attack_key
from robustjax.evaluation._report import _pad
from robustjax.evaluation._report import distortion as _distortion
from robustjax.evaluation._report import iterate_batches

__all__ = ["Curve", "accuracy_vs_eps", "accuracy_vs_distortion", "accuracy_at_distortion"]


class Curve(NamedTuple):
    """An accuracy curve: ``x [M]`` (ε values or distortion thresholds) and ``accuracy [M]``."""

    x: np.ndarray
    accuracy: np.ndarray


def accuracy_vs_eps(
    logits_fn: LogitsFn,
    x: ArrayLike,
    y: ArrayLike,
    attack_factory: Callable[[float], BoundAttack],
    eps_values: Sequence[float],
    *,
    key: PRNGKey,
    batch_size: int = 256,
    progress: bool = False,
    jit: bool = True,
    devices: Sequence[Any] | None = None,
) -> Curve:
    """Robust accuracy of ``logits_fn`` under ``attack_factory(eps)`` for every ``eps``.

    One pass over the data: each batch is evaluated clean once and then attacked at every ε,
    each ε with the same key (common random numbers), so random starts are shared across ε.
    ``eps = 0`` with a projected attack gives the clean accuracy.

    Args:
      logits_fn: model ``[B, H, W, C] -> [B, K]``.
      x: ``float32 [N, H, W, C]``; y: ``int32 [N]``.
      attack_factory: ``eps -> bound_attack(key, x, y) -> x_adv``.
      eps_values: ``[M]`` budgets (each ≥ 0).
      key: PRNG key.
      batch_size, progress, jit: as in :func:`robustness_report`.
      devices: devices to shard each batch over (data parallel, needs ``jit=True``), as in
        :func:`robustness_report`; default ``jax.local_devices()``. Same per-example result as
        one device with the same key.

    Returns:
      :class:`Curve` ``(eps [M], accuracy [M])``; accuracy counts examples correct clean and
      after the attack.

    Cost: ``N`` clean forward passes plus ``M`` attack runs per example. **One compilation for
    all ε** when ``attack_factory`` accepts a traced ε (every robustjax ℓp attack does: ε is then
    an argument of one compiled attack); otherwise one compilation per ε.
    """
    x, y = _check_dataset(x, y, logits_fn)
    V.check_positive_int(batch_size, "batch_size")
    V.check_key(key, "key")
    eps_values = list(eps_values)
    if not eps_values:
        raise ValueError("`eps_values` must not be empty.")
    for e in eps_values:
        V.check_nonnegative(e, "eps_values")
    names = [f"eps={i}" for i in range(len(eps_values))]
    mesh = _parallel.resolve_mesh(devices) if jit else None
    shared = _traced_eps_attack(attack_factory, x, y, batch_size, mesh) if jit else None
    pad_multiple = 1
    if shared is not None:  # one compiled attack, eps an argument
        attacks = {n: functools.partial(shared, jnp.float32(e)) for n, e in zip(names, eps_values)}
        jit = False  # the attack is compiled already; only the forward pass runs eagerly
        pad_multiple = 1 if mesh is None else mesh.devices.size
        mesh = None
    else:
        attacks = {n: attack_factory(e) for n, e in zip(names, eps_values)}
    # one pass over the data, one clean evaluation; every eps gets the same keys
    rep = _evaluate(logits_fn, x, y, attacks,
                    key_fn=lambda name, b: attack_key(key, "accuracy_vs_eps", b),
                    batch_size=batch_size, progress=progress, jit=jit, desc="accuracy_vs_eps",
                    mesh=mesh, pad_multiple=pad_multiple)
    acc = rep.robust_accuracy
    return Curve(np.asarray(eps_values, np.float64),
                 np.asarray([acc[n] for n in names], np.float64))


def _traced_eps_attack(attack_factory, images, labels, batch_size, mesh=None):
    """``jit((eps, key, x, y) -> attack_factory(eps)(key, x, y))`` if the factory traces with an
    abstract ε (checked with ``jax.eval_shape``), else ``None``. With a ``mesh`` the batch
    arguments ``x, y`` are sharded over its devices (the caller pads to a multiple of them)."""
    b = min(batch_size, images.shape[0])

    def run(eps, key, x, y):
        return attack_factory(eps)(key, x, y)

    try:
        jax.eval_shape(run, jax.ShapeDtypeStruct((), jnp.float32), jax.random.key(0),
                       jax.ShapeDtypeStruct((b,) + images.shape[1:], jnp.float32),
                       jax.ShapeDtypeStruct((b,), jnp.int32))
    except Exception:  # noqa: BLE001 - a factory that needs a static eps
        return None
    return _parallel.sharded_jit(run, mesh, (2, 3), 4)


def accuracy_at_distortion(
    clean_correct: ArrayLike,
    adv_correct: ArrayLike,
    distortion: ArrayLike,
    *,
    thresholds: Sequence[float] | ArrayLike | None = None,
) -> Curve:
    r"""Accuracy at distortion budget ``t`` from per-example results of a minimum-norm attack.

    .. math:: \mathrm{acc}(t) = \frac1N \sum_n [c_n] \wedge \big([a_n] \vee [d_n > t]\big)

    with :math:`c_n` clean correctness, :math:`a_n` correctness on the adversarial example (the
    attack failed) and :math:`d_n` its distortion: an adversarial example that needs more than
    ``t`` is not allowed at budget ``t``. A larger budget allows more of them, so the curve is
    **non-increasing** in ``t``: it equals the clean accuracy for ``t`` below every successful
    distortion (``t = 0`` when they are all positive) and the robust accuracy
    :math:`\frac1N\sum_n c_n \wedge a_n` of the unbounded attack at ``t = ∞``.

    Args:
      clean_correct: ``bool [N]``.
      adv_correct: ``bool [N]``.
      distortion: ``float [N]`` (≥ 0).
      thresholds: ``[M]`` budgets; default ``0``, every distinct distortion of a successful
        attack on a clean-correct example (sorted), and ``inf``.

    Returns:
      :class:`Curve` ``(thresholds [M], accuracy [M])``. Cost: ``O(N log N + M log N)``.
    """
    c = np.asarray(clean_correct, bool)
    a = np.asarray(adv_correct, bool)
    d = np.asarray(distortion, np.float64)
    for arr, name in ((c, "clean_correct"), (a, "adv_correct"), (d, "distortion")):
        if arr.ndim != 1:
            raise ValueError(f"`{name}` must have rank 1, got shape {arr.shape}.")
    if not (c.shape == a.shape == d.shape):
        raise ValueError(
            "`clean_correct`, `adv_correct` and `distortion` must have the same shape, got "
            f"{c.shape}, {a.shape}, {d.shape}.")
    n = c.shape[0]
    if n == 0:
        raise ValueError("`clean_correct` must hold at least one example.")
    broken = c & ~a  # clean-correct examples the attack fooled, at distortion d
    if thresholds is None:
        t = np.concatenate([[0.0], np.unique(d[broken]), [np.inf]])
    else:
        t = np.asarray(thresholds, np.float64).reshape(-1)
        if np.any(np.isnan(t)):
            raise ValueError("`thresholds` must not contain NaN.")
    # acc(t) = (#clean-correct − #{broken with d ≤ t}) / N
    db = np.sort(d[broken])
    fooled = np.searchsorted(db, t, side="right")
    acc = (np.count_nonzero(c) - fooled) / n
    return Curve(t, acc.astype(np.float64))


def accuracy_vs_distortion(
    logits_fn: LogitsFn,
    x: ArrayLike,
    y: ArrayLike,
    x_adv: ArrayLike,
    *,
    norm: str = "l2",
    thresholds: Sequence[float] | ArrayLike | None = None,
    batch_size: int = 256,
    devices: Sequence[Any] | None = None,
) -> Curve:
    """Accuracy–distortion curve of a minimum-norm attack's outputs ``x_adv`` (e.g. CW ℓ2).

    Evaluates ``logits_fn`` on ``x`` and ``x_adv`` (in jitted batches of ``batch_size``,
    the last one padded) and applies :func:`accuracy_at_distortion` with the per-example
    ``norm`` distortion ``‖x_adv − x‖``.

    Args:
      logits_fn: model ``[B, H, W, C] -> [B, K]``.
      x: clean ``float32 [N, H, W, C]``; y: ``int32 [N]``.
      x_adv: ``[N, H, W, C]`` adversarial x (one per example).
      norm: ``"l2"`` or ``"linf"``.
      thresholds: ``[M]`` budgets; default as in :func:`accuracy_at_distortion`.
      batch_size: evaluation batch size.
      devices: devices to shard each batch over; default ``jax.local_devices()``.

    Returns:
      :class:`Curve` ``(thresholds [M], accuracy [M])``. Cost: ``2N`` forward passes.
    """
    V.check_choice(norm, "norm", ("linf", "l2"))
    V.check_positive_int(batch_size, "batch_size")
    x, y = _check_dataset(x, y, logits_fn)
    V.check_images(x_adv, "x_adv", box=None)
    x_adv = np.asarray(x_adv, np.float32)
    if x_adv.shape != x.shape:
        raise ValueError(
            f"`x_adv` must have the shape of `x`, got {x_adv.shape} and {x.shape}.")
    n = x.shape[0]
    bs = min(batch_size, n)
    mesh = _parallel.resolve_mesh(devices)
    padded = bs if mesh is None else _parallel.round_up(bs, mesh.devices.size)

    def evaluate_fn(x, xa, y):
        c = jnp.argmax(logits_fn(x), -1) == y
        a = jnp.argmax(logits_fn(xa), -1) == y
        return c, a, _distortion(x, xa, norm=norm)

    evaluate = _parallel.sharded_jit(evaluate_fn, mesh, (0, 1, 2), 3)

    c = np.zeros((n,), bool)
    a = np.zeros((n,), bool)
    d = np.zeros((n,), np.float32)
    for _, start, stop in iterate_batches(n, bs):
        m = stop - start
        cb, ab, db = evaluate(_pad(x[start:stop], padded), _pad(x_adv[start:stop], padded),
                              _pad(y[start:stop], padded))
        c[start:stop], a[start:stop], d[start:stop] = (np.asarray(v)[:m] for v in (cb, ab, db))
    return accuracy_at_distortion(c, a, d, thresholds=thresholds)
