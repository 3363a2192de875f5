"""Smoke test of experiments/defensegan.py: the tiny config end to end (train, attack, write)."""

import importlib.util
import json
import os

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(variant):
    return _load("defensegan_config", os.path.join(_HERE, "configs", "defensegan.py")).get_config(
        variant)


def test_defensegan_experiment_smoke(tmp_path):
    cfg = _config("smoke")
    exp = _load("defensegan_main", os.path.join(_HERE, "defensegan.py"))
    results = exp.train_and_evaluate(cfg, str(tmp_path))
    for name in ("results.json", "table.md", "accuracy_vs_l2.png", "reconstructions.png"):
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, name
    with open(tmp_path / "accuracy_vs_l2.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["attacks"]) == set(cfg.methods) | {"cw (undefended F)"}
    for r in results["attacks"].values():
        acc = r["curve"]["accuracy"]
        assert all(a >= b - 1e-12 for a, b in zip(acc, acc[1:]))  # non-increasing in the budget
        assert 0.0 <= r["success_rate"] <= 1.0
        assert r["accuracy_at_budget"]["1"] <= r["clean_accuracy"] + 1e-12
    table = (tmp_path / "table.md").read_text()
    assert all(m in table for m in cfg.methods)


def test_defensegan_config_variants():
    assert _config("full").defense.num_restarts == 10
    with pytest.raises(ValueError, match="variant"):
        _config("huge")
