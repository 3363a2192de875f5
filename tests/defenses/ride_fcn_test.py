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
