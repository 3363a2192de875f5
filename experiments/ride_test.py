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
        assert (c.ride.num_steps, c.ride.num_checkpoints) == (2000, 5)
        assert (c.ride.alpha, c.ride.sigma, c.ride.mask_ratio) == (0.9, 0.5, 0.9)
        assert (c.ride.learning_rate, c.ride.weight_decay) == (1e-4, 1e-4)
        assert (c.bpda_eps, c.bpda_step_size, c.bpda_steps) == (eps, step, 10)
        assert c.fcn == name
    assert configs.get_config("imagenet").gray_eps == 0.015  # FGSM step 0.015 (ablation)
    with pytest.raises(ValueError, match="variant"):
        configs.get_config("nope")


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
    assert 0.5 <= clean <= 1.0  # the smoke classifier learns something (measured 0.75)

    # Table 1: the no-defense column is the attacks' raw effect; PGD at eps 0.3 breaks it.
    gray = saved["table1"]["gray"]
    for attack in ("FGSM", "PGD"):
        row = gray[attack]
        assert set(row) == {"No Defender", "Median", "TVM", "RIDE"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
        assert row["No Defender"] == saved["baseline_sweep"][attack]["none"]
        # Median / TVM report the best swept setting.
        assert row["Median"] == max(v for k, v in saved["baseline_sweep"][attack].items()
                                    if k.startswith("median"))
    assert gray["PGD"]["No Defender"] <= clean
    assert saved["table1"]["clean_row"]["No Defender"] == clean

    # Fig. 5a: every method, iterations 0, K, ..., K*T; iteration 0 is the undefended input.
    k, t = cfg.ride.num_steps, cfg.ride.num_checkpoints
    assert set(saved["fig5a"]) == set(cfg.ablation_methods)
    for curve in saved["fig5a"].values():
        assert curve["iterations"] == [k * i for i in range(t + 1)]
        assert curve["accuracy"][0] == gray["FGSM"]["No Defender"]
        assert all(0.0 <= a <= 1.0 for a in curve["accuracy"])
    # RIDE's last checkpoint is Table 1's RIDE entry.
    assert saved["fig5a"]["ride"]["accuracy"][-1] == gray["FGSM"]["RIDE"]

    # Fig. 6: probabilities and distances per image and checkpoint.
    fig6 = saved["fig6"]
    p = np.asarray(fig6["p_true"])
    assert p.shape == (len(fig6["indices"]), t + 2) and np.all((p >= 0) & (p <= 1))
    assert np.asarray(fig6["dist2gt_255"]).shape == (len(fig6["indices"]), t)

    # Table 2 / Fig. 7: the attack respects eps; without a defense, defended == adversarial.
    white = saved["table2"]
    assert list(white)[0] == "No defense" and "RIDE" in white and len(white) == 4
    for r in white.values():
        assert r["linf_max"] <= cfg.bpda_eps + 1e-5
        assert 0.0 <= r["accuracy_defended"] <= 1.0
        d = r["distances_mean"]
        assert 0.0 < d["adv2gt"]["l2"] <= cfg.bpda_eps * np.sqrt(28 * 28) + 1e-4
    nodef = white["No defense"]
    assert nodef["accuracy_defended"] == nodef["accuracy_adversarial"]
    assert nodef["distances_mean"]["defense2adv"]["l2"] == 0.0
    np.testing.assert_allclose(nodef["distances"]["defense2gt"]["l2"],
                               nodef["distances"]["adv2gt"]["l2"])
    # Triangle inequality per image: |d(def, gt) - d(adv, gt)| <= d(def, adv).
    for r in white.values():
        dd = {kk: np.asarray(v["l2"]) for kk, v in r["distances"].items()}
        assert np.all(np.abs(dd["defense2gt"] - dd["adv2gt"]) <= dd["defense2adv"] + 1e-4)
    # RIDE actually changes its input (it is a reconstruction, not the identity).
    assert white["RIDE"]["distances_mean"]["defense2adv"]["l2"] > 0.1

    table = (tmp_path / "tables.md").read_text()
    assert "| FGSM | " in table and "| PGD |" in table
    assert "| RIDE | MNIST | 0.1 (ℓ∞) |" in table
    assert results["table2"]["RIDE"]["accuracy_defended"] == white["RIDE"]["accuracy_defended"]


def test_defense_trace_map_equals_vmap(exp):
    from robustjax import defenses
    from robustjax.models import make_reconstruction_net
    from robustjax.models import ride_fcn

    net = make_reconstruction_net(ride_fcn("tiny"))
    cfg = defenses.RideConfig(num_steps=2, num_checkpoints=2, learning_rate=1e-2, sigma=0.2,
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
