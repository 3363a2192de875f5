"""Smoke test of the L2L-DA experiment (Table A layout, Figure B) with the seconds-scale config."""

import json
import os

import pytest

from _common import load_module as _load

_HERE = os.path.dirname(os.path.abspath(__file__))


def test_l2lda_experiment_smoke(tmp_path):
    cfg = _load("l2lda_config", os.path.join(_HERE, "configs", "l2lda.py")).get_config("smoke")
    exp = _load("l2lda_main", os.path.join(_HERE, "l2lda.py"))
    results = exp.train_and_evaluate(cfg, str(tmp_path))
    for name in ("results.json", "table.md", "figure_b.png"):
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, name
    with open(tmp_path / "figure_b.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["num_test"] == cfg.num_test
    columns = (["FGSM"] + [f"PGD{k}" for k in cfg.eval_pgd_steps]
               + [f"CW{k}" for k in cfg.eval_cw_steps] + ["AdvGAN", "GAP", "L2L-DA"])
    table = (tmp_path / "table.md").read_text()
    header = table.splitlines()[0]
    for col in ["Natural"] + columns + ["Min"]:
        assert col in header, col
    assert list(results["clean_accuracy"]) == list(cfg.rows)
    for row in cfg.rows:
        assert row in table
        clean = results["clean_accuracy"][row]
        robust = results["robust_accuracy"][row]
        assert sorted(robust) == sorted(columns)
        for acc in robust.values():
            assert 0.0 <= acc <= clean + 1e-9  # robust never above clean
        # Min is the paper's (a column's value); worst case is per example (never above it).
        assert results["min_accuracy"][row] == pytest.approx(min(robust.values()))
        assert results["worst_case_accuracy"][row] <= results["min_accuracy"][row] + 1e-9


def test_l2lda_bad_config_fails_before_training(tmp_path):
    import pytest

    mod = _load("l2lda_config_bad", os.path.join(_HERE, "configs", "l2lda.py"))
    exp = _load("l2lda_main_bad", os.path.join(_HERE, "l2lda.py"))
    cases = [("rows", ("Plain", "PGDx")), ("eps", 0.0), ("eps", -0.1),
             ("eval_cw_steps", (0,)), ("dataset", "no_such_dataset")]
    for field, value in cases:
        cfg = mod.get_config("smoke")
        cfg[field] = value
        with pytest.raises(ValueError, match=f"config.{field}"):
            exp.train_and_evaluate(cfg, str(tmp_path / field))
        assert not (tmp_path / field).exists()  # nothing written, nothing trained
