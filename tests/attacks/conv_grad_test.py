"""Canonical convolution input gradients (robustjax/_src/conv_grad.py) against JAX's autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from robustjax import attacks, models
from robustjax._src.conv_grad import canonical_conv_grads, lhs_transpose_padding
from robustjax.attacks import _base as B

CASES = [
    # (dimension numbers, x shape, kernel shape, strides, padding, kernel dilation)
    (("NHWC", "HWIO", "NHWC"), (3, 9, 11, 4), (3, 3, 4, 5), (1, 1), "SAME", (1, 1)),
    (("NHWC", "HWIO", "NHWC"), (3, 9, 11, 4), (3, 2, 4, 5), (2, 3), "VALID", (1, 1)),
    (("NCHW", "OIHW", "NCHW"), (3, 4, 10, 9), (5, 4, 3, 3), (2, 2), ((1, 2), (0, 1)), (2, 1)),
    (("NHWC", "HWIO", "NHWC"), (2, 12, 12, 3), (5, 5, 3, 2), (3, 2), ((2, 2), (2, 2)), (1, 2)),
    (("NWC", "WIO", "NWC"), (2, 17, 3), (4, 3, 6), (3,), ((0, 3),), (1,)),
]


def _conv_loss(dn, strides, pad, rd):
    def f(x, w):
        out = lax.conv_general_dilated(x, w, strides, pad, rhs_dilation=rd,
                                       dimension_numbers=dn)
        return jnp.sum(jnp.sin(out) * jnp.arange(out.size, dtype=out.dtype).reshape(out.shape)
                       / out.size)
    return f


@pytest.mark.parametrize("case", range(len(CASES)))
def test_gradients_match_autodiff(case):
    dn, xs, ws, strides, pad, rd = CASES[case]
    rng = np.random.default_rng(case)
    x = jnp.asarray(rng.normal(size=xs), jnp.float32)
    w = jnp.asarray(rng.normal(size=ws), jnp.float32)
    f = _conv_loss(dn, strides, pad, rd)
    g = canonical_conv_grads(f)
    # Forward: the same primitive, bit for bit.
    assert float(f(x, w)) == float(g(x, w))
    ref = jax.grad(f, (0, 1))(x, w)
    got = jax.grad(g, (0, 1))(x, w)
    for r, o in zip(ref, got):
        # Same products, summed in a possibly different order: float32 rounding of sums of
        # |terms| <= ~|x||w| over the kernel window.
        scale = float(jnp.max(jnp.abs(r))) + 1.0
        np.testing.assert_allclose(np.asarray(o), np.asarray(r), atol=1e-5 * scale * ws[0])
    # The rewrite is active: its input gradient transposes the kernel explicitly, where JAX's
    # own rule relabels the kernel's feature dimensions instead.
    assert "transpose[" in str(jax.make_jaxpr(jax.grad(g))(x, w))
    assert "transpose[" not in str(jax.make_jaxpr(jax.grad(f))(x, w))


def test_padding_rule_reproduces_input_length():
    # The transposed convolution returns exactly `in_size` entries for every combination.
    for n in range(5, 12):
        for k in (1, 2, 3, 5):
            for s in (1, 2, 3):
                for d in (1, 2):
                    for lo, hi in ((0, 0), (1, 2), (2, 1)):
                        kd = (k - 1) * d + 1
                        if n + lo + hi < kd:
                            continue
                        o = (n + lo + hi - kd) // s + 1
                        b, a = lhs_transpose_padding(n, o, k, s, d, (lo, hi))
                        assert (o - 1) * s + 1 + b + a - kd + 1 == n


def test_grouped_convolutions_are_left_alone_and_jit_vmap_compose():
    x = jnp.ones((2, 6, 6, 4))
    w = jnp.ones((3, 3, 2, 4)) * 0.1

    def grouped(v):
        return jnp.sum(lax.conv_general_dilated(v, w, (1, 1), "SAME", feature_group_count=2,
                                                dimension_numbers=("NHWC", "HWIO", "NHWC")) ** 2)

    g = canonical_conv_grads(grouped)
    assert "transpose[" not in str(jax.make_jaxpr(jax.grad(g))(x))
    np.testing.assert_allclose(jax.grad(g)(x), jax.grad(grouped)(x), rtol=1e-6)
    # A model with a nested jit, under jit and vmap.
    cnn = models.MnistCNN()
    params = cnn.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    fn = jax.jit(lambda v: cnn.apply(params, v))
    xb = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
    loss = lambda h: lambda v: jnp.sum(jax.nn.log_softmax(h(v))[:, 3])  # noqa: E731
    ref = jax.vmap(jax.grad(loss(fn)))(xb[:, None])
    got = jax.jit(jax.vmap(jax.grad(loss(canonical_conv_grads(fn)))))(xb[:, None])
    np.testing.assert_allclose(got, ref, atol=1e-5 * float(jnp.max(jnp.abs(ref))))


def test_attacks_use_the_canonical_gradient_on_cpu():
    cnn = models.MnistCNN()
    params = cnn.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    f = models.make_logits_fn(cnn, params)
    x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
    y = jnp.array([0, 1])
    jaxpr = str(jax.make_jaxpr(lambda v: attacks.pgd(f, jax.random.key(2), v, y, eps=0.1,
                                                       steps=2))(x))
    # The explicit HWIO -> HWOI kernel transpose of the canonical input gradient.
    assert ("transpose[permutation=(0, 1, 3, 2)]" in jaxpr) == (jax.default_backend() == "cpu")
    assert B.gradient_model(f) is not f or jax.default_backend() != "cpu"
