"""Tests of robustjax.models classifiers and helpers."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import models

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)

# (name, constructor, image shape, has batch norm)
TINY = [
    ("mlp", functools.partial(models.MLP, hidden=16), MNIST, False),
    ("tiny_cnn", models.TinyCNN, MNIST, False),
    ("lenet5", models.LeNet5, MNIST, False),
    ("resnet_tiny", models.ResNetTiny, CIFAR, True),
    ("wrn_tiny", models.WideResNetTiny, CIFAR, True),
]

FULL = [
    # name, constructor, shape, parameter count (exact for these implementations), literature
    ("mlp", models.MLP, MNIST, 784 * 512 + 512 + 512 * 10 + 10, None),
    ("madry_cnn", models.MadryCNN, MNIST, 3_274_634, 3.27e6),
    ("mnist_cnn", models.MnistCNN, MNIST, 3_274_634, None),
    ("lenet5", models.LeNet5, MNIST, 61_706, None),
    ("resnet18", models.ResNet18, CIFAR, 11_173_962, 11.17e6),
    ("resnet20", models.ResNet20, CIFAR, 269_722, 0.27e6),
    ("wrn_28_10", functools.partial(models.WideResNet, depth=28, width=10), CIFAR,
     36_479_194, 36.5e6),
    ("wrn_28_10_partial", models.WideResNet28_10, CIFAR, 36_479_194, 36.5e6),
]


def _images(shape, n=3, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, *shape))


@functools.lru_cache(maxsize=None)
def _setup(name):
    ctor, shape, has_bn = {t[0]: t[1:] for t in TINY}[name]
    model = ctor()
    variables = models.init_model(model, jax.random.key(1), (2, *shape))
    if has_bn:
        # Realistic, non-default running statistics: the exact batch statistics of a batch from
        # another distribution (half-contrast images), so eval and train modes differ visibly
        # while no unit is dead.
        _, upd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
            variables, 0.5 * _images(shape, n=8, seed=9))
        variables["batch_stats"] = jax.tree_util.tree_map(
            lambda new, old: (new - 0.9 * old) / 0.1, upd["batch_stats"],
            variables["batch_stats"])
    return model, variables, shape


@pytest.mark.parametrize("name", [t[0] for t in TINY])
def test_tiny_models_apply_jit_vmap(name):
    model, variables, shape = _setup(name)
    x = _images(shape)
    logits = model.apply(variables, x)
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    logits_fn = models.make_logits_fn(model, variables)
    fast = jax.jit(logits_fn)
    np.testing.assert_allclose(fast(x), logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits_fn(x), model.apply(variables, x, train=False), atol=0)
    # vmap over an extra leading axis equals a loop
    xs = jnp.stack([x, _images(shape, seed=1)])
    batched = jax.jit(jax.vmap(logits_fn))(xs)
    assert batched.shape == (2, 3, 10)
    for b in range(2):
        np.testing.assert_allclose(batched[b], fast(xs[b]), rtol=1e-4, atol=1e-5)
    # input gradients (what attacks need) are finite and nonzero
    g = jax.jit(jax.grad(lambda v: logits_fn(v)[:, 0].sum()))(x)
    assert g.shape == x.shape and np.all(np.isfinite(g)) and np.abs(g).max() > 0
    assert models.count_params(variables) > 0


@pytest.mark.parametrize("name", [t[0] for t in TINY if t[3]])
def test_batch_norm_train_vs_eval(name):
    model, variables, shape = _setup(name)
    x = _images(shape, n=4)
    eval_out = jax.jit(models.make_logits_fn(model, variables))(x)
    train_out, state = model.apply(
        variables, x, train=True, mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Conv))
    assert train_out.shape == eval_out.shape
    assert not np.allclose(train_out, eval_out, atol=1e-3)
    new, old = state["batch_stats"], variables["batch_stats"]
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(old)
    diffs = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), new, old)
    assert all(d > 0 for d in jax.tree_util.tree_leaves(diffs))
    # momentum 0.9 on the BN after the stem conv: new = 0.9 old + 0.1 batch mean of its input
    conv_out = state["intermediates"]["Conv_0"]["__call__"][0]
    path = ("WideBlock_0", "BatchNorm_0") if name.startswith("wrn") else ("BatchNorm_0",)
    get = lambda tree: functools.reduce(lambda t, k: t[k], path, tree)
    expected = 0.9 * get(old)["mean"] + 0.1 * conv_out.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(get(new)["mean"], expected, rtol=1e-4, atol=1e-5)
    # eval mode needs no mutable collection and is per-example
    one = model.apply(variables, x[:1])
    np.testing.assert_allclose(one, eval_out[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shortcut", ["pad", "projection"])
def test_basic_block_shortcuts(shortcut):
    block = models.BasicBlock(8, strides=2, shortcut=shortcut)
    x = _images((6, 6, 4), n=2)
    v = models.init_model(block, jax.random.key(0), x.shape)
    # zero the residual branch's convs: the output is act(shortcut(x)) (eval-mode BN of 0 is 0)
    params = dict(v["params"])
    for k in ("Conv_0", "Conv_1"):
        params[k] = {"kernel": jnp.zeros_like(params[k]["kernel"])}
    out = block.apply({**v, "params": params}, x)
    assert out.shape == (2, 3, 3, 8)
    if shortcut == "pad":
        ref = np.pad(np.asarray(x)[:, ::2, ::2, :], [(0, 0)] * 3 + [(2, 2)])
        assert "shortcut_conv" not in params
    else:
        k = np.asarray(params["shortcut_conv"]["kernel"])[0, 0]  # [4, 8]
        ref = np.asarray(x)[:, ::2, ::2, :] @ k / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(out, np.maximum(ref, 0), rtol=1e-4, atol=1e-5)


def test_wide_resnet_dropout_and_softplus():
    x = _images(CIFAR, n=2)
    model = models.WideResNetTiny(dropout_rate=0.5)
    variables = models.init_model(model, jax.random.key(0), (2, *CIFAR))
    run = jax.jit(lambda v, x, k: model.apply(
        v, x, train=True, mutable=["batch_stats"], rngs={"dropout": k})[0])
    a = run(variables, x, jax.random.key(1))
    b = run(variables, x, jax.random.key(1))
    c = run(variables, x, jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    no_drop = models.WideResNetTiny()
    np.testing.assert_allclose(model.apply(variables, x), no_drop.apply(variables, x), atol=1e-6)
    soft = models.WideResNetTiny(activation="softplus")
    out_soft = soft.apply(variables, x)
    assert out_soft.shape == (2, 10)
    assert not np.allclose(out_soft, no_drop.apply(variables, x), atol=1e-4)


def test_mlp_matches_numpy_and_normalization():
    model = models.MLP(hidden=7, num_classes=3)
    x = _images(MNIST, n=4)
    v = models.init_model(model, jax.random.key(0), MNIST)
    p = jax.tree_util.tree_map(np.asarray, v["params"])
    h = np.maximum(np.asarray(x).reshape(4, -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    ref = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    np.testing.assert_allclose(model.apply(v, x), ref, rtol=1e-4, atol=1e-5)
    assert models.count_params(v) == 784 * 7 + 7 + 7 * 3 + 3
    normed = models.MLP(hidden=7, num_classes=3, mean=0.1307, std=0.3081)
    np.testing.assert_allclose(normed.apply(v, x), model.apply(v, (x - 0.1307) / 0.3081),
                               rtol=1e-4, atol=1e-4)
    cnn = models.TinyCNN(mean=(0.5,), std=(0.25,))
    vc = models.init_model(cnn, jax.random.key(0), MNIST)
    np.testing.assert_allclose(cnn.apply(vc, x), models.TinyCNN().apply(vc, (x - 0.5) / 0.25),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, ctor, shape, count, literature", FULL)
def test_full_models_shapes_and_param_counts(name, ctor, shape, count, literature):
    model = ctor()
    variables = jax.eval_shape(
        lambda k: models.init_model(model, k, (2, *shape), jit=False), jax.random.key(0))
    assert models.count_params(variables) == count
    if literature is not None:
        assert abs(count - literature) / literature < 0.01, name
    out = jax.eval_shape(functools.partial(model.apply, train=False), variables,
                         jax.ShapeDtypeStruct((5, *shape), jnp.float32))
    assert out.shape == (5, 10) and out.dtype == jnp.float32
    has_bn = "batch_stats" in variables
    assert has_bn == name.startswith(("resnet", "wrn"))


def test_init_model_deterministic_and_shapes():
    model = models.TinyCNN()
    a = models.init_model(model, jax.random.key(3), MNIST)
    b = models.init_model(model, jax.random.key(3), (7, *MNIST))
    c = models.init_model(model, jax.random.key(4), MNIST)
    for la, lb in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(la, lb, atol=1e-6)
    assert not all(np.allclose(la, lc) for la, lc in
                   zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(c)))
    assert models.count_params(a) == models.count_params(a["params"])


def test_bad_arguments():
    x = _images(MNIST, n=1)
    with pytest.raises(ValueError, match="`activation`"):
        jax.eval_shape(models.MLP(hidden=4, activation="bogus").init, jax.random.key(0), x)
    with pytest.raises(ValueError, match="`depth`"):
        jax.eval_shape(models.WideResNet(depth=27, width=1).init, jax.random.key(0),
                       _images(CIFAR, n=1))
    with pytest.raises(ValueError, match="`shortcut`"):
        jax.eval_shape(models.ResNetTiny(shortcut="nope").init, jax.random.key(0),
                       _images(CIFAR, n=1))
    with pytest.raises(ValueError, match="`input_shape`"):
        models.init_model(models.MLP(), jax.random.key(0), (28, 0, 1))
    with pytest.raises(ValueError, match="`key`"):
        models.init_model(models.MLP(), 0, MNIST)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 2), (1, 5, 5, 1)])
def test_max_pool_2x2_matches_flax(shape):
    x = jax.random.normal(jax.random.key(0), shape)  # continuous: no ties
    ref_fn = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID")
    out = models.max_pool_2x2(x)
    assert out.shape == (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
    np.testing.assert_array_equal(out, ref_fn(x))
    w = jax.random.normal(jax.random.key(1), out.shape)
    g = jax.grad(lambda v: jnp.sum(models.max_pool_2x2(v) * w))(x)
    g_ref = jax.grad(lambda v: jnp.sum(ref_fn(v) * w))(x)
    np.testing.assert_allclose(g, g_ref, atol=1e-6)
    # jit and an extra leading axis
    np.testing.assert_array_equal(jax.jit(models.max_pool_2x2)(x[None])[0], out)
    with pytest.raises(ValueError, match="`x`"):
        models.max_pool_2x2(jnp.zeros((4, 4)))


def test_max_pool_2x2_ties_split_gradient():
    x = jnp.ones((1, 2, 2, 1))
    g = jax.grad(lambda v: models.max_pool_2x2(v).sum())(x)
    np.testing.assert_allclose(g.sum(), 1.0, atol=1e-6)  # total gradient preserved
