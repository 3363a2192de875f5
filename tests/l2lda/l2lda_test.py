import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax.attacks._l2l import (l2l_attack, l2l_perturbation, l2l_perturbation_steps,
                                    l2l_recurrence, normalize_gradient)
from robustjax.losses._diversity import mode_seeking_diversity
from robustjax.models._l2l import L2LGenerator, L2LGeneratorTiny
from robustjax.training._l2lda import create_l2lda_state, l2lda_generator_fn, make_l2lda_step


class _TinyClf(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (5, 5), (2, 2))(x))
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _mnist(n, split="train", offset=0):
    import importlib.resources as ir
    with ir.files("robustjax.data").joinpath("_embedded/mnist_12k.npz").open("rb") as f:
        d = np.load(f)
        x = d[f"{split}_images"][offset:offset + n].astype(np.float32)[..., None] / 255.0
        y = d[f"{split}_labels"][offset:offset + n].astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


def _gen_vars(gen, n=4, hw=28, key=0):
    x = jnp.zeros((n, hw, hw, 1))
    return gen.init(jax.random.key(key), x, x, x, jnp.zeros((n, gen.latent_dim)),
                    jnp.zeros((n,), jnp.int32))


def test_generator_shapes_and_range():
    gen = L2LGeneratorTiny()
    v = _gen_vars(gen)
    x, _ = _mnist(4)
    z = jax.random.normal(jax.random.key(1), (4, gen.latent_dim))
    out = jax.jit(functools.partial(gen.apply, train=False))(v, x, x * 0, x, z,
                                                              jnp.arange(4, dtype=jnp.int32))
    assert out.shape == x.shape
    assert float(jnp.max(jnp.abs(out))) <= 1.0
    full = L2LGenerator()
    shapes = jax.eval_shape(lambda: _gen_vars(full, n=2, hw=32))
    assert shapes["params"]["conv3"]["kernel"].shape == (4, 4, 64 + 8, 128)
    with pytest.raises(ValueError, match="divisible by 4"):
        _gen_vars(gen, hw=30)


def test_label_enters_only_through_condbn():
    gen = L2LGeneratorTiny()
    v = _gen_vars(gen)
    x, _ = _mnist(4)
    z = jax.random.normal(jax.random.key(2), (4, gen.latent_dim))
    g = jax.random.normal(jax.random.key(3), x.shape)

    def run(variables, label):
        y = jnp.full((4,), label, jnp.int32)
        return gen.apply(variables, x, 0.1 * g, g, z, y, train=False)

    # Identical CondBN rows for every class: the label cannot matter.
    np.testing.assert_allclose(run(v, 1), run(v, 7), atol=1e-6)
    # Change class 3's row of one CondBN table: only label 3 changes.
    params = jax.tree_util.tree_map(lambda a: a, v["params"])
    params["cbn2"]["gamma"] = params["cbn2"]["gamma"].at[3].set(2.5)
    v2 = {**v, "params": params}
    np.testing.assert_allclose(run(v2, 1), run(v, 1), atol=1e-6)
    assert float(jnp.max(jnp.abs(run(v2, 3) - run(v, 3)))) > 1e-3


def test_normalize_gradient_unit_frobenius():
    g = jax.random.normal(jax.random.key(0), (3, 5, 5, 2))
    n = normalize_gradient(g)
    np.testing.assert_allclose(jnp.sqrt(jnp.sum(n ** 2, axis=(1, 2))), 1.0, atol=1e-5)


@pytest.mark.parametrize("const", [1.0, -1.0, 0.3])
def test_recurrent_attack_stays_in_ball_and_box(const):
    x, y = _mnist(8)
    clf = _TinyClf()
    cv = clf.init(jax.random.key(0), x)
    logits_fn = lambda v: clf.apply(cv, v)  # noqa: E731
    gen_fn = lambda xx, d, g, z, yy: jnp.full_like(xx, const) + g  # noqa: E731
    z = jnp.zeros((8, 2))
    eps = 0.3
    traj = l2l_perturbation_steps(gen_fn, logits_fn, x, y, z, eps=eps, steps=4,
                                  step_fraction=0.5)
    delta = l2l_perturbation(gen_fn, logits_fn, x, y, z, eps=eps, steps=4, step_fraction=0.5)
    np.testing.assert_allclose(traj[-1], delta, atol=1e-6)
    assert traj.shape == (4,) + x.shape
    assert float(jnp.max(jnp.abs(traj))) <= eps + 1e-6
    adv = x + traj
    assert float(adv.min()) >= -1e-6 and float(adv.max()) <= 1 + 1e-6
    if const == 1.0:  # saturates at the box-clipped ε boundary (gradient step ≤ 1 per pixel)
        expect = jnp.clip(x + eps, 0, 1) - x
        np.testing.assert_allclose(delta, expect, atol=1e-5)


def test_l2l_attack_deterministic_and_jittable():
    x, y = _mnist(4)
    clf = _TinyClf()
    cv = clf.init(jax.random.key(0), x)
    gen = L2LGeneratorTiny()
    gv = _gen_vars(gen)
    attack = functools.partial(l2l_attack, generator_fn=l2lda_generator_fn(gen.apply, gv),
                               eps=0.3, latent_dim=gen.latent_dim, steps=3)
    logits_fn = lambda v: clf.apply(cv, v)  # noqa: E731
    a = attack(logits_fn, jax.random.key(5), x, y)
    b = jax.jit(attack, static_argnums=0)(logits_fn, jax.random.key(5), x, y)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert float(jnp.max(jnp.abs(a - x))) <= 0.3 + 1e-6


def test_mode_seeking_diversity_matches_numpy():
    rng = np.random.default_rng(0)
    d1, d2 = rng.normal(size=(2, 3, 4, 4, 1)).astype(np.float32)
    z1, z2 = rng.normal(size=(2, 3, 8)).astype(np.float32)
    # Default "sum": ratio of l1 norms (an explicit loop over elements as the reference).
    ref = np.array([sum(abs(float(a) - float(b)) for a, b in zip(d1[i].ravel(), d2[i].ravel()))
                    / (sum(abs(float(a) - float(b)) for a, b in zip(z1[i], z2[i])) + 1e-5)
                    for i in range(3)])
    np.testing.assert_allclose(mode_seeking_diversity(d1, d2, z1, z2), ref, rtol=1e-5)
    # "mean": the mode-seeking GAN's per-element form, D/d = 16/8 times smaller here.
    ref_mean = (np.abs(d1 - d2).reshape(3, -1).mean(-1) / (np.abs(z1 - z2).mean(-1) + 1e-5))
    np.testing.assert_allclose(mode_seeking_diversity(d1, d2, z1, z2, reduction="mean"),
                               ref_mean, rtol=1e-5)
    np.testing.assert_allclose(ref / ref_mean, 16 / 8, rtol=1e-4)
    np.testing.assert_allclose(mode_seeking_diversity(d1, d1, z1, z2), 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="`delta1`"):
        mode_seeking_diversity(d1, d2[:2], z1, z2)
    with pytest.raises(ValueError, match="`reduction`"):
        mode_seeking_diversity(d1, d2, z1, z2, reduction="max")


_STEP_CACHE = {}


def _train(lambda_div, steps, x, y):
    clf, gen = _TinyClf(), L2LGeneratorTiny()
    state = create_l2lda_state(clf, gen, jax.random.key(0), (16, 28, 28, 1),
                               clf_tx=optax.adam(1e-3), gen_tx=optax.adam(1e-3))
    if "step" not in _STEP_CACHE:  # λ is a traced argument: one compile for every λ
        _STEP_CACHE["step"] = jax.jit(make_l2lda_step(eps=0.3, lambda_div=0.0, steps=3,
                                                      latent_dim=gen.latent_dim))
    step = _STEP_CACHE["step"]
    lam = jnp.float32(lambda_div)
    metrics = []
    for i in range(steps):
        sl = slice((16 * i) % 256, (16 * i) % 256 + 16)
        state, m = step(state, {"image": x[sl], "label": y[sl]}, jax.random.key(100 + i), lam)
        metrics.append(m)
    return state, gen, jax.device_get(metrics)


def _eval_diversity(gen, gvars, cvars, xt, yt):
    """Mode-seeking diversity of two fixed code sets and the mean |δ₁ − δ₂|, with the
    variables as jit arguments (one compile for every trained pair)."""
    if "eval" not in _STEP_CACHE:
        def run(gvars, cvars):
            logits_fn = lambda v: _TinyClf().apply(cvars, v)  # noqa: E731
            gfn = l2lda_generator_fn(gen.apply, gvars)
            n = xt.shape[0]
            z1 = jax.random.normal(jax.random.key(1), (n, gen.latent_dim))
            z2 = jax.random.normal(jax.random.key(2), (n, gen.latent_dim))
            d = l2l_perturbation(gfn, logits_fn, jnp.concatenate([xt, xt]),
                                 jnp.concatenate([yt, yt]), jnp.concatenate([z1, z2]),
                                 eps=0.3, steps=3)  # eval-mode BN: rows independent
            d1, d2 = d[:n], d[n:]
            return (jnp.mean(mode_seeking_diversity(d1, d2, z1, z2)),
                    jnp.mean(jnp.abs(d1 - d2)))
        _STEP_CACHE["eval"] = jax.jit(run)
    return _STEP_CACHE["eval"](gvars, cvars)


@pytest.mark.slow
def test_training_diversity_and_attack_strength():
    x, y = _mnist(256)
    xt, yt = _mnist(64, "test")
    results = {}
    for lam in (0.0, 1.0):
        state, gen, metrics = _train(lam, 20, x, y)
        assert all(np.isfinite(m["clf_loss"]) for m in metrics)
        gvars = {"params": state.gen_params, "batch_stats": state.gen_batch_stats}
        cvars = {"params": state.clf_params, "batch_stats": state.clf_batch_stats}
        div, dist = _eval_diversity(gen, gvars, cvars, xt, yt)
        results[lam] = float(div)
        assert float(dist) > 0  # different codes, different attacks
    assert results[1.0] > results[0.0], results

def _small_batch(n=6, hw=8, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(0.05, 0.95, size=(n, hw, hw, 1)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, size=n).astype(np.int32))
    return x, y


def test_fused_step_matches_reference_formulation():
    # Reference: the textbook formulation (generator gradient of -(CE + λ·div) through the
    # whole recurrence with every classifier gradient recomputed on the 2N rows, then a separate
    # classifier step on the stop-gradient examples). The step fuses the two classifier passes
    # and shares the first gradient; with train-mode BN in both networks the results agree.
    x, y = _small_batch()
    clf, gen = _TinyClf(), L2LGeneratorTiny(latent_dim=2)
    state = create_l2lda_state(clf, gen, jax.random.key(0), x.shape, clf_tx=optax.sgd(0.5),
                               gen_tx=optax.sgd(0.5))
    key, lam, n = jax.random.key(3), 0.7, x.shape[0]
    new, m = jax.jit(make_l2lda_step(eps=0.3, lambda_div=lam, steps=3, latent_dim=2))(
        state, {"image": x, "label": y}, key)

    x2, y2 = jnp.concatenate([x, x]), jnp.concatenate([y, y])
    z = jax.random.normal(key, (2 * n, 2))

    def clf_fwd(cp, v):
        out, upd = clf.apply({"params": cp, "batch_stats": state.clf_batch_stats}, v,
                             train=True, mutable=["batch_stats"])
        return out, upd["batch_stats"]

    def ce(logits):
        return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(2 * n), y2])

    def gen_loss(gp):
        def gfn(gbs, xx, d, g, zz, yy):
            out, upd = gen.apply({"params": gp, "batch_stats": gbs}, xx, d, g, zz, yy,
                                 train=True, mutable=["batch_stats"])
            return out, upd["batch_stats"]
        out = l2l_recurrence(gfn, lambda v: clf_fwd(state.clf_params, v)[0], x2, y2,
                             z, eps=0.3, steps=3, generator_state=state.gen_batch_stats)
        delta, gbs = out.delta, out.generator_state
        div = jnp.mean(mode_seeking_diversity(delta[:n], delta[n:], z[:n], z[n:]))
        return -(ce(clf_fwd(state.clf_params, x2 + delta)[0]) + lam * div), (delta, gbs)

    (gl, (delta, gbs)), gg = jax.jit(jax.value_and_grad(gen_loss, has_aux=True))(
        state.gen_params)
    cg = jax.grad(lambda cp: ce(clf_fwd(cp, x2 + delta)[0]))(state.clf_params)
    np.testing.assert_allclose(m["gen_loss"], gl, rtol=1e-4)
    for got, p0, g in zip(jax.tree_util.tree_leaves(new.gen_params),
                          jax.tree_util.tree_leaves(state.gen_params),
                          jax.tree_util.tree_leaves(gg)):
        np.testing.assert_allclose(got, p0 - 0.5 * g, atol=2e-5)
    for got, p0, g in zip(jax.tree_util.tree_leaves(new.clf_params),
                          jax.tree_util.tree_leaves(state.clf_params),
                          jax.tree_util.tree_leaves(cg)):
        np.testing.assert_allclose(got, p0 - 0.5 * g, atol=2e-5)
    for a, b in zip(jax.tree_util.tree_leaves(new.gen_batch_stats),
                    jax.tree_util.tree_leaves(gbs)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert float(jnp.max(jnp.abs(gg["conv1"]["kernel"]))) > 0


def test_initial_grad_and_truncated_backprop():
    x, y = _small_batch()
    clf = _TinyClf()
    cv = clf.init(jax.random.key(0), x)
    logits_fn = lambda v: clf.apply(cv, v)  # noqa: E731
    z = jax.random.normal(jax.random.key(1), (x.shape[0], 2))

    def gen_fn(w):
        return lambda xx, d, g, zz, yy: jnp.tanh(w[0] * g + w[1] * d / 0.3 + w[2] * zz[:, :1,
                                                                                     None, None])

    w = jnp.array([2.0, -0.5, 0.3])
    g0 = jax.grad(lambda v: jnp.sum(-jax.nn.log_softmax(logits_fn(v))[jnp.arange(6), y]))(x)
    a, ta, _ = l2l_recurrence(gen_fn(w), logits_fn, x, y, z, eps=0.3, steps=3)
    b, tb, _ = l2l_recurrence(gen_fn(w), logits_fn, x, y, z, eps=0.3, steps=3,
                              initial_grad=g0)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(ta, tb, atol=1e-6)
    tc = l2l_perturbation_steps(gen_fn(w), logits_fn, x, y, z, eps=0.3, steps=3,
                                unroll=False)  # lax.scan form
    np.testing.assert_allclose(tc, ta, atol=1e-6)

    def loss(w, **kw):
        return jnp.sum(l2l_perturbation(gen_fn(w), logits_fn, x, y, z, eps=0.3, steps=3,
                                        **kw) ** 2)

    def manual_truncated(w):  # two steps with frozen generator, then one differentiable step
        d = l2l_perturbation(gen_fn(jax.lax.stop_gradient(w)), logits_fn, x, y, z, eps=0.3,
                             steps=2)
        g = jax.grad(lambda v: jnp.sum(-jax.nn.log_softmax(logits_fn(v))[jnp.arange(6), y]))(
            x + d)
        from robustjax.attacks._l2l import normalize_gradient
        d = jnp.clip(d + 0.15 * gen_fn(w)(x, d, normalize_gradient(g), z, y), -0.3, 0.3)
        return jnp.sum((jnp.clip(x + d, 0, 1) - x) ** 2)

    full = jax.grad(loss)(w)
    np.testing.assert_allclose(jax.grad(functools.partial(loss, unroll=False))(w), full,
                               rtol=1e-5)
    np.testing.assert_allclose(jax.grad(functools.partial(loss, backprop_steps=3))(w), full,
                               rtol=1e-5)
    np.testing.assert_allclose(jax.grad(functools.partial(loss, backprop_steps=1,
                                                          initial_grad=g0))(w),
                               jax.grad(manual_truncated)(w), rtol=1e-4, atol=1e-6)
    assert float(jnp.max(jnp.abs(jax.grad(functools.partial(loss, backprop_steps=1))(w)
                                 - full))) > 1e-4
    with pytest.raises(ValueError, match="initial_grad"):
        l2l_perturbation(gen_fn(w), logits_fn, x, y, z, eps=0.3, initial_grad=g0[:2])


def test_cost_model_ratios():
    from robustjax.training._l2lda import l2lda_cost_model
    # PGD-10 = 23 F; L2L-DA = (4T + 4) F + (2T + 4B) G.
    c = l2lda_cost_model(steps=1, gen_over_clf=0.0)
    assert c["pgd_F"] == 23 and c["l2lda_F"] == 8
    c = l2lda_cost_model(steps=5, gen_over_clf=2.0, backprop_steps=1)
    assert c["l2lda_F"] == 24 + 14 * 2.0
    assert l2lda_cost_model(steps=2, gen_over_clf=133)["ratio"] > 1.5


def test_traced_eps_schedule_one_compile_and_matches_static_eps():
    # A traced eps ramp: one compile serves every step; at a schedule value equal to a static
    # eps the step equals the static-eps step (same program up to a constant; one step, no
    # chaotic amplification), and at eps = 0 the generated perturbation is exactly zero.
    from robustjax.training._l2l_baselines import make_l2l_star_step

    x, y = _small_batch()
    clf, gen = _TinyClf(), L2LGeneratorTiny(latent_dim=2)
    state = create_l2lda_state(clf, gen, jax.random.key(0), x.shape, clf_tx=optax.sgd(0.5),
                               gen_tx=optax.sgd(0.5))
    batch, key = {"image": x, "label": y}, jax.random.key(4)
    traces = []

    def schedule(count):
        traces.append(1)
        return optax.linear_schedule(0.0, 0.3, 10)(count)

    ramped = jax.jit(make_l2lda_step(eps=0.3, lambda_div=0.5, steps=2, latent_dim=2,
                                     eps_schedule=schedule))
    _, m0 = ramped(state, batch, key)
    s10, m10 = ramped(state.replace(step=jnp.asarray(10, jnp.int32)), batch, key)
    assert len(traces) == 1
    assert float(m0["eps"]) == 0.0 and float(m10["eps"]) == pytest.approx(0.3)
    assert float(m0["diversity"]) == 0.0           # delta == 0 for both codes
    static = jax.jit(make_l2lda_step(eps=0.3, lambda_div=0.5, steps=2, latent_dim=2))
    s_ref, m_ref = static(state, batch, key)
    for a, b in zip(jax.tree.leaves(s10.clf_params), jax.tree.leaves(s_ref.clf_params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m10["gen_ce"], m_ref["gen_ce"], rtol=1e-5)
    # L2L* forwards the schedule too.
    star = jax.jit(make_l2l_star_step(eps=0.3, latent_dim=2,
                                      eps_schedule=optax.linear_schedule(0.0, 0.3, 10)))
    _, ms = star(state, batch, key)
    assert float(ms["eps"]) == 0.0
    with pytest.raises(ValueError, match="eps_schedule"):
        make_l2lda_step(eps=0.3, lambda_div=0.0, eps_schedule=0.3)


def test_attack_time_batch_norm_reproduces_training_recurrence():
    # The attack column runs the generator with batch_norm="batch": per-step batch statistics,
    # as in training, so it reproduces the training perturbation for the same codes; eval mode
    # ("running": statistics pooled over all T steps by training) gives a different one.
    from robustjax.training._l2lda import l2lda_generator_loss

    x, y = _small_batch(n=8, hw=8)
    clf, gen = _TinyClf(), L2LGeneratorTiny(latent_dim=2)
    state = create_l2lda_state(clf, gen, jax.random.key(0), x.shape, clf_tx=optax.sgd(0.1),
                               gen_tx=optax.sgd(0.1))
    step = jax.jit(make_l2lda_step(eps=0.3, lambda_div=0.0, steps=3, latent_dim=2))
    for i in range(3):  # accumulate running statistics over the T steps
        state, _ = step(state, {"image": x, "label": y}, jax.random.key(10 + i))
    gvars = {"params": state.gen_params, "batch_stats": state.gen_batch_stats}
    cvars = {"params": state.clf_params, "batch_stats": state.clf_batch_stats}

    def clf_train(v):  # training's classifier view (train-mode BN, statistics discarded)
        return clf.apply(cvars, v, train=True, mutable=["batch_stats"])[0]

    key = jax.random.key(7)
    _, (delta_train, _, _, _, z) = l2lda_generator_loss(
        gen.apply, state.gen_params, state.gen_batch_stats, clf_train, key, x, y, eps=0.3,
        lambda_div=0.0, steps=3, step_fraction=0.5, latent_dim=2)
    x2, y2 = jnp.concatenate([x, x]), jnp.concatenate([y, y])
    kw = dict(eps=0.3, steps=3, step_fraction=0.5)
    d_batch = l2l_perturbation(l2lda_generator_fn(gen.apply, gvars), clf_train, x2, y2, z, **kw)
    d_run = l2l_perturbation(l2lda_generator_fn(gen.apply, gvars, batch_norm="running"),
                             clf_train, x2, y2, z, **kw)
    np.testing.assert_allclose(d_batch, delta_train, atol=1e-4)
    assert float(jnp.mean(jnp.abs(d_run - delta_train))) > 1e-3
    with pytest.raises(ValueError, match="batch_norm"):
        l2lda_generator_fn(gen.apply, gvars, batch_norm="train")
