"""DefenseGAN and ABS (robustjax.defenses._generative) on tiny generators with known answers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax.defenses import _generative as gd
from robustjax.implicit import latent_projection


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

D = 2
H = 4


def _gen_params(seed=0):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(D, H * H)) * 1.5, jnp.float32)
    b = jnp.asarray(rng.normal(size=H * H) * 0.3, jnp.float32)
    return w, b


def _generator(w, b):
    def gen(z):  # [M, d] -> [M, 4, 4, 1] in (0, 1)
        return jax.nn.sigmoid(z @ w + b).reshape(-1, H, H, 1)

    return gen


def _classifier(seed=1):
    v = jnp.asarray(np.random.default_rng(seed).normal(size=(H * H, 3)), jnp.float32)
    return lambda x: x.reshape(x.shape[0], -1) @ v


KW = dict(latent_dim=D, restarts=4, steps=150, learning_rate=5.0, momentum=0.7)


def test_defensegan_recovers_in_range_points_and_keeps_best_restart():
    gen = _generator(*_gen_params())
    z_true = jnp.asarray([[0.4, -0.3], [-0.2, 0.5], [0.1, 0.1]], jnp.float32)
    x = gen(z_true)
    f = jax.jit(functools.partial(gd.defensegan_reconstruct_with_latent, gen,
                                  mode="bpda", **KW))
    x_rec, z, loss = f(jax.random.key(0), x)
    assert x_rec.shape == x.shape and z.shape == (3, D) and loss.shape == (3,)
    np.testing.assert_allclose(x_rec, x, atol=2e-2)
    np.testing.assert_allclose(loss, np.mean((np.asarray(gen(z)) - np.asarray(x)) ** 2,
                                             axis=(1, 2, 3)), rtol=1e-4, atol=1e-7)
    # The kept restart is the best of the R searches run one at a time from the same starts.
    z0 = np.sqrt(1.0 / D) * jax.random.normal(jax.random.key(0), (3, 4, D))
    x_noisy = jnp.clip(x + 0.1 * jax.random.normal(jax.random.key(5), x.shape), 0, 1)
    _, _, loss_best = f(jax.random.key(0), x_noisy)

    def loss_one(z, x):
        return jnp.sum(jnp.mean((gen(z) - x) ** 2, axis=(1, 2, 3)))

    opt = optax.sgd(optax.piecewise_constant_schedule(5.0, {120: 0.1}), momentum=0.7)

    @jax.jit
    def single_losses(z0r):
        zr = latent_projection(loss_one, z0r, x_noisy, steps=150, mode="bpda", optimizer=opt)
        return jnp.mean((gen(zr) - x_noisy) ** 2, axis=(1, 2, 3))

    single = np.stack([single_losses(z0[:, r]) for r in range(4)], 1)
    assert np.ptp(single, axis=1).max() > 0  # the restarts differ
    np.testing.assert_allclose(loss_best, single.min(1), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("mode", ["implicit", "unrolled", "backtrack"])
def test_defensegan_gradient_modes_match_finite_differences(mode):
    w, b = _gen_params(2)
    gen = _generator(w, b)
    clf = _classifier()
    x = jnp.clip(gen(jnp.asarray([[0.3, -0.2]])) + 0.05, 0, 1)
    kw = dict(KW, restarts=2, steps=400, learning_rate=2.0, momentum=0.0, backward_steps=200)

    def h(x, mode):
        return jnp.sum(gd.defensegan_logits(clf, gen, jax.random.key(1), x, mode=mode, **kw)[:, 0])

    g = jax.jit(jax.grad(functools.partial(h, mode=mode)))(x)
    h_fwd = jax.jit(jax.vmap(lambda xx: h(xx[None], "bpda")))
    eps = 1e-2
    e = eps * np.eye(H * H, dtype=np.float32).reshape(H * H, H, H, 1)
    fd = (np.asarray(h_fwd(x[0] + e)) - np.asarray(h_fwd(x[0] - e))) / (2 * eps)
    assert np.abs(fd).max() > 0.05
    np.testing.assert_allclose(np.asarray(g).reshape(-1), fd, atol=5e-2)


def test_defensegan_independent_and_joint_solves_agree():
    """Per-search (vmapped) and summed inner problems: same value; same implicit gradient once
    CG has converged; with 1 CG iteration the per-search solve is exact for d = 1 searches
    (a 1×1 system) while the joint solve, one global step over all searches, is not."""
    rng = np.random.default_rng(7)
    w1 = jnp.asarray(rng.normal(size=(1, H * H)) * 1.5, jnp.float32)
    gen = _generator(w1, jnp.asarray(rng.normal(size=H * H) * 0.3, jnp.float32))
    clf = _classifier()
    x = jnp.clip(gen(jnp.asarray([[0.5], [-0.4], [1.2]])) + 0.03, 0, 1)
    kw = dict(latent_dim=1, restarts=3, steps=300, learning_rate=5.0, momentum=0.7, mode="implicit")

    def h(x, independent, cg_maxiter):
        logits = gd.defensegan_logits(clf, gen, jax.random.key(3), x, independent=independent,
                                      cg_maxiter=cg_maxiter, **kw)
        return jnp.sum(logits[:, 0])

    vals = [jax.jit(functools.partial(h, independent=i, cg_maxiter=50))(x) for i in (True, False)]
    np.testing.assert_allclose(vals[0], vals[1], rtol=1e-5)
    g = {(i, m): np.asarray(jax.jit(jax.grad(functools.partial(h, independent=i, cg_maxiter=m)))(x))
         for i in (True, False) for m in (1, 50)}
    assert np.abs(g[(True, 50)]).max() > 1e-3
    np.testing.assert_allclose(g[(True, 50)], g[(False, 50)], atol=1e-4)
    np.testing.assert_allclose(g[(True, 1)], g[(True, 50)], atol=1e-4)
    assert np.abs(g[(False, 1)] - g[(False, 50)]).max() > 1e-3


def test_defensegan_vmap_matches_per_example_calls():
    gen = _generator(*_gen_params(4))
    x = jax.random.uniform(jax.random.key(1), (3, H, H, 1))
    f = jax.jit(functools.partial(gd.defensegan_reconstruct, gen, **KW))
    vm = jax.jit(jax.vmap(lambda xi: f(jax.random.key(2), xi[None])[0]))(x)
    one = np.stack([f(jax.random.key(2), x[i:i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(vm, one, atol=1e-5)


def test_defensegan_bpda_gradient_is_classifier_gradient_at_reconstruction():
    gen = _generator(*_gen_params(3))
    clf = _classifier()
    x = jnp.full((2, H, H, 1), 0.5)
    kw = dict(KW, mode="bpda")
    g = jax.grad(
        lambda x: jnp.sum(gd.defensegan_logits(clf, gen, jax.random.key(0), x, **kw)[:, 1]))(x)
    x_rec = gd.defensegan_reconstruct(gen, jax.random.key(0), x, **kw)
    g_ref = jax.grad(lambda r: jnp.sum(clf(r)[:, 1]))(x_rec)
    np.testing.assert_allclose(g, g_ref, atol=1e-6)


def test_defensegan_jit_determinism_and_flax_generator():
    from robustjax.models._generative import DCGANGeneratorTiny
    model = DCGANGeneratorTiny()
    v = _np_variables(model, jnp.zeros((1, 3)))
    gen = lambda z: model.apply(v, z)  # noqa: E731
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
    f = functools.partial(gd.defensegan_reconstruct, gen, latent_dim=3, restarts=2, steps=5,
                          learning_rate=1.0, mode="bpda")
    fj = jax.jit(f)
    a = fj(jax.random.key(2), x)
    np.testing.assert_array_equal(a, fj(jax.random.key(2), x))  # same key, same result
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    logits_fn = gd.make_defensegan_logits_fn(lambda r: r.reshape(r.shape[0], -1)[:, :4], gen,
                                             jax.random.key(3), latent_dim=3, restarts=2,
                                             steps=5, learning_rate=1.0, cg_maxiter=3)
    g = jax.jit(jax.grad(lambda x: jnp.sum(logits_fn(x))))(x)
    assert g.shape == x.shape and np.all(np.isfinite(g)) and np.abs(g).max() > 0


def _class_decoders(k=3, seed=0):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(k, D, H * H)) * 1.5, jnp.float32)
    b = jnp.asarray(rng.normal(size=(k, H * H)) * 1.0, jnp.float32)

    def dec(z):  # [K, M, d] -> [K, M, 4, 4, 1]
        return jax.nn.sigmoid(jnp.einsum("kmd,kdp->kmp", z, w) + b[:, None]).reshape(
            z.shape[:2] + (H, H, 1))

    return dec


ABS_KW = dict(num_classes=3, latent_dim=D, num_samples=200, steps=50, learning_rate=0.05, beta=0.01)


def test_abs_classifies_samples_of_each_class_and_scores_are_losses():
    dec = _class_decoders()
    z = jnp.asarray([[0.5, -0.5], [-0.3, 0.2]])
    xs = dec(jnp.broadcast_to(z, (3, 2, D))).reshape(6, H, H, 1)  # class-major
    labels = np.repeat(np.arange(3), 2)
    f = jax.jit(functools.partial(gd.abs_logits_with_latent, dec, **ABS_KW))
    logits, zs = f(jax.random.key(0), xs)
    assert logits.shape == (6, 3) and zs.shape == (3, 6, D)
    np.testing.assert_array_equal(np.argmax(logits, 1), labels)
    rec = np.asarray(dec(zs))
    ref = -(np.sum((rec - np.asarray(xs)[None]) ** 2, axis=(2, 3, 4))
            + 0.01 * np.sum(np.asarray(zs) ** 2, -1)).T
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-5)
    # The refinement improves on the best prior sample: scores >= the no-refinement scores.
    l0 = gd.abs_logits(dec, jax.random.key(0), xs, **{**ABS_KW, "steps": 1, "learning_rate": 1e-6})
    assert np.all(np.asarray(logits) >= np.asarray(l0) - 1e-5)


def test_abs_gradients_implicit_vs_bpda_vs_fd():
    dec = _class_decoders(seed=1)
    x = jnp.clip(dec(jnp.full((3, 1, D), 0.2))[1] + 0.03, 0, 1)
    kw = dict(ABS_KW, steps=300)

    def h(x, mode):
        return jnp.sum(gd.abs_logits(dec, jax.random.key(0), x, mode=mode, **kw)[:, 0])

    gi = jax.jit(jax.grad(functools.partial(h, mode="implicit")))(x)
    gb = jax.jit(jax.grad(functools.partial(h, mode="bpda")))(x)
    np.testing.assert_allclose(gi, gb, atol=1e-2)  # envelope theorem at the optimum
    h_fwd = jax.jit(jax.vmap(lambda xx: h(xx[None], "bpda")))
    eps = 1e-2
    e = eps * np.eye(H * H, dtype=np.float32).reshape(H * H, H, H, 1)
    fd = (np.asarray(h_fwd(x[0] + e)) - np.asarray(h_fwd(x[0] - e))) / (2 * eps)
    np.testing.assert_allclose(np.asarray(gi).reshape(-1), fd, atol=5e-2)


def test_bad_arguments_raise():
    gen = _generator(*_gen_params())
    x = jnp.zeros((1, H, H, 1))
    with pytest.raises(ValueError, match="mode"):
        gd.defensegan_reconstruct(gen, jax.random.key(0), x, latent_dim=D, mode="x")
    with pytest.raises(ValueError, match="restarts"):
        gd.defensegan_reconstruct(gen, jax.random.key(0), x, latent_dim=D, restarts=0)
    with pytest.raises(ValueError, match="x"):
        gd.defensegan_reconstruct(gen, jax.random.key(0), x + 2.0, latent_dim=D)
    with pytest.raises(ValueError, match="key"):
        gd.abs_logits(_class_decoders(), 0, x, num_classes=3, latent_dim=D)
