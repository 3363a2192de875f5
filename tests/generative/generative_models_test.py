"""DCGAN (Tables 1-2) and class-conditional VAE modules of robustjax.models._generative."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax.models import _generative as gm


def _np_variables(module, *args, seed=0, std=0.2):
    """Random variables without compiling Flax's initialisers (slow on a loaded CPU)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = str(path[-1])
        if "var" in name or "scale" in name:
            return jnp.ones(s.shape, s.dtype)
        if "mean" in name:
            return jnp.zeros(s.shape, s.dtype)
        return jnp.asarray(std * rng.normal(size=s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def test_full_size_parameter_shapes_follow_tables():
    k = jax.random.key(0)
    g = jax.eval_shape(gm.DCGANGenerator(channels=1).init, k, jnp.zeros((1, 100)))
    p = _shapes(g["params"])
    # Table 2: convT(d,1024,4,1,0), convT(1024,512,4,2,1), convT(512,256,4,2,1), convT(256,C,4,2,1).
    assert p["convT1"]["kernel"] == (4, 4, 100, 1024)
    assert p["convT2"]["kernel"] == (4, 4, 1024, 512)
    assert p["convT3"]["kernel"] == (4, 4, 512, 256)
    assert p["convT4"]["kernel"] == (4, 4, 256, 1)
    assert set(g["batch_stats"]) == {"bn1", "bn2", "bn3"}
    out = jax.eval_shape(lambda v, z: gm.DCGANGenerator().apply(v, z), g, jnp.zeros((5, 100)))
    assert out.shape == (5, 32, 32, 1)
    e = jax.eval_shape(gm.DCGANEncoder(features=8).init, k, jnp.zeros((1, 32, 32, 3)))
    p = _shapes(e["params"])
    # Table 1: conv(C,256,4,2,1), conv(256,512,4,2,1), conv(512,1024,4,2,1), conv(1024,128,4,1,0).
    assert p["conv1"]["kernel"] == (4, 4, 3, 256)
    assert p["conv2"]["kernel"] == (4, 4, 256, 512)
    assert p["conv3"]["kernel"] == (4, 4, 512, 1024)
    assert p["conv4"]["kernel"] == (4, 4, 1024, 128)
    assert p["fc"]["kernel"] == (128, 8)


def test_tiny_modules_shapes_ranges_and_batchnorm():
    k = jax.random.key(0)
    g = gm.DCGANGeneratorTiny(channels=1)
    v = _np_variables(g, jnp.zeros((2, 5)))
    z = jax.random.normal(jax.random.key(1), (4, 5))
    x = jax.jit(g.apply)(v, z)
    assert x.shape == (4, 32, 32, 1) and float(x.min()) >= 0 and float(x.max()) <= 1
    x_tr, upd = jax.jit(lambda v, z: g.apply(v, z, train=True, mutable=["batch_stats"]))(v, z)
    assert x_tr.shape == x.shape
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), upd["batch_stats"],
                         v["batch_stats"])
    assert max(jax.tree.leaves(moved)) > 0  # running statistics were updated
    c = gm.DCGANCriticTiny()
    vc = _np_variables(c, jnp.zeros((1, 32, 32, 1)))
    assert jax.jit(c.apply)(vc, x).shape == (4,)
    e = gm.DCGANEncoderTiny(features=6)
    ve = _np_variables(e, jnp.zeros((1, 32, 32, 1)))
    out = jax.jit(e.apply)(ve, x)
    assert out.shape == (4, 6)
    # Per-example (vmap over single examples == batch) for the eval-mode generator.
    xv = jax.jit(jax.vmap(lambda zi: g.apply(v, zi[None])[0]))(z)
    np.testing.assert_allclose(xv, x, atol=1e-5)


def test_class_conditional_vae_has_independent_classes():
    m = gm.ClassConditionalVAETiny(num_classes=3, latent_dim=4)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
    eps = jnp.zeros((3, 2, 4))
    v = _np_variables(m, x, eps)
    assert jax.tree.leaves(v["params"])[0].shape[0] == 3  # stacked class axis
    rec, mu, logvar = jax.jit(m.apply)(v, x, eps)
    assert rec.shape == (3, 2, 32, 32, 1) and mu.shape == (3, 2, 4) and logvar.shape == (3, 2, 4)
    dec = jax.jit(lambda v, z: m.apply(v, z, method="decode"))
    np.testing.assert_allclose(dec(v, mu), rec, atol=1e-5)  # eps = 0 -> decode(mu)
    # Class c's output depends only on z[c].
    z = jax.random.normal(jax.random.key(2), (3, 5, 4))
    z2 = z.at[1].set(0.0)
    a, b = dec(v, z), dec(v, z2)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    np.testing.assert_allclose(a[2], b[2], atol=1e-6)
    assert float(jnp.abs(a[1] - b[1]).max()) > 0
    with pytest.raises(ValueError, match="z"):
        m.apply(v, jnp.zeros((2, 5, 4)), method="decode")


def test_pad_and_crop():
    x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    p = gm.pad_to_32(x)
    assert p.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(gm.crop_to_28(p), x)
    assert float(jnp.abs(p[:, :2]).max()) == 0.0
    with pytest.raises(ValueError, match="x"):
        gm.pad_to_32(jnp.zeros((2, 32, 32, 1)))


def test_theorem2_bound_dominates_tiny_dcgan_generator():
    from robustjax import implicit

    g = gm.DCGANGeneratorTiny(widths=(4, 4, 2))
    v = _np_variables(g, jnp.zeros((1, 3)), std=0.1)
    v["batch_stats"] = jax.tree.map(lambda a: a * 0.5 if a.ndim else a, v["batch_stats"])
    kernels, scales = gm.generator_lipschitz_inputs(v)
    assert len(kernels) == 4 and scales.shape == (4,)
    np.testing.assert_allclose(scales[3], 0.5)
    bound = float(implicit.lipschitz_bound(kernels, scales=scales, per_layer=True))
    z = jax.random.normal(jax.random.key(0), (64, 3))
    dz = 0.1 * jax.random.normal(jax.random.key(1), (64, 3))
    f = jax.jit(lambda z: g.apply(v, z))
    diff = (f(z + dz) - f(z)).reshape(64, -1)
    ratio = jnp.linalg.norm(diff, axis=1) / jnp.linalg.norm(dz, axis=1)
    assert 0 < float(ratio.max()) <= bound
