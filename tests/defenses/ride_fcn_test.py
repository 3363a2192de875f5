"""Tests for RIDE's reconstruction FCNs (seed 002, supplementary Table 3)."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from robustjax.models._ride import RIDE_FCN_SPECS
from robustjax.models._ride import make_reconstruction_net
from robustjax.models._ride import ride_fcn


@pytest.mark.parametrize(
    "dataset,shape,names,width",
    [
        ("mnist", (28, 28, 1), ["conv1", "conv2", "conv3", "convn"], 16),
        ("cifar10", (32, 32, 3), ["conv1", "conv2", "conv3", "conv4", "convn"], 32),
        ("imagenet", (16, 16, 3), [f"conv{i}" for i in range(1, 8)] + ["convn"], 32),
    ],
)
def test_table3_architectures(dataset, shape, names, width):
    net = make_reconstruction_net(ride_fcn(dataset))
    params = net.init(jax.random.key(0), jnp.zeros(shape))
    assert sorted(params) == sorted(names)
    c = shape[-1]
    for name in names:
        k = params[name]["kernel"]
        c_in = k.shape[2]
        assert k.shape[:2] == (3, 3)
        assert k.shape[3] == (c if name == "convn" else width)
        assert c_in == (c if name == "conv1" else width)
        bound = 1.0 / np.sqrt(9 * c_in)  # PyTorch-style uniform fan-in init
        assert np.abs(np.asarray(k)).max() <= bound
        assert np.abs(np.asarray(params[name]["bias"])).max() <= bound
    z = jax.random.uniform(jax.random.key(1), (2,) + shape)
    out = net.apply(params, z, jax.random.key(2), False)
    assert out.shape == z.shape
    assert np.all((np.asarray(out) > 0) & (np.asarray(out) < 1))  # sigmoid output


def test_dropout_and_sigmoid_switches():
    net = make_reconstruction_net(ride_fcn("mnist"))
    x = jnp.zeros((8, 8, 1))
    params = net.init(jax.random.key(0), x)
    z = jax.random.uniform(jax.random.key(1), (1, 8, 8, 1))
    a = net.apply(params, z, jax.random.key(2), True)
    b = net.apply(params, z, jax.random.key(3), True)
    e1 = net.apply(params, z, jax.random.key(2), False)
    e2 = net.apply(params, z, jax.random.key(3), False)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-6  # dropout on in train mode
    np.testing.assert_array_equal(e1, e2)
    nodrop = make_reconstruction_net(ride_fcn("mnist", dropout=False))
    np.testing.assert_array_equal(nodrop.apply(params, z, jax.random.key(2), True), e1)
    lin = make_reconstruction_net(ride_fcn("mnist", sigmoid=False))
    np.testing.assert_allclose(jax.nn.sigmoid(lin.apply(params, z, jax.random.key(2), False)),
                               e1, atol=1e-6)
    assert set(RIDE_FCN_SPECS) >= {"mnist", "cifar10", "imagenet", "tiny"}
    with pytest.raises(ValueError, match="dataset"):
        ride_fcn("svhn")


def _conv_reference(x, k, b):
    """Hand-written 3x3 SAME cross-correlation in NumPy (loops over the taps)."""
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, k.shape[-1]), np.float64) + b
    for a in range(3):
        for c in range(3):
            out += np.einsum("nhwi,io->nhwo", xp[:, a : a + h, c : c + w], k[a, c])
    return out


def test_patches_conv_matches_numpy_and_lax_conv():
    from robustjax.models._ride import patches_conv3x3

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    k = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    got = np.asarray(jax.jit(patches_conv3x3)(x, k, b))
    np.testing.assert_allclose(got, _conv_reference(x, k, b), atol=1e-5)
    lax_out = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
    np.testing.assert_allclose(got, lax_out, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_patches_fcn_equals_flax_conv_fcn(train):
    # Same parameters -> same function as nn.Conv (dropout masks too: same module names/rngs),
    # also with per-example parameters under vmap (the batched matmul path).
    fast = make_reconstruction_net(ride_fcn("mnist"))
    ref = make_reconstruction_net(ride_fcn("mnist", conv="lax"))
    x = jax.random.uniform(jax.random.key(0), (3, 2, 9, 8, 1))
    params = jax.vmap(lambda k: fast.init(k, x[0, 0]))(jax.random.split(jax.random.key(1), 3))
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, jax.vmap(lambda k: ref.init(k, x[0, 0]))(jax.random.split(jax.random.key(1), 3)))
    keys = jax.random.split(jax.random.key(2), 3)
    a = jax.jit(jax.vmap(lambda p, z, k: fast.apply(p, z, k, train)))(params, x, keys)
    b = jax.jit(jax.vmap(lambda p, z, k: ref.apply(p, z, k, train)))(params, x, keys)
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="conv"):
        make_reconstruction_net(ride_fcn("tiny", conv="fft")).init(jax.random.key(0), x[0, 0])


def test_coin_dropout_mask_is_the_bits_of_random_words():
    from robustjax.models._ride import coin_dropout_mask

    key = jax.random.key(3)
    m = np.asarray(jax.jit(lambda k: coin_dropout_mask(k, (50, 40)))(key))
    assert m.shape == (50, 40) and m.dtype == bool
    words = np.asarray(jax.random.bits(key, (50, 2, 1), jnp.uint32))
    bits = (words >> np.arange(32, dtype=np.uint32)) & 1
    np.testing.assert_array_equal(m, bits.reshape(50, 64)[:, :40] == 1)
    assert abs(m.mean() - 0.5) < 0.03  # 2000 fair coins: 4.5 standard deviations
    # Dropout at rate 1/2 zeroes the dropped units and doubles the kept ones.
    net = make_reconstruction_net(ride_fcn("tiny", sigmoid=False))
    z = jax.random.uniform(jax.random.key(4), (1, 6, 6, 1))
    params = net.init(jax.random.key(5), z[0])
    outs = {np.asarray(net.apply(params, z, jax.random.key(i), True)).tobytes() for i in range(4)}
    assert len(outs) == 4
