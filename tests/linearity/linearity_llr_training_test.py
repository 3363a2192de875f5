"""Tests of the LLR / TRADES / ADV-k training objectives (robustjax.training._llr)."""

import inspect
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import linearity as L
from robustjax.linearity._measures import maximize_linearity_gap
from robustjax.losses import cross_entropy
from robustjax.training import _llr

try:  # the project's TrainState (flax TrainState + batch_stats)
    from robustjax.training._train_state import TrainState
except ImportError:  # pragma: no cover - stand-in while the training package is being built
    from flax.training import train_state

    class TrainState(train_state.TrainState):
        batch_stats: dict = None


BN_EPS = 1e-5


class TinyMLP(nn.Module):
    """Dense -> (BatchNorm) -> softplus -> Dense; BatchNorm acts on a linear map of the input."""

    batch_norm: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(8)(x)
        if self.batch_norm:
            x = nn.BatchNorm(use_running_average=not train, epsilon=BN_EPS)(x)
        return nn.Dense(3)(nn.softplus(x))


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), strides=(2, 2))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.Dense(3)(x)


def _state(model, x, tx=None):
    v = model.init(jax.random.key(1), x[:1], train=False)
    tx = tx or optax.sgd(0.1)
    return TrainState.create(apply_fn=model.apply, params=v["params"], tx=tx,
                             batch_stats=v.get("batch_stats", {}))


def _batch(n=12, key=0, hw=4):
    kx, ky = jax.random.split(jax.random.key(key))
    x = jax.random.uniform(kx, (n, hw, hw, 1))
    y = jax.random.randint(ky, (n,), 0, 3)
    return {"image": x, "label": y}


def _manual_logits(params, x, mean, var):
    """TinyMLP(batch_norm=True) by hand, normalising with the given statistics."""
    h = x.reshape(x.shape[0], -1) @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    bn = params["BatchNorm_0"]
    h = (h - mean) / jnp.sqrt(var + BN_EPS) * bn["scale"] + bn["bias"]
    return jax.nn.softplus(h) @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]


def _manual_stats(params, x):
    h = np.asarray(x.reshape(x.shape[0], -1) @ params["Dense_0"]["kernel"]
                   + params["Dense_0"]["bias"], np.float64)
    return jnp.asarray(h.mean(0), jnp.float32), jnp.asarray(h.var(0), jnp.float32)


def test_nominal_batch_stats_match_manual_and_train_mode():
    batch = _batch()
    st = _state(TinyMLP(), batch["image"])
    x = batch["image"]
    capture = jax.jit(lambda p, s, x: _llr.nominal_batch_stats(st.apply_fn, p, s, x))
    logits, new_stats, nominal = capture(st.params, st.batch_stats, x)
    mean, var = _manual_stats(st.params, x)
    np.testing.assert_allclose(nominal["BatchNorm_0"]["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nominal["BatchNorm_0"]["var"], var, rtol=1e-4, atol=1e-6)
    # fixed nominal statistics reproduce the train-mode forward on the nominal batch
    fixed = st.apply_fn({"params": st.params, "batch_stats": nominal}, x, train=False)
    np.testing.assert_allclose(fixed, logits, rtol=1e-6, atol=1e-6)
    ref_logits, upd = st.apply_fn({"params": st.params, "batch_stats": st.batch_stats}, x,
                                  train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(upd["batch_stats"])):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # CNN (4-D activations, reduction over N, H, W)
    st2 = _state(TinyCNN(), x)
    _, _, nom2 = _llr.nominal_batch_stats(st2.apply_fn, st2.params, st2.batch_stats, x)
    h = nn.Conv(4, (3, 3), strides=(2, 2)).apply({"params": st2.params["Conv_0"]}, x)
    np.testing.assert_allclose(nom2["BatchNorm_0"]["mean"], h.mean((0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(nom2["BatchNorm_0"]["var"], h.var((0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_bn_at_nominal_point_matters_and_is_used_by_llr():
    batch = _batch(n=16)
    x, y = batch["image"], batch["label"]
    st = _state(TinyMLP(), x)
    p = st.params
    mean, var = _manual_stats(p, x)
    # A constant shift of every pixel shifts each pre-BN feature by a per-feature constant: the
    # batch's own statistics cancel it exactly, the nominal statistics do not.
    shift = 0.2 * jnp.ones_like(x)
    own = st.apply_fn({"params": p, "batch_stats": st.batch_stats}, x + shift, train=True,
                      mutable=["batch_stats"])[0]
    clean = st.apply_fn({"params": p, "batch_stats": st.batch_stats}, x, train=True,
                        mutable=["batch_stats"])[0]
    np.testing.assert_allclose(own, clean, atol=1e-4)
    nominal_loss = lambda z: cross_entropy(_manual_logits(p, z, mean, var), y)
    assert float(jnp.min(L.linearity_gap(nominal_loss, x, shift, box=None))) > 0.0
    assert float(jnp.max(jnp.abs(_manual_logits(p, x + shift, mean, var) - clean))) > 1e-2

    # The LLR objective equals the hand-written reference at the nominal statistics ...
    kw = dict(eps=0.2, steps=3, step_size=0.05)
    obj = _llr.llr_objective(lambda_=4.0, mu=3.0, nominal_weight=2.0, box=None, **kw)
    key = jax.random.key(3)
    loss, (_, metrics) = jax.jit(obj)(p, st, batch, key)
    @jax.jit
    def reference(key):
        delta, _ = maximize_linearity_gap(nominal_loss, key, x, keep_best=False, **kw, box=None)
        return (delta,) + L.linearity_terms(nominal_loss, x, delta, box=None)

    delta, l0, lin, ld = reference(key)
    ref = jnp.mean(2.0 * l0 + 4.0 * jnp.abs(ld - l0 - lin) + 3.0 * jnp.abs(lin))
    np.testing.assert_allclose(loss, ref, rtol=1e-4)
    np.testing.assert_allclose(metrics["gamma"], jnp.mean(jnp.abs(ld - l0 - lin)), rtol=1e-4)
    # ... and differs from the variant where x + δ gets its own batch statistics.
    def own_stats_loss(z):
        zz = z.reshape(z.shape[0], -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
        return cross_entropy(_manual_logits(p, z, zz.mean(0), zz.var(0)), y)

    own_ld = own_stats_loss(x + delta)
    wrong = jnp.mean(2.0 * l0 + 4.0 * jnp.abs(own_ld - l0 - lin) + 3.0 * jnp.abs(lin))
    assert abs(float(wrong) - float(ref)) > 1e-3


@pytest.mark.parametrize("batch_norm", [True, False])
def test_objectives_reduce_to_standard_training(batch_norm):
    batch = _batch()
    x, y = batch["image"], batch["label"]
    st = _state(TinyMLP(batch_norm=batch_norm), x)
    if batch_norm:
        logits, upd = st.apply_fn({"params": st.params, "batch_stats": st.batch_stats}, x,
                                  train=True, mutable=["batch_stats"])
        ref_stats = upd["batch_stats"]
    else:
        logits, ref_stats = st.apply_fn({"params": st.params}, x, train=True), {}
    ce = jnp.mean(cross_entropy(logits, y))
    key = jax.random.key(0)
    objs = {
        "llr": _llr.llr_objective(eps=0.1, lambda_=0.0, mu=0.0, steps=2, step_size=0.1),
        "adv": _llr.adv_k_objective(steps=2, eps=0.0, step_size=0.1),
        "trades": _llr.trades_objective(beta=0.0, eps=0.1, steps=2, step_size=0.1),
    }
    for name, obj in objs.items():
        loss, (stats, metrics) = jax.jit(obj)(st.params, st, batch, key)
        np.testing.assert_allclose(loss, ce, rtol=1e-5, err_msg=name)
        if name != "trades":  # TRADES also updates the statistics with the adversarial batch
            for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(ref_stats)):
                np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)
        assert np.isfinite(float(metrics["loss"]))
    if batch_norm:
        return
    # TRADES with beta > 0 adds beta * KL at the adversarial point (>= 0)
    loss_t, (_, m) = jax.jit(_llr.trades_objective(beta=6.0, eps=0.1, steps=3,
                                                    step_size=0.03))(st.params, st, batch, key)
    np.testing.assert_allclose(loss_t, m["natural_loss"] + 6.0 * m["robust_kl"], rtol=1e-5)
    assert float(m["robust_kl"]) > 0.0
    # ADV-k: the attack increases the loss relative to the clean batch
    loss_a, _ = jax.jit(_llr.adv_k_objective(steps=5, eps=0.2, step_size=0.05))(
        st.params, st, batch, key)
    assert float(loss_a) > float(ce)


def test_eps_schedule_and_metrics():
    # The paper's ε ramp-up is optax.linear_schedule (training.eps_ramp was removed).
    sched = optax.linear_schedule(0.0, 0.3, 10)
    np.testing.assert_allclose([sched(0), sched(5), sched(10), sched(50)], [0, 0.15, 0.3, 0.3],
                               atol=1e-7)
    batch = _batch()
    st = _state(TinyMLP(), batch["image"])
    obj = _llr.llr_objective(eps=sched, lambda_=1.0, mu=1.0, steps=2, step_size=0.1)
    _, (_, m0) = jax.jit(obj)(st.params, st, batch, jax.random.key(0))
    assert float(m0["eps"]) == 0.0
    np.testing.assert_allclose(m0["gamma"], 0.0, atol=1e-6)  # eps = 0 at step 0
    assert "l2" not in m0  # weight decay belongs to the optimizer (fit / make_optimizer)
    _, (_, m5) = jax.jit(obj)(st.params, st.replace(step=5), batch, jax.random.key(0))
    np.testing.assert_allclose(m5["eps"], 0.15, rtol=1e-6)
    assert float(m5["gamma"]) > 0.0


def _train_step(objective):
    @jax.jit
    def step(state, batch, key):
        (loss, (stats, metrics)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, state, batch, key)
        return state.apply_gradients(grads=grads, batch_stats=stats), loss

    return step


@pytest.mark.parametrize("which,model", [
    ("llr", TinyCNN()), ("llr", TinyMLP(batch_norm=False)), ("trades", TinyMLP()),
    ("adv", TinyMLP()),
])
def test_objectives_train_under_jit(which, model):
    batch = _batch(hw=6)
    batch["index"] = jnp.arange(12, dtype=jnp.int32)  # per-example start keys
    st0 = _state(model, batch["image"])
    obj = {
        "llr": _llr.llr_objective(eps=0.1, lambda_=4.0, mu=3.0, steps=2, step_size=0.1),
        "trades": _llr.trades_objective(beta=6.0, eps=0.1, steps=2, step_size=0.03),
        "adv": _llr.adv_k_objective(steps=2, eps=0.1, step_size=0.03, step_rule="adam"),
    }[which]
    step = _train_step(obj)
    st = st0
    for i in range(2):
        st, loss = step(st, batch, jax.random.key(i))
        assert np.isfinite(float(loss))
    moved = max(float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(st.params), jax.tree.leaves(st0.params)))
    assert moved > 0.0
    if st0.batch_stats:
        changed = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                      zip(jax.tree.leaves(st.batch_stats), jax.tree.leaves(st0.batch_stats)))
        assert changed > 0.0


def test_objective_bad_arguments():
    with pytest.raises(ValueError, match="lambda_"):
        _llr.llr_objective(eps=0.1, lambda_=-1.0, mu=0.0, steps=1, step_size=0.1)
    with pytest.raises(ValueError, match="steps"):
        _llr.llr_objective(eps=0.1, lambda_=1.0, mu=0.0, steps=0, step_size=0.1)
    with pytest.raises(ValueError, match="eps"):
        _llr.adv_k_objective(steps=1, eps=-0.1, step_size=0.1)
    with pytest.raises(ValueError, match="steps"):
        _llr.adv_k_objective(steps=0, eps=0.1, step_size=0.1)
    with pytest.raises(ValueError, match="beta"):
        _llr.trades_objective(beta=-1.0, eps=0.1, steps=1, step_size=0.1)
    for make in (_llr.llr_objective, _llr.trades_objective, _llr.adv_k_objective):
        assert "weight_decay" not in inspect.signature(make).parameters
    obj = _llr.llr_objective(eps=0.1, lambda_=1.0, mu=0.0, steps=1, step_size=0.1)
    st = _state(TinyMLP(batch_norm=False), _batch()["image"])
    with pytest.raises(ValueError, match="batch"):
        obj(st.params, st, {"image": _batch()["image"]}, jax.random.key(0))


def _mnist(n_test=256):
    path = os.path.join(os.path.dirname(_llr.__file__), "..", "data", "_embedded",
                        "mnist_12k.npz")
    d = np.load(path)
    xtr = jnp.asarray(d["train_images"][..., None], jnp.float32) / 255.0
    ytr = jnp.asarray(d["train_labels"], jnp.int32)
    xte = jnp.asarray(d["test_images"][:n_test, ..., None], jnp.float32) / 255.0
    yte = jnp.asarray(d["test_labels"][:n_test], jnp.int32)
    return xtr, ytr, xte, yte


class SoftplusMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.softplus(nn.Dense(64)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(x)


def test_llr_training_lowers_test_gamma_on_mnist():
    """150 steps of standard vs LLR training (embedded MNIST): LLR's test-set γ is far lower."""
    xtr, ytr, xte, yte = _mnist()
    model = SoftplusMLP()
    eps = 0.1

    def train(objective, steps=150, bs=64):
        st = _state(model, xtr[:1], tx=optax.adam(1e-3))

        def step(st, i):
            idx = jax.random.randint(jax.random.fold_in(jax.random.key(1), i), (bs,), 0,
                                     xtr.shape[0])
            b = {"image": xtr[idx], "label": ytr[idx]}
            (_, (_, _)), g = jax.value_and_grad(objective, has_aux=True)(
                st.params, st, b, jax.random.fold_in(jax.random.key(2), i))
            return st.apply_gradients(grads=g), None

        return jax.jit(lambda st: jax.lax.scan(step, st, jnp.arange(steps))[0])(st)

    @jax.jit
    def evaluate(params, x, y):
        f = lambda z: model.apply({"params": params}, z)
        res = L.local_linearity(lambda z: cross_entropy(f(z), y), jax.random.key(5), x,
                                eps=eps, steps=10, step_size=0.025, box=(0.0, 1.0))
        return jnp.mean(res.gamma), jnp.mean(jnp.argmax(f(x), -1) == y)

    standard = train(_llr.llr_objective(eps=eps, lambda_=0.0, mu=0.0, steps=1,
                                        step_size=0.1))
    llr = train(_llr.llr_objective(eps=eps, lambda_=4.0, mu=3.0, steps=2, step_size=0.1))
    gamma_std, acc_std = evaluate(standard.params, xte, yte)
    gamma_llr, acc_llr = evaluate(llr.params, xte, yte)
    assert float(acc_std) > 0.8 and float(acc_llr) > 0.6  # both learned something
    assert float(gamma_llr) < 0.3 * float(gamma_std), (float(gamma_llr), float(gamma_std))


def _reference_llr_loss(params, st, batch, key, *, kw, lam, mu, w):
    """Eqn 8 written the straightforward way: ∇ₓℓ(x) by reverse mode inside the objective, so
    that jax.grad of it is reverse-over-reverse (independent of the objective's JVP path)."""
    x, y = batch["image"], batch["label"]
    stats = st.batch_stats
    if stats:
        _, _, stats = _llr.nominal_batch_stats(st.apply_fn, params, st.batch_stats, x)

    def loss_fn(p, s, z):
        v = {"params": p, "batch_stats": s} if s else {"params": p}
        return cross_entropy(st.apply_fn(v, z, train=False), y)

    frozen = lambda z: loss_fn(jax.lax.stop_gradient(params), jax.lax.stop_gradient(stats), z)
    delta, _ = maximize_linearity_gap(frozen, key, x, keep_best=False, box=(0.0, 1.0), **kw)
    lx = loss_fn(params, stats, x)
    gx = jax.grad(lambda z: jnp.sum(loss_fn(params, stats, z)))(x)
    d = jnp.sum((delta * gx).reshape(x.shape[0], -1), axis=-1)
    lxd = loss_fn(params, stats, x + delta)
    return jnp.mean(w * lx + lam * jnp.abs(lxd - lx - d) + mu * jnp.abs(d))


def test_llr_outer_gradient_equals_reverse_over_reverse():
    """Conv + batch norm (the statistics depend on θ too); no-BN models take a subset path."""
    batch = _batch(n=16, hw=6)
    st = _state(TinyCNN(), batch["image"])
    key = jax.random.key(7)
    kw = dict(eps=0.15, steps=2, step_size=0.05)
    obj = _llr.llr_objective(lambda_=4.0, mu=3.0, nominal_weight=2.0, **kw)
    loss, g = jax.jit(jax.value_and_grad(lambda p: obj(p, st, batch, key)[0]))(st.params)
    ref_fn = lambda p: _reference_llr_loss(p, st, batch, key, kw=kw, lam=4.0, mu=3.0, w=2.0)
    ref_loss, g_ref = jax.jit(jax.value_and_grad(ref_fn))(st.params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # The second-order term matters: stopping the gradient through ∇ₓℓ changes the result.
    def first_order_only(p):
        x, y = batch["image"], batch["label"]
        stats = st.batch_stats
        if stats:
            _, _, stats = _llr.nominal_batch_stats(st.apply_fn, p, st.batch_stats, x)
        f = lambda z: cross_entropy(st.apply_fn({"params": p, **({"batch_stats": stats}
                                                               if stats else {})}, z), y)
        fs = lambda z: cross_entropy(st.apply_fn(
            {"params": jax.lax.stop_gradient(p),
             **({"batch_stats": jax.lax.stop_gradient(stats)} if stats else {})}, z), y)
        delta, _ = maximize_linearity_gap(fs, key, x, keep_best=False, box=(0.0, 1.0), **kw)
        gx = jax.lax.stop_gradient(jax.grad(lambda z: jnp.sum(f(z)))(x))
        d = jnp.sum((delta * gx).reshape(x.shape[0], -1), axis=-1)
        lx, lxd = f(x), f(x + delta)
        return jnp.mean(2.0 * lx + 4.0 * jnp.abs(lxd - lx - d) + 3.0 * jnp.abs(d))

    g_fo = jax.jit(jax.grad(first_order_only))(st.params)
    diff = max(float(jnp.max(jnp.abs(a - b)))
               for a, b in zip(jax.tree.leaves(g_fo), jax.tree.leaves(g_ref)))
    assert diff > 1e-3


def test_unroll_changes_nothing_but_speed():
    batch = _batch(n=8, hw=6)
    st = _state(TinyMLP(batch_norm=False), batch["image"])
    key = jax.random.key(3)
    for make in (
        lambda u: _llr.llr_objective(eps=0.1, lambda_=4.0, mu=3.0, steps=3, step_size=0.1,
                                     unroll=u),
        lambda u: _llr.adv_k_objective(steps=3, eps=0.1, step_size=0.05, step_rule="adam",
                                       unroll=u),
    ):
        outs = [jax.jit(jax.value_and_grad(lambda p, o=make(u): o(p, st, batch, key)[0]))(
            st.params) for u in (1, True)]
        for loss, g in outs[1:]:
            np.testing.assert_allclose(loss, outs[0][0], rtol=1e-6)
            for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(outs[0][1])):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unroll"):
        _llr.llr_objective(eps=0.1, lambda_=1.0, mu=1.0, steps=2, step_size=0.1, unroll=0)
    with pytest.raises(ValueError, match="unroll"):
        _llr.adv_k_objective(steps=2, eps=0.1, step_size=0.1, unroll=-1)


def test_mu_default_is_the_tables_value():
    """μ = 0.5 (Tables F2/F3: F3's LLR row is F2's (λ, μ) = (4, 0.5) row), not F.2's μ = 3."""
    import inspect

    for fn in (_llr.llr_objective, L.llr_penalty):
        params = inspect.signature(fn).parameters
        assert params["mu"].default == 0.5, fn.__name__
        assert params["lambda_"].default == 4.0, fn.__name__
    assert "Table F2" in _llr.llr_objective.__doc__ and "μ = 3" in _llr.llr_objective.__doc__
    # The defaults are what the objective uses: same loss as passing (4, 0.5) explicitly, and a
    # different one from the μ = 3 of F.2's text.
    batch = _batch(n=8)
    st = _state(TinyMLP(batch_norm=False), batch["image"])
    key = jax.random.key(0)
    kw = dict(eps=0.2, steps=2, step_size=0.1, nominal_weight=2.0)
    run = lambda obj: jax.jit(obj)(st.params, st, batch, key)  # noqa: E731
    loss_d, (_, m) = run(_llr.llr_objective(**kw))
    loss_e, _ = run(_llr.llr_objective(lambda_=4.0, mu=0.5, **kw))
    loss_3, _ = run(_llr.llr_objective(lambda_=4.0, mu=3.0, **kw))
    np.testing.assert_allclose(loss_d, loss_e, rtol=1e-6)
    np.testing.assert_allclose(
        loss_d, 2.0 * m["nominal_loss"] + 4.0 * m["gamma"] + 0.5 * m["linear_term"], rtol=1e-5)
    assert float(m["linear_term"]) > 1e-3  # so μ actually matters here
    np.testing.assert_allclose(loss_3 - loss_d, 2.5 * m["linear_term"], rtol=1e-4)


# ADV-k values computed with the training module's own PGD loop before ADV-k moved onto
# robustjax.attacks.make_pgd (commit aa9d997): (batch_norm, step_rule, k) -> (loss, |grad|).
_ADV_K_PINNED = {
    (False, "sign", 2): (1.2300088, 0.5364060),
    (False, "adam", 2): (1.2800801, 0.5747308),
    (True, "sign", 2): (1.5181143, 0.9368144),
    (True, "adam", 2): (1.6553605, 1.0063422),
}


@pytest.mark.parametrize("batch_norm", [False, True])
def test_adv_k_on_shared_pgd_matches_previous_step(batch_norm):
    """ADV-k now runs the attack library's PGD; its training step is the one it was.

    Tolerance: the loss is a mean of 12 cross-entropies of O(1) and the gradient norm a sum
    over ~300 parameters, each a handful of float32 operations deep after two attack steps
    whose directions are signs (Adam's first steps are ≈ sign too) of gradients far from 0 on
    this smooth model; reordered float32 sums change them by ~1e-6 relative, so rtol = 1e-4
    leaves two orders of margin while any change of the iteration (start, step rule,
    projection, box, eval-mode attack) moves them by > 1e-2.
    """
    batch = _batch(n=12, key=4, hw=5)
    batch["index"] = jnp.arange(12, dtype=jnp.int32)
    st = _state(TinyMLP(batch_norm=batch_norm), batch["image"])
    for (bn, rule, k), (loss_ref, gnorm_ref) in _ADV_K_PINNED.items():
        if bn != batch_norm:
            continue
        obj = _llr.adv_k_objective(steps=k, eps=0.1, step_size=0.05 if rule == "sign" else 0.3,
                                   step_rule=rule)
        (loss, _), g = jax.jit(jax.value_and_grad(
            lambda p, o=obj: o(p, st, batch, jax.random.key(11)), has_aux=True))(st.params)
        gnorm = float(jnp.sqrt(sum(jnp.sum(a ** 2) for a in jax.tree.leaves(g))))
        np.testing.assert_allclose(float(loss), loss_ref, rtol=1e-4, err_msg=str((rule, k)))
        np.testing.assert_allclose(gnorm, gnorm_ref, rtol=1e-4, err_msg=str((rule, k)))
    # And the attack inside is robustjax.attacks.pgd's iteration: same x_adv from the same
    # start, so ADV-k trains on exactly the PGD the evaluation runs.
    from robustjax import attacks

    frozen = {"params": st.params, **({"batch_stats": st.batch_stats} if batch_norm else {})}
    f = lambda z: st.apply_fn(frozen, z, train=False)  # noqa: E731
    x, y = batch["image"], batch["label"]
    x_lib = attacks.pgd(f, jax.random.key(5), x, y, eps=0.1, steps=3, step_size=0.3,
                        step_rule="adam", random_start=False)
    x_ours = _llr._adv_example(f, x, y, x, eps=0.1, steps=3, step_size=0.3, norm="linf",
                               step_rule="adam", box=(0.0, 1.0))
    np.testing.assert_allclose(x_ours, x_lib, atol=1e-6)


def test_llr_lowers_gamma_relative_to_adv_k_at_equal_k():
    """Fig. F3 at toy scale: on embedded MNIST at ε = 0.3 (ramped), LLR-2 ends with a far lower
    test-set γ than ADV-2 trained for the same 300 steps with the same inner loop (2 Adam steps
    of 1.0 ≈ 3ε, the paper's large-step regime), not only lower than standard training.

    Measured (AMD EPYC, this seed): γ 0.068 (LLR-2, λ = 10, μ = 2, w = 2) vs 0.309 (ADV-2),
    ratio 0.22; clean accuracy 0.80 / 0.69 on the 128 digits. The asserted ratio 0.5 and the
    accuracy floors leave about 2× margin.
    """
    xtr, ytr, xte, yte = _mnist(n_test=128)
    model = SoftplusMLP()
    eps = optax.linear_schedule(0.0, 0.3, 100)

    def train(objective, steps=300, bs=64):
        st = _state(model, xtr[:1], tx=optax.adam(1e-3))

        def step(st, i):
            idx = jax.random.randint(jax.random.fold_in(jax.random.key(1), i), (bs,), 0,
                                     xtr.shape[0])
            b = {"image": xtr[idx], "label": ytr[idx]}
            g = jax.grad(lambda p: objective(p, st, b, jax.random.fold_in(jax.random.key(2),
                                                                          i))[0])(st.params)
            return st.apply_gradients(grads=g), None

        return jax.jit(lambda st: jax.lax.scan(step, st, jnp.arange(steps))[0])(st)

    @jax.jit
    def evaluate(params, x, y):
        f = lambda z: model.apply({"params": params}, z)  # noqa: E731
        res = L.local_linearity(lambda z: cross_entropy(f(z), y), jax.random.key(5), x,
                                eps=0.3, steps=20, step_size=0.1, box=(0.0, 1.0),
                                restarts=2, unroll=1)
        return jnp.mean(res.gamma), jnp.mean(jnp.argmax(f(x), -1) == y)

    adv = train(_llr.adv_k_objective(steps=2, eps=eps, step_size=1.0, step_rule="adam"))
    llr = train(_llr.llr_objective(eps=eps, lambda_=10.0, mu=2.0, steps=2, step_size=1.0,
                                   nominal_weight=2.0))
    gamma_adv, acc_adv = evaluate(adv.params, xte, yte)
    gamma_llr, acc_llr = evaluate(llr.params, xte, yte)
    assert float(acc_adv) > 0.4 and float(acc_llr) > 0.5, (float(acc_adv), float(acc_llr))
    assert float(gamma_llr) < 0.5 * float(gamma_adv), (float(gamma_llr), float(gamma_adv))
