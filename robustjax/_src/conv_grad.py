"""Input gradients of convolutions that stay fast inside XLA:CPU loops.

An attack runs ``jax.grad`` of the model inside a ``lax.scan``/``while`` loop. JAX's transpose
rule for a convolution's input is a convolution of the cotangent with the *spatially reversed
kernel whose input/output feature dimensions are swapped in the dimension numbers*
(``rhs_spec`` ``01oi`` for a Flax ``HWIO`` kernel). Outside a loop XLA:CPU hoists that reversal
into one transposed copy of the kernel, and the convolution runs in its fast library kernel;
inside a loop body it keeps the non-canonical dimension numbers and the convolution falls back
to a generic implementation. Measured with jax 0.10.2 on a 2-core AMD EPYC (Zen 4): the input
gradient of a 5×5 32→64 convolution on a ``[256, 14, 14, 32]`` batch took 9.9 ms per loop
iteration against 3.5 ms with the kernel transposed explicitly, and a whole PGD step on the
Madry MNIST CNN at batch 256 took 0.37 s rolled against 0.17 s fully unrolled (see JAX issue
#12868, "Convolution is significantly slower inside a loop body (CPU)").

:func:`canonical_conv_grads` re-traces a model and gives each supported convolution a
``jax.custom_vjp`` whose input gradient is written out with a *physically* reversed and
transposed kernel and the forward pass's own dimension numbers, which XLA:CPU runs with its fast
kernel inside loops as well. The forward values are the same primitive, bit for bit; the
gradients agree with JAX's to float32 rounding (the same sums, in a possibly different order).
Supported: ``feature_group_count == batch_group_count == 1``, no input dilation, any strides,
padding and kernel dilation, any dimension numbers; other convolutions are left untouched.
Reverse mode only: ``jax.jvp`` of a wrapped model raises, so the attacks apply it only around
``jax.grad``/``jax.vjp``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jex

__all__ = ["canonical_conv_grads", "lhs_transpose_padding"]

_JIT_NAMES = ("pjit", "jit", "closed_call", "core_call")


def lhs_transpose_padding(in_size: int, out_size: int, kernel: int, stride: int,
                          dilation: int, pad: tuple[int, int]) -> tuple[int, int]:
    """Padding of the convolution that computes one spatial dimension's input gradient.

    The cotangent (length ``out_size``) is dilated by ``stride`` to ``(out_size − 1)·stride + 1``
    and convolved with the reversed kernel of dilated extent ``kd = (kernel − 1)·dilation + 1``;
    the result must have ``in_size`` entries aligned with the forward pass's padding ``pad``:
    ``before = kd − 1 − pad[0]`` and ``after = in_size + kd − 1 − (out_size − 1)·stride − 1 −
    before``.
    """
    kd = (kernel - 1) * dilation + 1
    before = kd - 1 - pad[0]
    after = in_size + kd - 1 - ((out_size - 1) * stride + 1) - before
    return before, after


def _supported(params: dict[str, Any]) -> bool:
    return (params["feature_group_count"] == 1 and params["batch_group_count"] == 1
            and all(d == 1 for d in params["lhs_dilation"]))


def _make_conv(params: dict[str, Any], lhs_aval, rhs_aval) -> Callable[[Any, Any], Any] | None:
    """A ``custom_vjp`` convolution with the canonical input gradient, or ``None``."""
    if not _supported(params):
        return None
    dn = params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    strides = params["window_strides"]
    rdil = params["rhs_dilation"]
    pads = params["padding"]
    in_sizes = [lhs_aval.shape[d] for d in lhs_spec[2:]]
    ksizes = [rhs_aval.shape[d] for d in rhs_spec[2:]]
    out_sizes = []
    for n, k, s, r, (lo, hi) in zip(in_sizes, ksizes, strides, rdil, pads):
        out_sizes.append((n + lo + hi - ((k - 1) * r + 1)) // s + 1)
    bpads = [lhs_transpose_padding(n, o, k, s, r, p) for n, o, k, s, r, p in
             zip(in_sizes, out_sizes, ksizes, strides, rdil, pads)]
    if any(b < 0 or a < 0 for b, a in bpads) or any(o < 1 for o in out_sizes):
        return None
    bwd_dn = lax.ConvDimensionNumbers(lhs_spec=out_spec, rhs_spec=rhs_spec, out_spec=lhs_spec)

    def prim(lhs, rhs):
        return lax.conv_general_dilated_p.bind(lhs, rhs, **params)

    @jax.custom_vjp
    def conv(lhs, rhs):
        return prim(lhs, rhs)

    def fwd(lhs, rhs):
        return prim(lhs, rhs), (lhs, rhs)

    def bwd(res, g):
        lhs, rhs = res
        w = lax.rev(rhs, tuple(rhs_spec[2:]))
        w = jnp.swapaxes(w, rhs_spec[0], rhs_spec[1])  # a real transpose, not relabelled dims
        d_lhs = lax.conv_general_dilated(
            g.astype(rhs.dtype), w, window_strides=(1,) * len(strides), padding=bpads,
            lhs_dilation=strides, rhs_dilation=rdil, dimension_numbers=bwd_dn,
            precision=params["precision"],
            preferred_element_type=params["preferred_element_type"]).astype(lhs.dtype)
        d_rhs = jax.vjp(lambda r: prim(lhs, r), rhs)[1](g)[0]
        return d_lhs, d_rhs

    conv.defvjp(fwd, bwd)
    return conv


def _eval(jaxpr, consts, args):
    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    def write(v, val):
        if not isinstance(v, jex.DropVar):
            env[v] = val

    for v, c in zip(jaxpr.constvars, consts):
        write(v, c)
    for v, a in zip(jaxpr.invars, args):
        write(v, a)
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        prim = eqn.primitive
        outvals = None
        if prim is lax.conv_general_dilated_p:
            conv = _make_conv(eqn.params, eqn.invars[0].aval, eqn.invars[1].aval)
            if conv is not None:
                outvals = [conv(*invals)]
        elif prim.name in _JIT_NAMES and isinstance(eqn.params.get("jaxpr"), jex.ClosedJaxpr):
            closed = eqn.params["jaxpr"]
            outvals = _eval(closed.jaxpr, closed.consts, invals)
        if outvals is None:
            bind_params = prim.get_bind_params(eqn.params)
            subfuns: list[Any] = []
            if isinstance(bind_params, tuple):  # jax < 0.7: (subfuns, params)
                subfuns, bind_params = bind_params
            ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
            if ctx is None:
                ans = prim.bind(*subfuns, *invals, **bind_params)
            else:
                with ctx:
                    ans = prim.bind(*subfuns, *invals, **bind_params)
            outvals = ans if prim.multiple_results else [ans]
        for v, o in zip(eqn.outvars, outvals):
            write(v, o)
    return [read(v) for v in jaxpr.outvars]


def canonical_conv_grads(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every supported convolution's input gradient in canonical form.

    Same values as ``fn`` (the forward pass binds the same primitives); for use under
    ``jax.grad``/``jax.vjp`` in loops on XLA:CPU (module docstring). Tracing costs one extra
    abstract trace of ``fn`` per call site; there is no runtime cost outside the gradient.
    """

    @functools.wraps(fn)
    def wrapped(*args):
        flat, tree = jax.tree_util.tree_flatten(args)
        closed, out_shape = jax.make_jaxpr(lambda *a: fn(*jax.tree_util.tree_unflatten(tree, a)),
                                           return_shape=True)(*flat)
        out = _eval(closed.jaxpr, closed.consts, flat)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), out)

    return wrapped
