"""Smoke test of experiments/generative.py: the tiny configs end to end (train, attack, write)."""

import json
import os

import pytest

from _common import load_module as _load

_HERE = os.path.dirname(os.path.abspath(__file__))


def _config(variant):
    return _load("generative_config", os.path.join(_HERE, "configs", "generative.py")).get_config(
        variant)


def _check_records(results):
    for per in results["attacks"].values():
        for r in per.values():
            acc = r["curve"]["accuracy"]
            assert all(a >= b - 1e-12 for a, b in zip(acc, acc[1:]))  # non-increasing
            assert 0.0 <= r["success_rate"] <= 1.0
            assert r["accuracy_at_budget"]["1"] <= r["clean_accuracy"] + 1e-12


def test_generative_experiment_smoke(tmp_path):
    cfg = _config("smoke")
    exp = _load("generative_main", os.path.join(_HERE, "generative.py"))
    results = exp.train_and_evaluate(cfg, str(tmp_path))
    for name in ("results.json", "table.md", "accuracy_vs_l2.png", "reconstructions.png"):
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, name
    with open(tmp_path / "accuracy_vs_l2.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["attacks"]) == {"DefenseGAN", "ABS", "ADVT"}
    assert set(saved["attacks"]["DefenseGAN"]) == set(cfg.methods)
    assert set(saved["attacks"]["ABS"]) == set(cfg.abs_methods)
    assert set(saved["attacks"]["ADVT"]) == set(cfg.advt_methods)
    _check_records(results)
    for where in ("on_manifold", "off_manifold"):
        modes = saved["gradient_modes"][where]
        exact = modes["implicit (exact, CG to tol)"]
        assert exact["cosine_to_exact_implicit"] == pytest.approx(1.0, abs=1e-5)
        assert any(k.startswith("unrolled") for k in modes) and "bpda" in modes
        assert all(-1.0 - 1e-6 <= r["cosine_to_exact_implicit"] <= 1.0 + 1e-6 and r["seconds"] > 0
                   for r in modes.values())
    # One eta' for attacks and table, satisfying Lemma 1 against the measured ||H||.
    eta = saved["backward_lr"]["used"]
    assert saved["gradient_mode_diagnostics"]["on_manifold"]["eta_prime"] == eta
    assert saved["backward_lr"]["used_times_max_norm"] <= 1.0 + 1e-6
    # Randomized defenses re-scored on fresh keys; ADVT (deterministic) not.
    for dname in ("DefenseGAN", "ABS"):
        for r in saved["attacks"][dname].values():
            assert r["rescored_keys"] == cfg.rescore_keys
            assert len(r["robust_per_key"]) == cfg.rescore_keys
            for b, v in r["worst_at_budget"].items():
                assert v <= r["accuracy_at_budget"][b] + 1e-12
    assert all(r["rescored_keys"] == 0 for r in saved["attacks"]["ADVT"].values())
    paired = saved["paired_tests"]["implicit_vs_bpda"]
    assert set(paired) == {f"{b:g}" for b in cfg.budgets}
    assert all(0.0 <= t["p_value"] <= 1.0 for t in paired.values())
    table = (tmp_path / "table.md").read_text()
    assert all(m in table for m in cfg.methods) and "backtrack T'=3" in table
    assert "envelope theorem" in table and "Wilson" in table and "McNemar" in table
    assert "MLP-VAE decoder, not the paper's WGAN-GP DCGAN" in table


def test_generative_dcgan_generator_path():
    import jax
    import numpy as np

    from robustjax import defenses

    cfg = _config("smoke_dcgan")
    exp = _load("generative_main_dcgan", os.path.join(_HERE, "generative.py"))
    images = np.random.default_rng(0).uniform(size=(32, 28, 28, 1)).astype(np.float32)
    generator_fn, metrics = exp._train_dcgan(cfg, images, jax.random.key(0))
    assert set(metrics) >= {"wasserstein", "gradient_penalty", "generator_loss"}
    assert all(np.isfinite(v) for v in metrics.values())
    z = jax.random.normal(jax.random.key(1), (3, cfg.latent_dim))
    out = np.asarray(generator_fn(z))
    assert out.shape == (3, 28, 28, 1) and out.min() >= 0.0 and out.max() <= 1.0
    # DefenseGAN with this generator: the reconstruction is G of the returned latent.
    x = images[:2]
    rec, z_star, _ = defenses.defensegan_reconstruct_with_latent(
        generator_fn, jax.random.key(2), x, latent_dim=cfg.latent_dim, restarts=1, steps=2)
    np.testing.assert_allclose(np.asarray(rec), np.asarray(generator_fn(z_star)), atol=1e-5)


def test_generative_config_variants():
    full = _config("full")
    assert full.defense.restarts == 10 and full.defense.steps == 200
    assert full.generator == "dcgan" and full.abs.latent_dim == 8 and full.abs.arch == "dcgan"
    assert set(_config("default").defenses) == {"defensegan", "abs", "advt"}
    repro = _config("repro")
    assert repro.num_attack == 100 and repro.advt.arch == "cnn" and repro.advt.eps == 0.3
    assert repro.rescore_keys >= 5 and set(repro.methods) >= {"implicit", "bpda"}
    with pytest.raises(ValueError, match="variant"):
        _config("huge")
