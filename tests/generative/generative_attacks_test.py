"""Attacks on generative defenses (robustjax.attacks._generative): tiny problems, known answers.

The DefenseGAN toy: a linear generator ``G(z) = 0.5 + s U z`` with a rank-2 range in 16 pixels and
a linear classifier whose weight ``w = u + 4 v`` is mostly *orthogonal* to the range (``u ∈
range``, ``v ⊥ range``). The defended margin is ``u·(x - 0.5)`` (the projection removes ``v``), so
the smallest ℓ2 adversarial distance is ``|u·(x-0.5)|`` in closed form, and BPDA's identity
assumption (``∂G(z*)/∂x = I``) is badly wrong: its gradient is dominated by ``v``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax.attacks import _generative as ga
from robustjax.attacks import carlini_wagner_l2
from robustjax.defenses import make_abs_logits_fn
from robustjax.defenses import make_defensegan_logits_fn

P, D, N, SCALE = 16, 2, 12, 0.3


def _toy():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(P, D + 1)))
    u_basis, v = q[:, :D].astype(np.float32), q[:, D].astype(np.float32)
    u = u_basis[:, 0]
    w = u + 4.0 * v

    def gen(z):
        return (0.5 + SCALE * z @ u_basis.T).reshape(-1, 4, 4, 1)

    def clf(x):
        m = (x.reshape(x.shape[0], -1) - 0.5) @ w
        return jnp.stack([-m, m], -1)

    zc = rng.uniform(-1, 1, size=(N, D)).astype(np.float32)
    zc[:, 0] = np.sign(zc[:, 0]) * (0.5 + 0.5 * np.abs(zc[:, 0]))
    x = np.asarray(gen(zc))
    y = (zc[:, 0] > 0).astype(np.int32)
    min_l2 = np.abs((x.reshape(N, -1) - 0.5) @ u)  # closed-form smallest adversarial distance
    return gen, clf, x, y, min_l2


GEN, CLF, X, Y, MIN_L2 = _toy()
# Plain GD with step P/(2 s²)/2 on the pixel-mean loss: H = 2 s²/P · I, so it converges fast.
DKW = dict(latent_dim=D, restarts=1, steps=10, learning_rate=P / (2 * SCALE**2) * 0.5, momentum=0.0)
DKEY = jax.random.key(1)
EXACT = make_defensegan_logits_fn(CLF, GEN, DKEY, mode="bpda", **DKW)


def _l2(xa, x):
    return np.linalg.norm((np.asarray(xa) - np.asarray(x)).reshape(len(x), -1), axis=1)


def _fooled(logits_fn, xa, y):
    return np.asarray(logits_fn(jnp.asarray(xa))).argmax(-1) != y


def test_implicit_beats_bpda_on_low_rank_generator():
    assert np.all(np.asarray(EXACT(X)).argmax(-1) == Y)  # the toy defense is accurate
    res = {}
    for method in ("implicit", "bpda"):
        attack = ga.make_defensegan_attack(CLF, GEN, DKEY, method=method, defense_kwargs=DKW,
                                           attack_kwargs=dict(steps=40))
        xa = jax.jit(attack)(jax.random.key(0), X, Y)
        fooled = _fooled(EXACT, xa, Y)
        l2 = _l2(xa, X)
        np.testing.assert_array_equal(l2[~fooled], 0.0)  # failures returned unchanged
        res[method] = (fooled, l2)
    fooled_i, l2_i = res["implicit"]
    fooled_b, l2_b = res["bpda"]
    assert fooled_i.mean() >= fooled_b.mean()
    assert fooled_i.mean() >= 0.9
    # No attack beats the closed-form minimum; the implicit attack gets close to it.
    assert np.all(l2_i[fooled_i] >= MIN_L2[fooled_i] - 1e-4)
    assert np.median(l2_i[fooled_i]) <= 1.3 * np.median(MIN_L2) + 0.05
    # BPDA wastes most of its distortion off the generator's range.
    assert np.median(l2_i[fooled_i]) < 0.5 * np.median(l2_b[fooled_b])


def test_neumann_and_backtrack_attacks_succeed():
    for method in ("neumann", "backtrack"):
        attack = ga.make_defensegan_attack(
            CLF, GEN, DKEY, method=method,
            defense_kwargs=dict(DKW, backward_steps=10,
                                backward_learning_rate=DKW["learning_rate"] * 0.5),
            attack_kwargs=dict(steps=30, binary_search_steps=2))
        xa = jax.jit(attack)(jax.random.key(0), X[:6], Y[:6])
        fooled = _fooled(EXACT, xa, Y[:6])
        assert fooled.mean() >= 0.8, method
        assert np.median(_l2(xa, X[:6])[fooled]) <= 1.3 * np.median(MIN_L2[:6]) + 0.1, method


def _linear_clf():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(P,)).astype(np.float32)
    w /= np.linalg.norm(w)

    def clf(x):
        m = 3.0 * ((x.reshape(x.shape[0], -1) - 0.5) @ w)
        return jnp.stack([-m, m], -1)

    x = np.clip(0.5 + 0.15 * rng.normal(size=(N, P)), 0, 1).astype(np.float32)
    x = x.reshape(N, 4, 4, 1)
    y = (np.asarray(clf(x)).argmax(-1)).astype(np.int32)
    return clf, x, y, np.abs((x.reshape(N, -1) - 0.5) @ w)


LCLF, LX, LY, LMIN = _linear_clf()


def test_binary_search_returns_smallest_successful_distortion():
    kw = dict(steps=25, binary_search_steps=5, initial_const=1.0, max_step=0.02)
    run = jax.jit(functools.partial(ga.generative_cw_l2_with_info, LCLF, **kw))
    xa, info = run(jax.random.key(0), LX, LY)
    l2_per_const = np.asarray(info["l2"])  # [S, N]
    assert l2_per_const.shape == (5, N)
    best = np.min(l2_per_const, axis=0)
    l2 = _l2(xa, LX)
    found = np.isfinite(best)
    assert found.all()
    np.testing.assert_allclose(l2[found], best[found], rtol=1e-5, atol=1e-6)
    assert np.all(_fooled(LCLF, xa, LY))
    assert np.all(l2 >= LMIN - 1e-4)
    consts = np.asarray(info["const"])
    succ = np.asarray(info["success"])
    np.testing.assert_allclose(consts[0], 1.0)
    np.testing.assert_allclose(consts[1], np.where(succ[0], 0.5, 10.0))  # CW's search rule
    # Each tried λ, re-run alone (one binary-search step), gives the same per-λ distortion.
    for s in range(2):
        lam = float(consts[s, 0])
        same = consts[s] == lam
        _, info1 = ga.generative_cw_l2_with_info(LCLF, jax.random.key(0), LX, LY,
                                       **dict(kw, binary_search_steps=1, initial_const=lam))
        np.testing.assert_allclose(np.asarray(info1["l2"])[0][same], l2_per_const[s][same],
                                   rtol=1e-5)


def test_failed_examples_unchanged_and_verify_resets():
    xa = ga.generative_cw_l2(LCLF, jax.random.key(0), LX, LY, steps=1, max_step=1e-4,
                             binary_search_steps=1)
    np.testing.assert_array_equal(np.asarray(xa), LX)

    def never_fooled(x):  # predicts the true label always
        return jax.nn.one_hot(jnp.asarray(LY), 2) * 10.0

    xa, info = ga.generative_cw_l2_with_info(LCLF, jax.random.key(0), LX, LY, steps=20,
                                             binary_search_steps=1, verify_fn=never_fooled)
    np.testing.assert_array_equal(np.asarray(xa), LX)
    assert not np.asarray(info["verified"]).any()


def test_vmap_matches_batch_and_deterministic():
    f = functools.partial(ga.generative_cw_l2, LCLF, steps=10, binary_search_steps=2)
    xa = jax.jit(f)(jax.random.key(0), LX, LY)
    xv = jax.vmap(f, in_axes=(None, 0, 0))(
        jax.random.key(0), LX.reshape(3, 4, 4, 4, 1), LY.reshape(3, 4))
    np.testing.assert_allclose(np.asarray(xv).reshape(LX.shape), np.asarray(xa), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(jax.jit(f)(jax.random.key(0), LX, LY)),
                                  np.asarray(xa))


def test_nes_attack_reduces_accuracy_and_is_deterministic():
    f = jax.jit(functools.partial(ga.generative_nes_l2, LCLF, num_samples=20, sigma=0.1,
                                  steps=30, binary_search_steps=2, max_step=0.02))
    xa = f(jax.random.key(0), LX, LY)
    fooled = _fooled(LCLF, xa, LY)
    assert fooled.mean() >= 0.75
    l2 = _l2(xa, LX)
    assert np.all(l2[fooled] >= LMIN[fooled] - 1e-4)
    assert np.median(l2[fooled]) <= 2.5 * np.median(LMIN) + 0.05
    np.testing.assert_array_equal(np.asarray(f(jax.random.key(0), LX, LY)), np.asarray(xa))
    assert not np.array_equal(np.asarray(f(jax.random.key(1), LX, LY)), np.asarray(xa))


def _abs_toy():
    rng = np.random.default_rng(5)
    k = 3
    mus = rng.uniform(0.1, 0.9, size=(k, P)).astype(np.float32)
    a = (0.1 * rng.normal(size=(k, P, D))).astype(np.float32)

    def decoder(z):  # [K, M, d] -> [K, M, 4, 4, 1]
        out = mus[:, None, :] + jnp.einsum("kpd,kmd->kmp", a, z)
        return out.reshape(z.shape[:2] + (4, 4, 1))

    y = np.arange(9, dtype=np.int32) % k
    x = np.clip(mus[y] + 0.03 * rng.normal(size=(9, P)), 0, 1).astype(np.float32)
    return decoder, x.reshape(9, 4, 4, 1), y, k


def test_abs_latent_attack_finds_adversarials():
    decoder, x, y, k = _abs_toy()
    akw = dict(num_samples=32, steps=10, learning_rate=0.05)
    key = jax.random.key(2)
    model = make_abs_logits_fn(decoder, key, num_classes=k, latent_dim=D, mode="bpda", **akw)
    assert np.all(np.asarray(model(x)).argmax(-1) == y)
    attack = jax.jit(functools.partial(ga.abs_latent_attack_with_info, decoder, num_classes=k,
                                       latent_dim=D, abs_kwargs=akw))
    xa, info = attack(key, x, y)
    found = np.asarray(info["found"])
    assert found.all()
    assert np.all(_fooled(model, xa, y))
    alpha = np.asarray(info["alpha"])
    assert np.all((alpha > 0) & (alpha <= 1))
    # The bisection shrinks the step: distortion below the distance to the wrong prototype.
    l2 = _l2(xa, x)
    assert np.all(l2 > 0)
    xa2, _ = attack(key, x, y)
    np.testing.assert_array_equal(np.asarray(xa2), np.asarray(xa))


def test_advt_cw_matches_carlini_wagner():
    a = ga.advt_cw_l2(LCLF, jax.random.key(0), LX, LY, steps=20)
    b = carlini_wagner_l2(LCLF, jax.random.key(0), LX, LY, steps=20, binary_search_steps=5,
                          learning_rate=0.01, initial_const=1e-2)  # advt_cw_l2's settings
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _fooled(LCLF, a, LY).mean() >= 0.9


def test_step_size_schedule():
    t = np.arange(4)
    np.testing.assert_allclose(
        ga.step_size_schedule(t, steps=4, max_step=0.04), [0.01, 0.02, 0.03, 0.04], rtol=1e-6)
    np.testing.assert_allclose(
        ga.step_size_schedule(t, steps=4, max_step=0.04, schedule="decreasing"),
        [0.04, 0.03, 0.02, 0.01], rtol=1e-6)
    np.testing.assert_allclose(
        ga.step_size_schedule(2, steps=4, max_step=0.04, schedule="constant"), 0.04)


@pytest.mark.parametrize("kwargs, name", [
    (dict(schedule="cosine"), "schedule"),
    (dict(steps=0), "steps"),
    (dict(binary_search_steps=0), "binary_search_steps"),
    (dict(max_step=-1.0), "max_step"),
])
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ga.generative_cw_l2(LCLF, jax.random.key(0), LX, LY, **kwargs)


def test_bad_method_and_nes_samples_raise():
    with pytest.raises(ValueError, match="method"):
        ga.make_defensegan_attack(CLF, GEN, DKEY, method="fgsm", defense_kwargs=DKW)
    with pytest.raises(ValueError, match="num_samples"):
        ga.generative_nes_l2(LCLF, jax.random.key(0), LX, LY, num_samples=3)
