"""End-to-end smoke test of ``experiments/llr.py`` and unit tests of the F.1 protocol."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax.evaluation import _protocols

from _common import load_module as _load

_HERE = os.path.dirname(os.path.abspath(__file__))


PNG = b"\x89PNG\r\n\x1a\n"


def test_adam_step_schedule_matches_paper():
    f = _protocols.adam_step_schedule(steps=200)
    got = [float(f(t)) for t in (0, 99, 100, 149, 150, 199)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)
    g = _protocols.adam_step_schedule(steps=8)  # boundaries scale with the step count
    np.testing.assert_allclose([float(g(t)) for t in (3, 4, 5, 6, 7)],
                               [0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)
    with pytest.raises(ValueError, match="step_sizes"):
        _protocols.adam_step_schedule(step_sizes=(0.1, 0.01))
    with pytest.raises(ValueError, match="boundaries"):
        _protocols.adam_step_schedule(boundaries=(0.75, 0.5))


def test_protocol_attacks_linear_model():
    """On a linear model the optimal ℓ∞ attack is closed form: x − ε·sign(w_y − w_j)."""
    w = jnp.array([[1.0, -1.0, 0.5], [-0.5, 1.0, -1.0], [0.3, 0.2, 1.0], [0.0, -0.4, 0.7]])

    def logits_fn(x):
        return x.reshape(x.shape[0], -1) @ w

    key = jax.random.key(0)
    x = jax.random.uniform(key, (6, 2, 2, 1), minval=0.3, maxval=0.7)
    y = jnp.argmax(logits_fn(x), -1)
    eps = 0.2
    suite = _protocols.llr_evaluation_attacks(
        logits_fn, eps=eps, steps=20, restarts=2, fgsm_steps=3, monitor_steps=5,
        multi_targeted_steps=20, box=None)
    assert list(suite) == ["FGSM", "FGSM-3", "PGD-5", "Untargeted", "Multi-Targeted"]
    logits = logits_fn(x)
    # Closed-form worst-case margin over all wrong classes.
    best = jnp.full((6,), jnp.inf)
    for j in range(3):
        dw = w[:, y] - w[:, j:j + 1].repeat(6, 1)  # [D, N]
        m = logits[jnp.arange(6), y] - logits[:, j] - eps * jnp.sum(jnp.abs(dw), 0)
        best = jnp.where(j == y, best, jnp.minimum(best, m))
    mt = jax.jit(suite["Multi-Targeted"])(key, x, y)
    assert float(jnp.max(jnp.abs(mt - x))) <= eps + 1e-6
    z = logits_fn(mt)
    margin = z[jnp.arange(6), y] - jnp.max(jnp.where(jax.nn.one_hot(y, 3) > 0, -jnp.inf, z), -1)
    np.testing.assert_allclose(margin, best, atol=1e-3)
    for name in ("FGSM", "Untargeted"):
        xa = jax.jit(suite[name])(key, x, y)
        assert xa.shape == x.shape
        assert float(jnp.max(jnp.abs(xa - x))) <= eps + 1e-6, name
        if name == "FGSM":  # one full sign step: a vertex of the ball
            np.testing.assert_allclose(jnp.abs(xa - x), eps, atol=1e-5)
        else:  # the ascent raised the loss of every example
            ce = lambda z: -jax.nn.log_softmax(logits_fn(z))[jnp.arange(6), y]  # noqa: E731
            assert bool(jnp.all(ce(xa) > ce(x) + 0.05))
    with pytest.raises(ValueError, match="include"):
        _protocols.llr_evaluation_attacks(logits_fn, eps=eps, include=("CW",))
    with pytest.raises(ValueError, match="success rate"):
        _protocols.llr_evaluation_attacks(logits_fn, eps=eps, include=("Random-Targeted",))
    with pytest.raises(ValueError, match="unroll"):
        _protocols.llr_evaluation_attacks(logits_fn, eps=eps, unroll=0)
    # unroll is a speed knob: a rolled loop gives the same Untargeted result
    rolled = _protocols.llr_evaluation_attacks(
        logits_fn, eps=eps, steps=20, restarts=2, include=("Untargeted",), box=None, unroll=1)
    np.testing.assert_allclose(jax.jit(rolled["Untargeted"])(key, x, y),
                               jax.jit(suite["Untargeted"])(key, x, y), atol=1e-5)


def test_random_targeted_is_a_success_rate():
    """Random-Targeted = fraction of examples driven to a random wrong class (Table F3).

    Reference: on a linear model z = x·W (box off), target t is reachable in the ℓ∞ ball iff the
    linear program max_δ min_{j≠t} (w_t − w_j)·(x + δ), |δ_i| ≤ ε has a positive optimum
    (scipy's HiGHS). The targeted CE of a linear model is convex in δ, so Adam PGD reaches
    the reachable targets; examples within 0.05 of the LP's threshold are not compared.
    """
    from scipy.optimize import linprog

    kw_ = jax.random.split(jax.random.key(3), 3)
    d, k, n = 12, 4, 48
    w = jax.random.normal(kw_[0], (d, k))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w  # noqa: E731
    x = jax.random.uniform(kw_[1], (n, d, 1, 1), minval=0.2, maxval=0.8)
    y = jnp.argmax(logits_fn(x), -1).astype(jnp.int32)  # all correct clean
    eps = 0.12
    key = jax.random.key(9)
    success, target = jax.jit(lambda k_, x_, y_: _protocols.random_targeted_success(
        logits_fn, k_, x_, y_, eps=eps, steps=30, restarts=2, box=None, unroll=1))(key, x, y)
    assert bool(jnp.all(target != y)) and bool(jnp.all((target >= 0) & (target < k)))
    # same targets and x_adv as robustjax.attacks.random_targeted with the same key
    from robustjax import attacks

    sched = _protocols.adam_step_schedule(steps=30)
    x_rt = attacks.random_targeted(logits_fn, key, x, y, eps=eps, steps=30, step_size=sched,
                                   step_rule="adam", restarts=2, box=None, unroll=1)
    np.testing.assert_array_equal(np.asarray(jnp.argmax(logits_fn(x_rt), -1) == target),
                                  np.asarray(success))
    wn, xn, tn = np.asarray(w, np.float64), np.asarray(x, np.float64).reshape(n, d), \
        np.asarray(target)
    compared = 0
    for i in range(n):
        others = [j for j in range(k) if j != tn[i]]
        a = np.stack([wn[:, tn[i]] - wn[:, j] for j in others])  # [K-1, D]
        # variables (δ, s): maximise s s.t. s − a_j·δ ≤ a_j·x
        c = np.zeros(d + 1)
        c[-1] = -1.0
        res = linprog(c, A_ub=np.hstack([-a, np.ones((k - 1, 1))]), b_ub=a @ xn[i],
                      bounds=[(-eps, eps)] * d + [(None, None)], method="highs")
        s_opt = -res.fun
        if abs(s_opt) < 0.05:
            continue
        compared += 1
        assert bool(success[i]) == (s_opt > 0), (i, s_opt)
    assert compared >= 30
    rate = float(jnp.mean(success))
    assert 0.1 < rate < 0.9  # both outcomes occur, so the comparison has teeth
    # A success is a misclassification, but not every misclassification is a success: the
    # success rate is at most the untargeted error rate, and reading it as an accuracy
    # (1 − rate) would overstate robustness.
    x_un = attacks.pgd(logits_fn, key, x, y, eps=eps, steps=30, step_size=sched,
                       step_rule="adam", restarts=2, box=None, unroll=1)
    err = float(jnp.mean(jnp.argmax(logits_fn(x_un), -1) != y))
    assert rate <= err + 1e-9 and 1.0 - rate > 1.0 - err
    # The dataset driver: batches (with a padded last batch) and a Wilson interval.
    res = _protocols.random_targeted_success_rate(
        logits_fn, key, np.asarray(x), np.asarray(y), eps=eps, steps=30, restarts=2,
        box=None, batch_size=20, unroll=1)
    assert res.n == n and res.successes == int(res.success.sum())
    assert res.interval[0] <= res.success_rate <= res.interval[1]
    assert bool(np.all(res.targets != np.asarray(y)))
    assert 0.1 < res.success_rate < 0.9
    zero = _protocols.random_targeted_success_rate(
        logits_fn, key, np.asarray(x), np.asarray(y), eps=0.0, steps=5, restarts=1,
        box=None, batch_size=48, unroll=1)
    assert zero.successes == 0  # no perturbation: every example stays at its (true) class


def test_smoke_end_to_end(tmp_path):
    config = _load("llr_config", os.path.join(_HERE, "configs", "llr.py")).get_config("smoke")
    llr = _load("llr_main", os.path.join(_HERE, "llr.py"))
    res = llr.train_and_evaluate(config, str(tmp_path))
    names = list(res["models"])
    assert names[:3] == ["LLR-1", "TRADES-1", "ADV-1"]
    for name, m in res["models"].items():
        assert 0.0 <= m["nominal"] <= 1.0
        for attack, acc in m["robust_accuracy"].items():
            assert 0.0 <= acc <= m["nominal"] + 1e-9, (name, attack)
        ra = m["robust_accuracy"]
        assert ra["Multi-Targeted"] <= ra["Untargeted"] + 0.25
        assert m["gamma_mean"] >= 0.0 and np.isfinite(m["gamma_mean"])
        lo, hi = m["loss_surface_range"]
        assert 0.0 <= lo <= hi and np.isfinite(hi)
        with open(tmp_path / f"loss_surface_{name}.png", "rb") as f:
            assert f.read(8) == PNG
    with open(tmp_path / "gamma_histogram.png", "rb") as f:
        assert f.read(8) == PNG
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["models"].keys() == res["models"].keys()
    table = (tmp_path / "table.md").read_text()
    assert ("| Methods | PGD steps | Nominal | Untargeted | Multi-Targeted | "
            "Random-Targeted success rate (↓) |") in table
    for m in res["models"].values():  # a success rate, with its Wilson interval
        lo, hi = m["random_targeted_wilson95"]
        assert lo <= m["random_targeted_success_rate"] <= hi
        assert m["wilson95"]["Nominal"][0] <= m["nominal"] <= m["wilson95"]["Nominal"][1]
    with open(tmp_path / "training_curves.png", "rb") as f:
        assert f.read(8) == PNG
    assert "Table F4" in table and "| ADV-1 |" in table and "| LLR-1 |" in table


def test_configs_follow_the_paper_columns():
    """ImageNet (Table F3): Untargeted accuracy + Random-Targeted success rate, no
    Multi-Targeted (999 targets per image); the obfuscation/repro run: the Table F4 columns."""
    cfg = _load("llr_config_cols", os.path.join(_HERE, "configs", "llr.py"))
    imagenet = cfg.get_config("imagenet")
    assert "Multi-Targeted" not in imagenet.eval_attacks
    assert set(imagenet.eval_attacks) == {"Untargeted", "Random-Targeted"}
    for variant in ("obfuscation", "repro"):
        c = cfg.get_config(variant)
        assert {"FGSM", "FGSM-20", "Untargeted", "Multi-Targeted"} <= set(c.eval_attacks)
        assert c.num_train == 10000 and c.num_test == 1000 and c.eps == 0.3
        assert c.eps_ramp_epochs > 0 and c.inner_step_size >= 3 * c.eps
        assert tuple(c.obfuscation_steps) == (1, 2) and not c.main_table
        assert not c.obfuscation_trades_steps and not c.reference_adv  # the 20-minute budget
    plus, repro = cfg.get_config("obfuscation_plus"), cfg.get_config("repro")
    # The extended run differs only by its two extra rows (and their note): the four F4 rows
    # are the repro's, trained with the same keys.
    differ = {k for k in repro.keys() if repro[k] != plus[k]}
    assert differ == {"obfuscation_trades_steps", "trades_step_size", "reference_adv",
                      "table_note"}, differ
    assert cfg.get_config("cifar10").llr_mu == 0.5  # Tables F2/F3, not F.2's text
    with pytest.raises(ValueError, match="variant"):
        cfg.get_config("nope")


def test_multi_targeted_on_untargeted_survivors():
    """``eval_mt_on_survivors``: Multi-Targeted only where Untargeted failed; the column is the
    worst case of the two attacks, per digit (linear model: both attacks reach their optima,
    so the per-digit outcome does not depend on the start or the batching)."""
    from robustjax import evaluation

    llr = _load("llr_main_mt", os.path.join(_HERE, "llr.py"))
    kw_ = jax.random.split(jax.random.key(5), 2)
    d, k, n = 16, 4, 64
    w = jax.random.normal(kw_[0], (d, k))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w  # noqa: E731
    x = np.asarray(jax.random.uniform(kw_[1], (n, d, 1, 1), minval=0.2, maxval=0.8))
    y = np.asarray(jnp.argmax(logits_fn(x), -1)).astype(np.int32)
    suite = _protocols.llr_evaluation_attacks(
        logits_fn, eps=0.06, steps=30, restarts=1, multi_targeted_steps=30,
        include=("Untargeted", "Multi-Targeted"), box=None, unroll=1)
    key = jax.random.key(0)
    full = evaluation.robustness_report(logits_fn, x, y, suite, key=key, batch_size=n,
                                        progress=False)
    part = evaluation.robustness_report(logits_fn, x, y, {"Untargeted": suite["Untargeted"]},
                                        key=key, batch_size=n, progress=False)

    class _Data:
        images, labels = x, y

    class _Cfg:
        eval_batch_size, progress = 16, False

    got = llr._mt_on_survivors(logits_fn, part, suite, _Data, key, _Cfg, "lin")
    un = full.robust_correct["Untargeted"]
    want = un & full.robust_correct["Multi-Targeted"]
    assert 0 < un.sum() < n and want.sum() < un.sum()  # both attacks matter here
    np.testing.assert_array_equal(got.robust_correct["Multi-Targeted"], want)
    assert float(np.max(got.linf["Multi-Targeted"])) <= 0.06 + 1e-6


def test_optional_f4_rows_keep_the_four_models_and_use_their_own_step():
    """``obfuscation_trades_steps`` / ``reference_adv`` add rows after ADV-k and LLR-k (so the
    four models keep their training keys, ``fold_in(key, index)``), and a reference row's
    objective is ADV-k with its own step size, not the config's."""
    import flax.linen as nn
    import optax

    from robustjax.training import TrainState, _llr

    cfg_mod = _load("llr_config_rows", os.path.join(_HERE, "configs", "llr.py"))
    llr = _load("llr_main_rows", os.path.join(_HERE, "llr.py"))
    four = llr._runs(cfg_mod.get_config("repro"))
    config = cfg_mod.get_config("obfuscation_plus")
    runs = llr._runs(config)
    assert list(runs)[:4] == list(four) == ["ADV-1", "ADV-2", "LLR-1", "LLR-2"]
    assert runs["TRADES-2"] == ("trades", 2, None)
    assert runs["ADV-10@0.1"] == ("adv", 10, 0.1)
    assert list(runs) == ["ADV-1", "ADV-2", "LLR-1", "LLR-2", "TRADES-2", "ADV-10@0.1"]
    assert llr._row_label(config, "ADV-10@0.1", runs["ADV-10@0.1"]) == (
        "ADV-10, steps of 0.1 (reference)")
    assert llr._row_label(config, "ADV-2", runs["ADV-2"]) == "ADV-2"

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(3)(nn.softplus(nn.Dense(8)(x.reshape(x.shape[0], -1))))

    kx, ky = jax.random.split(jax.random.key(3))
    batch = {"image": jax.random.uniform(kx, (12, 4, 4, 1)),
             "label": jax.random.randint(ky, (12,), 0, 3)}
    v = Tiny().init(jax.random.key(1), batch["image"][:1])
    st = TrainState.create(apply_fn=Tiny().apply, params=v["params"], tx=optax.sgd(0.1),
                           batch_stats={})
    config.eps_ramp_epochs = 0.0  # a constant ε: the objectives below see the full ball
    key = jax.random.key(0)

    def loss(obj):
        return float(jax.jit(obj)(st.params, st, batch, key)[0])

    ref = loss(_llr.adv_k_objective(steps=3, eps=config.eps, step_size=0.1, step_rule="adam"))
    big = loss(_llr.adv_k_objective(steps=3, eps=config.eps, step_size=1.0, step_rule="adam"))
    assert abs(ref - big) > 1e-4  # the step size changes the objective: the check has teeth
    assert loss(llr._objective(config, "adv", 3, 100, 0.1)) == pytest.approx(ref, rel=1e-5)
    assert loss(llr._objective(config, "adv", 3, 100)) == pytest.approx(big, rel=1e-5)
    trades = loss(_llr.trades_objective(beta=config.trades_beta, eps=config.eps, steps=2,
                                        step_size=config.trades_step_size))
    assert loss(llr._objective(config, *runs["TRADES-2"][:2], 100)) == pytest.approx(
        trades, rel=1e-5)
