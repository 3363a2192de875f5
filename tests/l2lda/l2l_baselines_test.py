import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax.attacks._generators import (advgan_attack, advgan_perturbation, gap_attack,
                                           gap_perturbation, l2l_star_attack)
from robustjax.attacks._l2l import l2l_attack, normalize_gradient
from robustjax.models._attack_generators import (AdvGANDiscriminator, AdvGANGenerator,
                                                 GAPGenerator)
from robustjax.models._l2l import L2LGeneratorTiny
from robustjax.training._l2l_baselines import (_cw_margin, create_generator_state,
                                               make_advgan_step, make_gap_step,
                                               make_l2l_generator_step, train_attack_generator)
from robustjax.training._l2lda import create_l2lda_state, make_l2lda_step


class _Lin(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _data(n=8, hw=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, size=(n, hw, hw, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


def test_gap_perturbation_on_eps_sphere_and_parallel():
    x = jnp.full((3, 8, 8, 1), 0.5)
    w = jax.random.normal(jax.random.key(0), x.shape)
    gen = lambda v: w * (1.0 + jnp.arange(3.0))[:, None, None, None]  # noqa: E731
    d = jax.jit(functools.partial(gap_perturbation, gen, eps=0.2))(x)
    np.testing.assert_allclose(jnp.max(jnp.abs(d), axis=(1, 2, 3)), 0.2, rtol=1e-5)
    # Direction of G(x), magnitude independent of its scale.
    ref = 0.2 * w / jnp.max(jnp.abs(w), axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(d, ref, atol=1e-6)
    # Box: near-1 pixels cannot go above 1.
    xb = jnp.full((3, 8, 8, 1), 0.95)
    assert float(jnp.max(xb + gap_perturbation(gen, xb, eps=0.2))) <= 1.0 + 1e-6
    # vmap over examples agrees with the batched call.
    dv = jax.vmap(lambda xi: gap_perturbation(gen, xi[None], eps=0.2)[0])(x)
    np.testing.assert_allclose(jnp.max(jnp.abs(dv), axis=(1, 2, 3)), 0.2, rtol=1e-5)


def test_advgan_perturbation_bounds():
    x, y = _data(4)
    d = advgan_perturbation(lambda v: 3.0 * jnp.ones_like(v), x, eps=0.1)
    np.testing.assert_allclose(d, jnp.clip(x + 0.1, 0, 1) - x, atol=1e-6)
    g = AdvGANGenerator(features=2, num_blocks=1)
    v = g.init(jax.random.key(0), x)
    attack = functools.partial(advgan_attack, generator_fn=functools.partial(g.apply, v),
                               eps=0.1)
    adv = jax.jit(attack, static_argnums=0)(None, jax.random.key(1), x, y)
    assert float(jnp.max(jnp.abs(adv - x))) <= 0.1 + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    gv = GAPGenerator(features=2, num_blocks=1)
    adv2 = gap_attack(None, jax.random.key(1), x, y,
                      generator_fn=functools.partial(gv.apply, gv.init(jax.random.key(0), x)),
                      eps=0.1)
    assert float(jnp.max(jnp.abs(adv2 - x))) <= 0.1 + 1e-6
    with pytest.raises(ValueError, match="divisible by 4"):
        g.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))


def test_cw_margin_matches_numpy():
    logits = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]], np.float32)
    y = np.array([0, 2], np.int32)
    np.testing.assert_allclose(_cw_margin(jnp.asarray(logits), jnp.asarray(y), 0.0),
                               [1.0, 0.0])  # [3-2, max(1-5, 0)]
    np.testing.assert_allclose(_cw_margin(jnp.asarray(logits), jnp.asarray(y), 10.0),
                               [1.0, -4.0])


def test_l2l_star_is_one_full_step():
    x, y = _data(4)
    clf = _Lin()
    cv = clf.init(jax.random.key(0), x)
    logits_fn = functools.partial(clf.apply, cv)
    gen_fn = lambda xx, d, g, z, yy: jnp.tanh(3 * g + z[:, :1, None, None])  # noqa: E731
    a = l2l_star_attack(logits_fn, jax.random.key(3), x, y, generator_fn=gen_fn, eps=0.2,
                        latent_dim=2)
    b = l2l_attack(logits_fn, jax.random.key(3), x, y, generator_fn=gen_fn, eps=0.2,
                   latent_dim=2, steps=1, step_fraction=1.0)
    np.testing.assert_allclose(a, b)
    grad = jax.grad(lambda v: jnp.sum(
        -jax.nn.log_softmax(logits_fn(v))[jnp.arange(4), y]))(x)
    z = jax.random.normal(jax.random.key(3), (4, 2))
    ref = jnp.clip(x + 0.2 * gen_fn(x, 0 * x, normalize_gradient(grad), z, y), 0, 1)
    np.testing.assert_allclose(a, ref, atol=1e-5)


def test_traced_lambda_matches_static_lambda():
    x, y = _data(8)
    clf, gen = _Lin(), L2LGeneratorTiny(latent_dim=2)
    state = create_l2lda_state(clf, gen, jax.random.key(0), x.shape, clf_tx=optax.sgd(0.1),
                               gen_tx=optax.sgd(0.1))
    batch = {"image": x, "label": y}
    s_static, m_static = jax.jit(make_l2lda_step(eps=0.3, lambda_div=0.7, steps=2,
                                                 latent_dim=2))(state, batch, jax.random.key(1))
    traced = jax.jit(make_l2lda_step(eps=0.3, lambda_div=0.0, steps=2, latent_dim=2))
    s_traced, m_traced = traced(state, batch, jax.random.key(1), jnp.float32(0.7))
    np.testing.assert_allclose(m_static["gen_loss"], m_traced["gen_loss"], rtol=1e-4)
    assert float(m_traced["gen_loss"]) == pytest.approx(
        -(float(m_traced["gen_ce"]) + 0.7 * float(m_traced["diversity"])), rel=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(s_static.gen_params),
                    jax.tree_util.tree_leaves(s_traced.gen_params)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_generator_training_against_fixed_classifier():
    x, y = _data(64, seed=1)
    clf = _Lin()
    cv = clf.init(jax.random.key(0), x)
    logits_fn = functools.partial(clf.apply, cv)

    def ce_of(delta):
        return float(jnp.mean(-jax.nn.log_softmax(logits_fn(x + delta))[jnp.arange(64), y]))

    gap = GAPGenerator(features=2, num_blocks=1)
    st = create_generator_state(gap, jax.random.key(1), (16, 8, 8, 1), tx=optax.adam(1e-2))
    before = ce_of(gap_perturbation(functools.partial(gap.apply, {"params": st.params}), x,
                                    eps=0.2))
    st, m = train_attack_generator(make_gap_step(clf.apply, eps=0.2), st, cv, x, y,
                                   key=jax.random.key(2), steps=25, batch_size=16)
    after = ce_of(gap_perturbation(functools.partial(gap.apply, {"params": st.params}), x,
                                   eps=0.2))
    assert int(st.step) == 25 and after > before + 0.05, (before, after)

    adv = AdvGANGenerator(features=2, num_blocks=1)
    st = create_generator_state(adv, jax.random.key(1), (16, 8, 8, 1), tx=optax.adam(1e-3),
                                discriminator=AdvGANDiscriminator(2), disc_tx=optax.adam(1e-3))
    st2, m = jax.jit(make_advgan_step(clf.apply, eps=0.2))(
        st, cv, {"image": x[:16], "label": y[:16]}, jax.random.key(0))
    assert all(np.isfinite(float(v)) for v in m.values())
    moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: jnp.max(jnp.abs(a - b)), st.disc_params, st2.disc_params))
    assert max(float(v) for v in moved) > 0  # the discriminator is trained too

    lg = L2LGeneratorTiny(latent_dim=2)
    st = create_generator_state(lg, jax.random.key(1), (16, 8, 8, 1), tx=optax.adam(1e-3))
    st2, m = jax.jit(make_l2l_generator_step(clf.apply, eps=0.2, lambda_div=0.1, steps=2,
                                             latent_dim=2))(
        st, cv, {"image": x[:16], "label": y[:16]}, jax.random.key(0))
    assert np.isfinite(float(m["gen_loss"])) and float(m["ce"]) > 0
    assert int(st2.step) == 1


def test_l2l_deconv_is_pytorch_k4_s2_p1():
    # ConvTranspose2d(k=4, s=2, p=1): out[2i + a - 1] += x[i] * W[a] (scatter form), with
    # W the spatially flipped Flax kernel.
    from robustjax.models._l2l import L2LGenerator
    gen = L2LGenerator(num_classes=2, latent_dim=2, features=(2, 2, 3))
    x = jnp.zeros((1, 8, 8, 1))
    v = gen.init(jax.random.key(0), x, x, x, jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32))
    k = np.asarray(v["params"]["deconv1"]["kernel"])          # [4, 4, 3, 2]
    b = np.asarray(v["params"]["deconv1"]["bias"])
    inp = np.random.default_rng(0).normal(size=(1, 2, 2, 3)).astype(np.float32)
    out = nn.ConvTranspose(2, (4, 4), (2, 2), padding=((2, 2), (2, 2))).apply(
        {"params": {"kernel": k, "bias": b}}, inp)
    ref = np.zeros((6, 6, 2), np.float32)  # padded by 1 on each side, cropped below
    w = k[::-1, ::-1]
    for i in range(2):
        for j in range(2):
            for a in range(4):
                for c in range(4):
                    ref[2 * i + a, 2 * j + c] += inp[0, i, j] @ w[a, c]
    np.testing.assert_allclose(out[0], ref[1:5, 1:5] + b, atol=1e-5)


def test_l2l_generator_phase_convs_equal_lax_convs():
    from robustjax.models._l2l import L2LGenerator
    x, y = _data(3, hw=12)
    z = jax.random.normal(jax.random.key(0), (3, 2))
    g = jax.random.normal(jax.random.key(1), x.shape)
    fast = L2LGenerator(num_classes=10, latent_dim=2, features=(3, 4, 5), conv_impl="phase")
    slow = L2LGenerator(num_classes=10, latent_dim=2, features=(3, 4, 5), conv_impl="lax")
    v = fast.init(jax.random.key(2), x, 0.1 * g, g, z, y)
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(
        slow.init(jax.random.key(2), x, 0.1 * g, g, z, y))
    a = fast.apply(v, x, 0.1 * g, g, z, y)
    b = slow.apply(v, x, 0.1 * g, g, z, y)
    np.testing.assert_allclose(a, b, atol=1e-5)
    auto = L2LGenerator(num_classes=10, latent_dim=2, features=(3, 4, 5))  # default "auto"
    assert auto.conv_impl == "auto"
    np.testing.assert_allclose(auto.apply(v, x, 0.1 * g, g, z, y), a, atol=1e-5)
    with pytest.raises(ValueError, match="conv_impl"):
        L2LGenerator(features=(3, 4, 5), conv_impl="fft").init(
            jax.random.key(0), x, 0.1 * g, g, z, y)
    # The "lax" path is nn.Conv(4, 2, padding=1) / nn.ConvTranspose(4, 2, padding=2).
    k = v["params"]["conv2"]["kernel"]
    inp = jax.random.normal(jax.random.key(3), (2, 8, 8, k.shape[2]))
    ref = nn.Conv(k.shape[3], (4, 4), (2, 2), padding=1, use_bias=False).apply(
        {"params": {"kernel": k}}, inp)
    from robustjax.models._l2l import conv4x4_s2_phase, deconv4x4_s2_phase
    np.testing.assert_allclose(conv4x4_s2_phase(inp, k), ref, atol=1e-5)
    ref = nn.ConvTranspose(k.shape[3], (4, 4), (2, 2), padding=((2, 2), (2, 2)),
                           use_bias=False).apply({"params": {"kernel": k}}, inp)
    np.testing.assert_allclose(deconv4x4_s2_phase(inp, k), ref, atol=1e-5)


def _mnist_linear_classifier(n=1024):
    """A linear classifier trained on real digits (fast; ~88 % clean on held-out digits)."""
    import importlib.resources as ir
    with ir.files("robustjax.data").joinpath("_embedded/mnist_12k.npz").open("rb") as f:
        d = np.load(f)
        x = d["train_images"][:n].astype(np.float32)[..., None] / 255.0
        y = d["train_labels"][:n].astype(np.int32)
        xt = d["test_images"][:256].astype(np.float32)[..., None] / 255.0
        yt = d["test_labels"][:256].astype(np.int32)
    clf = _Lin()
    params = clf.init(jax.random.key(0), x[:1])
    tx = optax.adam(1e-2)
    opt = tx.init(params)

    @jax.jit
    def step(p, o, xb, yb):
        g = jax.grad(lambda p: jnp.mean(
            -jax.nn.log_softmax(clf.apply(p, xb))[jnp.arange(xb.shape[0]), yb]))(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    for i in range(150):
        sl = slice((64 * i) % n, (64 * i) % n + 64)
        params, opt = step(params, opt, x[sl], y[sl])
    return clf, params, (x, y), (jnp.asarray(xt), jnp.asarray(yt))


@pytest.mark.parametrize("name,steps,step_fraction,lambda_div",
                         [("L2L-DA", 3, 0.5, 0.02), ("L2L*", 1, 1.0, 0.0)])
def test_trained_generator_beats_random_noise_of_same_linf_norm(name, steps, step_fraction,
                                                                 lambda_div):
    # A sign flip in the generator's loss (or a generator that ignores the classifier) would
    # leave accuracy near the random-noise level; a trained attack generator must go far below.
    eps = 0.2
    clf, cv, (x, y), (xt, yt) = _mnist_linear_classifier()
    logits_fn = functools.partial(clf.apply, cv)

    def acc(v):
        return float(jnp.mean(jnp.argmax(logits_fn(v), -1) == yt))

    clean = acc(xt)
    noise = eps * jnp.sign(jax.random.normal(jax.random.key(9), xt.shape))
    noisy = acc(jnp.clip(xt + noise, 0.0, 1.0))
    lg = L2LGeneratorTiny(latent_dim=2)
    st = create_generator_state(lg, jax.random.key(1), (32, 28, 28, 1), tx=optax.adam(3e-3))
    step = make_l2l_generator_step(clf.apply, eps=eps, lambda_div=lambda_div,
                                   steps=steps, step_fraction=step_fraction,
                                   latent_dim=2)
    st, _ = train_attack_generator(step, st, cv, x, y, key=jax.random.key(2), steps=40,
                                   batch_size=32)
    from robustjax.training._l2lda import l2lda_generator_fn

    gfn = l2lda_generator_fn(lg.apply, {"params": st.params, "batch_stats": st.batch_stats})
    x_adv = jax.jit(functools.partial(
        l2l_attack, logits_fn, generator_fn=gfn, eps=eps, latent_dim=2, steps=steps,
        step_fraction=step_fraction))(jax.random.key(3), xt, yt)
    assert float(jnp.max(jnp.abs(x_adv - xt))) <= eps + 1e-6
    attacked = acc(x_adv)
    assert clean > 0.75 and noisy > clean - 0.15, (name, clean, noisy)
    assert attacked < noisy - 0.4, (name, clean, noisy, attacked)
