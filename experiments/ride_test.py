"""Smoke test of the RIDE experiment (Tables 1-2, Figs. 5a/6/7) with the seconds-scale config."""

import json
import os

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from _common import load_module as _load

_HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def configs():
    return _load("ride_experiment_config", os.path.join(_HERE, "configs", "ride.py"))


@pytest.fixture(scope="module")
def exp():
    return _load("ride_experiment_main", os.path.join(_HERE, "ride.py"))


def test_configs_follow_the_paper(configs):
    for name, eps, step in (("mnist", 0.1, 0.02), ("cifar10", 0.05, 0.01),
                            ("imagenet", 0.05, 0.01)):
        c = configs.get_config(name)
        assert (c.ride.steps, c.ride.num_checkpoints) == (2000, 5)
        # sigma in [0, 1] units: the paper's 0.5 on ImageNet-normalized inputs.
        assert (c.ride.alpha, c.ride.sigma, c.ride.mask_ratio) == (0.9, 0.113, 0.9)
        assert (c.ride.learning_rate, c.ride.weight_decay) == (1e-4, 1e-4)
        assert (c.bpda_eps, c.bpda_step_size, c.bpda_steps) == (eps, step, 10)
        assert c.fcn == name
    assert configs.get_config("imagenet").gray_eps == 0.015  # FGSM step 0.015 (ablation)
    with pytest.raises(ValueError, match="variant"):
        configs.get_config("nope")


def test_repro_config_is_the_issue_protocol(configs):
    c = configs.get_config("repro")
    assert c.dataset == "mnist_embedded" and c.num_train == 10000
    assert c.classifier == "mnist_cnn" and len(c.features) == 2  # 2 conv + 2 fc
    assert c.train_noise_std == 0.0  # trained plainly, as the paper
    assert c.num_test >= 200 and c.bpda_num_test >= 64 and c.adaptive_num_test > 0
    assert (c.bpda_eps, c.bpda_step_size, c.bpda_steps) == (0.1, 0.02, 10)
    assert c.adaptive_eot_samples > 1
    # The paper's grids, each in its own convention (Tables 4, 5, 6).
    assert tuple(c.median_sizes) == (3, 5, 7, 9, 11)
    assert tuple(c.tv_bregman_weights) == (0.075, 0.125, 0.25, 0.5, 0.75)
    assert tuple(c.tv_chambolle_weights) == (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def test_bpda_pgd_without_defense_is_sign_pgd(exp):
    # No defense, one row per group: plain l_inf sign PGD without random start; compare with
    # the library's PGD on a linear classifier (a smooth, non-chaotic problem).
    from robustjax import attacks

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(16, 3)).astype(np.float32))

    def logits_fn(v):
        return v.reshape(v.shape[0], -1) @ w

    x = jnp.asarray(rng.uniform(0.2, 0.8, size=(5, 4, 4, 1)).astype(np.float32))
    y = jnp.asarray([0, 1, 2, 0, 1])
    ours, loss, zero = jax.jit(lambda k, v, l, g: exp.bpda_pgd(
        logits_fn, None, k, v, l, g, eps=0.1, step_size=0.03, steps=4))(
        jax.random.key(0), x, y, jnp.arange(5))
    ref = attacks.pgd(logits_fn, jax.random.key(0), x, y, eps=0.1, steps=4, step_size=0.03,
                      random_start=False)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert float(jnp.max(jnp.abs(ours - x))) <= 0.1 + 1e-6
    assert loss.shape == (4,) and zero.shape == (4,)
    assert np.all(np.diff(np.asarray(loss)) > 0)  # the attack loss increases
    assert np.all(np.asarray(zero) == 0)


def test_bpda_pgd_eot_groups_and_fresh_draws(exp):
    # A randomized "defense" whose output is pure key-dependent noise: the BPDA gradient is
    # then the classifier's gradient at a random point. Copies of one digit (one group) move
    # together (EOT averages their gradients); with fresh=False every step sees the same draw,
    # so the iterate moves in one fixed direction; fresh draws change the direction.
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.normal(size=(16, 3)).astype(np.float32))

    def logits_fn(v):
        return jnp.tanh(v.reshape(v.shape[0], -1) * 3.0) @ w

    def noise_defense(k, v):
        keys = jax.random.split(k, v.shape[0])
        return jax.vmap(lambda kk: jax.random.uniform(kk, v.shape[1:], v.dtype, -1, 1))(keys)

    x = jnp.full((6, 4, 4, 1), 0.5, jnp.float32)
    y = jnp.zeros((6,), jnp.int32)
    group = jnp.asarray([0, 0, 0, 3, 4, 5])
    run = jax.jit(lambda k, g, fresh: exp.bpda_pgd(
        logits_fn, noise_defense, k, x, y, g, eps=0.4, step_size=0.01, steps=6, fresh=fresh),
        static_argnums=2)
    xa, _, _ = run(jax.random.key(2), group, True)
    np.testing.assert_array_equal(xa[0], xa[1])
    np.testing.assert_array_equal(xa[0], xa[2])
    assert float(jnp.max(jnp.abs(xa[3] - xa[4]))) > 0  # separate groups, separate draws
    fixed, _, _ = run(jax.random.key(2), jnp.arange(6), False)
    # Same draw every step: |x_T - x_0| = steps * step_size wherever the gradient is nonzero.
    moved = np.abs(np.asarray(fixed - x))
    np.testing.assert_allclose(moved[moved > 0], 0.06, atol=1e-6)
    fresh, _, _ = run(jax.random.key(2), jnp.arange(6), True)
    # Fresh draws change some directions (measured: 15 % of the pixels end short of 0.06).
    assert np.mean(np.abs(np.asarray(fresh - x)) < 0.06 - 1e-6) > 0.05


def test_batched_pads_and_matches_one_call(exp):
    x = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    calls = []

    def fn(key, v):
        calls.append(v.shape)
        return 2 * v, jnp.sum(v, axis=1)

    a, b = exp.batched(fn, jax.random.key(0), (x,), 3)
    np.testing.assert_allclose(a, 2 * x)
    np.testing.assert_allclose(b, x.sum(1))
    assert calls == [(3, 2)] * 3  # the last batch of one row is padded to 3


def test_distances_closed_form(exp):
    x = np.zeros((2, 2, 2, 1), np.float32)
    x_adv = x + 0.5
    x_def = x + 0.25
    d = exp._distances(x, x_adv, x_def)
    np.testing.assert_allclose(d["adv2gt"]["l2"], [1.0, 1.0])  # sqrt(4 * 0.25)
    np.testing.assert_allclose(d["defense2gt"]["mean_abs_255"], [63.75, 63.75])
    np.testing.assert_allclose(d["defense2adv"]["l2"], [0.5, 0.5])


def test_ride_experiment_smoke(tmp_path, configs, exp):
    cfg = configs.get_config("smoke")
    results = exp.train_and_evaluate(cfg, str(tmp_path))
    pngs = ("fig5a_accuracy_vs_iteration.png", "fig6_reconstruction.png",
            "fig7_bpda_distances.png", "examples_bpda.png")
    for name in ("results.json", "tables.md") + pngs:
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, name
    for name in pngs:
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["num_test"] == cfg.num_test
    clean = saved["clean_accuracy"]
    assert 0.5 <= clean <= 1.0  # the smoke classifier learns something
    label = saved["ride_label"]
    assert label.startswith("RIDE-small (K=4, T=2, lr=0.01, σ=0.2")

    # Table 1: per-image outcomes; the no-defense column is the attacks' raw effect.
    gray = saved["table1"]["gray"]
    acc = saved["table1_accuracy"]
    for attack in ("FGSM", "PGD"):
        row = gray[attack]
        assert set(row) == {"No Defender", "Median", "TVM", "RIDE"}
        for col, v in row.items():
            assert len(v) == cfg.num_test and set(v) <= {0, 1}
            assert acc[attack][col] == pytest.approx(np.mean(v))
        assert acc[attack]["No Defender"] == saved["baseline_sweep"][attack]["none"]
        # Median / TVM report the best swept setting.
        assert acc[attack]["Median"] == max(v for k, v in saved["baseline_sweep"][attack].items()
                                            if k.startswith("median"))
    # Both TV conventions were swept.
    keys = saved["baseline_sweep"]["FGSM"]
    assert any("bregman" in k for k in keys) and any("chambolle" in k for k in keys)
    assert acc["PGD"]["No Defender"] <= clean

    # Fig. 5a: RIDE first, every method, iterations 0, K, ..., K*T; iteration 0 = undefended.
    k, t = cfg.ride.steps, cfg.ride.num_checkpoints
    assert set(saved["fig5a"]) == {"ride", "dae"}
    for curve in saved["fig5a"].values():
        assert curve["iterations"] == [k * i for i in range(t + 1)]
        assert all(0.0 <= a <= 1.0 for a in curve["accuracy"])
    assert saved["fig5a"]["ride"]["accuracy"][-1] == acc["FGSM"]["RIDE"]

    # Fig. 6: probabilities and distances per image and checkpoint.
    fig6 = saved["fig6"]
    p = np.asarray(fig6["p_true"])
    assert p.shape == (len(fig6["indices"]), t + 2) and np.all((p >= 0) & (p <= 1))

    # Table 2 / Fig. 7: four defenses under the paper's protocol plus the adaptive attack.
    white = saved["table2"]
    paper = [r for r in white.values() if "(paper)" in r["attack"]]
    adaptive = [r for r in white.values() if "(adaptive)" in r["attack"]]
    assert [r["defense"] for r in paper][0] == "No defense" and len(paper) == 4
    assert len(adaptive) == 1 and adaptive[0]["defense"] == label
    assert adaptive[0]["n"] == cfg.adaptive_num_test
    assert "no EOT" in paper[0]["attack"] and "EOT 2 fresh" in adaptive[0]["attack"]
    for r in white.values():
        assert r["linf_max"] <= cfg.bpda_eps + 1e-5
        assert len(r["correct_defended"]) == r["n"]
        assert len(r["attack_loss_per_step"]) == cfg.bpda_steps
        d = r["distances_mean"]
        assert 0.0 < d["adv2gt"]["l2"] <= cfg.bpda_eps * np.sqrt(28 * 28) + 1e-4
    nodef = paper[0]
    assert nodef["accuracy_defended"] == nodef["accuracy_adversarial"]
    assert nodef["distances_mean"]["defense2adv"]["l2"] == 0.0
    # Triangle inequality per image: |d(def, gt) - d(adv, gt)| <= d(def, adv).
    for r in white.values():
        dd = {kk: np.asarray(v["l2"]) for kk, v in r["distances"].items()}
        assert np.all(np.abs(dd["defense2gt"] - dd["adv2gt"]) <= dd["defense2adv"] + 1e-4)
    assert paper[-1]["distances_mean"]["defense2adv"]["l2"] > 0.1  # RIDE is no identity

    table = (tmp_path / "tables.md").read_text()
    assert "| FGSM | " in table and "| PGD |" in table
    assert f"| {label} | BPDA (identity backward)" in table
    assert "[" in table and "AutoAttack" in table  # intervals and the AutoAttack status
    assert results["cost"]["steps_per_image"] == k * t


def test_defense_trace_map_equals_vmap(exp):
    from robustjax import defenses
    from robustjax.models import make_reconstruction_net
    from robustjax.models import ride_fcn

    net = make_reconstruction_net(ride_fcn("tiny"))
    cfg = defenses.RideConfig(steps=2, num_checkpoints=2, learning_rate=1e-2, sigma=0.2,
                              mask_ratio=0.5)
    x = jax.random.uniform(jax.random.key(3), (2, 8, 8, 1))
    fast = {"xla_backend_optimization_level": 0}
    out = {v: exp.compiled(lambda k, z, v=v: exp.defense_trace(
        net, k, z, method="ride", config=cfg, vectorize=v).estimates, fast)(jax.random.key(4), x)
        for v in ("map", "vmap")}
    assert out["map"].shape == (2, 2, 8, 8, 1)
    np.testing.assert_allclose(out["map"], out["vmap"], atol=1e-5)
    assert float(jnp.max(jnp.abs(out["map"][0] - out["map"][1]))) > 1e-3  # not a constant output
    with pytest.raises(ValueError, match="vectorize"):
        exp.defense_trace(net, jax.random.key(0), x, method="ride", config=cfg, vectorize="x")
