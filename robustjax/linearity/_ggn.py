r"""Generalized Gauss-Newton quantities of appendix C (Props. C.1 and C.2).

The loss is :math:`\ell(x) = \nu(y, f(x))` with network outputs :math:`z = f(x)`. Its local
quadratic model (Eqn C1) is

.. math:: \ell(x + \delta) = \ell(x) + \delta^\top \nabla_x \ell(x)
          + \tfrac12 \delta^\top G(x) \delta + \varepsilon(\delta),\qquad G = J^\top H_\nu J,

with :math:`J = \partial f / \partial x` and :math:`H_\nu` the Hessian of :math:`\nu` in ``z``.
:math:`\delta^\top G \delta = (J\delta)^\top H_\nu (J\delta)` needs one JVP of ``f`` per example
batch (examples must not interact; see :mod:`robustjax.linearity._measures`).

Each proposition is a function returning *both sides* of its inequality, so that it can be
checked on a network (the inequality always holds up to round-off: it follows from the
definition of :math:`\varepsilon(\delta)` and Cauchy-Schwarz).

References:
  Qin et al., *Adversarial Robustness through Local Linearization*, NeurIPS 2019, appendix C
  (Eqns C1, C2, Props. C.1, C.2) and appendix D (proofs).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike

__all__ = [
    "GGN_LOSSES",
    "GGNBound",
    "ggn_quadratic_form",
    "quadratic_model_error",
    "squared_error_ggn_bound",
    "cross_entropy_ggn_bound",
]

#: Losses :math:`\nu(y, z)` supported: softmax cross-entropy (``y`` int labels ``[N]``) and
#: squared error :math:`\frac12\|y - z\|^2` (``y`` real targets ``[N, K]``).
GGN_LOSSES = ("cross_entropy", "squared_error")

OutputsFn = Callable[[Array], Array]


class GGNBound(NamedTuple):
    r"""Both sides of a proposition's inequality ``lhs <= rhs``, per example.

    Attributes:
      lhs: ``[N]``, :math:`|\delta^\top \nabla_x \ell(x)|`.
      rhs: ``[N]``, the proposition's bound.
    """

    lhs: Array
    rhs: Array


def _nu(loss: str, z: Array, y: Array) -> Array:
    if loss == "cross_entropy":
        logz = jax.nn.logsumexp(z, axis=-1)
        return logz - jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
    return 0.5 * jnp.sum((jnp.asarray(y, z.dtype) - z) ** 2, axis=-1)


def _check_targets(loss: str, z: Array, y: Array) -> None:
    if loss == "cross_entropy":
        V.check_labels(y, "y", batch_size=z.shape[0], num_classes=z.shape[-1])
    elif jnp.shape(y) != z.shape:
        raise ValueError(
            f"`y` (squared-error targets) must have the output shape {tuple(z.shape)}, "
            f"got {tuple(jnp.shape(y))}."
        )


def _curvature(loss: str, z: Array, dz: Array) -> Array:
    r""":math:`\Delta z^\top H_\nu(z) \Delta z` per example."""
    if loss == "cross_entropy":
        # Δzᵀ(diag p − ppᵀ)Δz = Var_p(Δz), computed in the cancellation-free centred form.
        p = jax.nn.softmax(z, axis=-1)
        centred = dz - jnp.sum(p * dz, axis=-1, keepdims=True)
        return jnp.sum(p * centred * centred, axis=-1)
    return jnp.sum(dz * dz, axis=-1)


def _check_common(outputs_fn, x, delta, loss, box):
    V.check_choice(loss, "loss", GGN_LOSSES)
    if not callable(outputs_fn):
        raise ValueError(f"`outputs_fn` must be callable, got {type(outputs_fn).__name__}.")
    V.check_images(x, "x", rank=(2, 3, 4), box=box)
    x = jnp.asarray(x)
    delta = jnp.asarray(delta, x.dtype)
    if delta.shape != x.shape:
        raise ValueError(
            f"`delta` must have the shape of `x` {tuple(x.shape)}, got {tuple(delta.shape)}."
        )
    V.check_finite(delta, "delta")
    z, dz = jax.jvp(outputs_fn, (x,), (delta,))
    V.check_rank(z, "outputs_fn(x)", 2)
    if z.shape[0] != x.shape[0]:
        raise ValueError(
            f"`outputs_fn` must return [N, K] with N = {x.shape[0]}, got {tuple(z.shape)}."
        )
    return x, delta, z, dz


def ggn_quadratic_form(
    outputs_fn: OutputsFn,
    x: ArrayLike,
    delta: ArrayLike,
    *,
    loss: str = "cross_entropy",
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Array:
    r"""GGN quadratic form :math:`\delta^\top G(x)\delta` per example.

    .. math:: \delta^\top G \delta = (J\delta)^\top H_\nu (J\delta),\quad
              H_\nu^{CE} = \mathrm{diag}(p) - pp^\top,\quad H_\nu^{SE} = I

    Args:
      outputs_fn: ``x [N, ...] -> z [N, K]`` (logits for cross-entropy).
      x: ``[N, ...]`` inside ``box``. delta: ``[N, ...]``.
      loss: one of :data:`GGN_LOSSES`.
      box: the domain of ``x`` (checked); ``None`` means unbounded.

    Returns:
      ``[N]``, non-negative (up to round-off). Cost: one JVP of ``outputs_fn``.
    """
    _, _, z, dz = _check_common(outputs_fn, x, delta, loss, box)
    return _curvature(loss, z, dz)


def _pieces(outputs_fn, x, y, delta, loss, box):
    x, delta, z, dz = _check_common(outputs_fn, x, delta, loss, box)
    y = jnp.asarray(y)
    if loss == "squared_error":
        V.check_finite(y, "y")
    _check_targets(loss, z, y)

    def loss_fn(xx):
        return _nu(loss, outputs_fn(xx), y)

    loss_x, directional = jax.jvp(loss_fn, (x,), (delta,))
    loss_xd = loss_fn(x + delta)
    curv = _curvature(loss, z, dz)
    gap = jnp.abs(loss_xd - loss_x - directional)
    err = loss_xd - loss_x - directional - 0.5 * curv
    return z, loss_x, directional, gap, err


def quadratic_model_error(
    outputs_fn: OutputsFn,
    x: ArrayLike,
    y: ArrayLike,
    delta: ArrayLike,
    *,
    loss: str = "cross_entropy",
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Array:
    r"""Error of the GGN quadratic model, :math:`\varepsilon(\delta)` of Eqn (C1), per example.

    .. math:: \varepsilon(\delta) = \ell(x+\delta) - \ell(x) - \delta^\top\nabla_x\ell(x)
              - \tfrac12 \delta^\top G(x)\delta

    Args:
      outputs_fn: ``x -> z [N, K]``.
      x: ``[N, ...]``. delta: ``[N, ...]``.
      y: int labels ``[N]`` (cross-entropy) or real targets ``[N, K]`` (squared error).
      loss: one of :data:`GGN_LOSSES`.
      box: the domain of ``x`` (checked); ``None`` means unbounded.

    Returns:
      ``[N]`` (signed). Cost: two JVPs and one forward pass.
    """
    return _pieces(outputs_fn, x, y, delta, loss, box)[4]


def _gamma_or_gap(gamma, gap):
    if gamma is None:
        return gap
    if isinstance(gamma, (list, tuple)):
        gamma = jnp.asarray(gamma)
    V.check_nonnegative_value(gamma, "gamma", scalar=False)
    return jnp.broadcast_to(jnp.asarray(gamma, gap.dtype), gap.shape)


def squared_error_ggn_bound(
    outputs_fn: OutputsFn,
    x: ArrayLike,
    y: ArrayLike,
    delta: ArrayLike,
    *,
    gamma: ArrayLike | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> GGNBound:
    r"""Both sides of Prop. C.1 (squared error :math:`\nu = \frac12\|y - z\|^2`).

    .. math:: |\delta^\top \nabla_x \ell(x)| \le
              2\sqrt{2\,\ell(x)\,(\gamma(\epsilon; x) + |\varepsilon(\delta)|)}

    Args:
      outputs_fn: ``x -> z [N, K]``.
      x: ``[N, ...]`` inside ``box``. y: ``[N, K]`` real regression targets. delta:
        ``[N, ...]`` in the ball.
      gamma: :math:`\gamma(\epsilon; x)`, scalar or ``[N]``. The proposition needs
        :math:`\gamma \ge g(\delta; x)`; ``None`` uses :math:`g(\delta; x)` itself (the
        tightest value for which the bound holds).
      box: the domain of ``x`` (checked); ``None`` means unbounded.

    Returns:
      :class:`GGNBound` ``(lhs [N], rhs [N])``. Cost: two JVPs and one forward pass.

    References:
      Qin et al. 2019, Prop. C.1 and its proof (appendix D.1).
    """
    _, loss_x, directional, gap, err = _pieces(outputs_fn, x, y, delta, "squared_error", box)
    g = _gamma_or_gap(gamma, gap)
    lhs = jnp.abs(directional)
    rhs = 2.0 * jnp.sqrt(jnp.maximum(2.0 * loss_x * (g + jnp.abs(err)), 0.0))
    return GGNBound(lhs, rhs)


def cross_entropy_ggn_bound(
    logits_fn: OutputsFn,
    x: ArrayLike,
    y: ArrayLike,
    delta: ArrayLike,
    *,
    gamma: ArrayLike | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> GGNBound:
    r"""Both sides of Prop. C.2 (softmax cross-entropy).

    .. math:: |\delta^\top \nabla_x \ell(x)| \le
              \sqrt{\frac{2\,(\gamma(\epsilon; x) + |\varepsilon(\delta)|)}{p^\top y}}

    Choice: the proposition as typeset puts :math:`(\gamma + |\varepsilon|)` outside the square
    root; its proof (appendix D.2) ends with
    :math:`|\delta^\top\nabla\ell|^2 \le \frac{2}{p^\top y}(\gamma + |\varepsilon|)`, i.e. the
    square root over the product, which is what is returned here (the typeset form is not
    implied by the proof when :math:`\gamma + |\varepsilon| < 1`).

    Args:
      logits_fn: ``x -> logits [N, K]``.
      x: ``[N, ...]`` inside ``box``. y: ``int32 [N]`` labels in ``[0, K)``. delta: ``[N, ...]``
        in the ball.
      gamma: scalar or ``[N]``, needs :math:`\gamma \ge g(\delta; x)`; ``None`` uses
        :math:`g(\delta; x)`.
      box: the domain of ``x`` (checked); ``None`` means unbounded.

    Returns:
      :class:`GGNBound` ``(lhs [N], rhs [N])``. Cost: two JVPs and one forward pass.

    References:
      Qin et al. 2019, Prop. C.2 and its proof (appendix D.2).
    """
    z, _, directional, gap, err = _pieces(logits_fn, x, y, delta, "cross_entropy", box)
    g = _gamma_or_gap(gamma, gap)
    p_y = jnp.take_along_axis(jax.nn.softmax(z, axis=-1), jnp.asarray(y)[:, None], -1)[:, 0]
    lhs = jnp.abs(directional)
    rhs = jnp.sqrt(jnp.maximum(2.0 * (g + jnp.abs(err)) / p_y, 0.0))
    return GGNBound(lhs, rhs)
