"""Smoke test of the L2L-DA experiment (Table A layout, Figure B) with the seconds-scale config,
and checks of the ``repro`` config against what ``experiments/results/l2lda/README.md`` says."""

import json
import os

import pytest

from _common import load_module as _load

_HERE = os.path.dirname(os.path.abspath(__file__))


def _config(variant):
    return _load(f"l2lda_config_{variant}",
                 os.path.join(_HERE, "configs", "l2lda.py")).get_config(variant)


def _experiment():
    return _load("l2lda_main", os.path.join(_HERE, "l2lda.py"))


def test_l2lda_experiment_smoke(tmp_path):
    cfg = _config("smoke")
    exp = _experiment()
    results = exp.train_and_evaluate(cfg, str(tmp_path))
    for name in ("results.json", "table.md", "figure_b.png", "training_curves.png"):
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, name
    with open(tmp_path / "figure_b.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["num_test"] == cfg.num_test
    columns = list(cfg.columns)
    labels = exp.column_labels(cfg)
    table = (tmp_path / "table.md").read_text()
    header = table.splitlines()[0]
    for col in ["Natural", "Min", "Worst case"] + [labels[c] for c in columns]:
        assert col in header, col
    assert "AutoAttack (APGD-CE)" in header  # a reduced member set is labelled
    assert "Deviations from the paper" in table and "[" in table.splitlines()[2]
    assert list(results["clean_accuracy"]) == list(cfg.rows)
    for row in cfg.rows:
        assert row in table
        clean = results["clean_accuracy"][row]
        robust = results["robust_accuracy"][row]
        assert sorted(robust) == sorted(columns)
        for col, acc in robust.items():
            assert 0.0 <= acc <= clean + 1e-9  # robust never above clean
            lo, hi = results["wilson95"][row][col]
            assert lo <= acc <= hi
        # Min is the paper's (a column's value); worst case is per example (never above it).
        assert results["min_accuracy"][row] == pytest.approx(min(robust.values()))
        assert results["worst_case_accuracy"][row] <= results["min_accuracy"][row] + 1e-9
        for col in columns:  # every column stays in the eps-ball
            assert results["mean_linf"][row][col] <= cfg.eps + 1e-5
    div = results["diversity_check"]
    for lam in (f"lambda={cfg.lambda_div:g}", "lambda=0"):
        assert div[lam]["mean_pairwise_l2"] >= 0.0
        assert 0.0 <= div[lam]["pgd10_accuracy"] <= div[lam]["clean_accuracy"] + 1e-9
    # diversity_steps equals the row's length: the lambda_div run is the L2L-DA row, reused;
    # only the lambda = 0 twin was trained.
    assert div["row_updates"] == cfg.diversity_steps
    assert div[f"lambda={cfg.lambda_div:g}"]["training_metrics"] == "the L2L-DA row's"
    assert isinstance(div["lambda=0"]["training_metrics"], list)
    assert results["training_curves"]["L2L-DA"]


def test_l2lda_bad_config_fails_before_training(tmp_path):
    exp = _experiment()
    cases = [("rows", ("Plain", "PGDx")), ("rows", ("Plain", "Madry")), ("eps", 0.0),
             ("eps", -0.1), ("columns", ("FGSM", "PGD0")), ("columns", ("FGSM", "DeepFool")),
             ("dataset", "no_such_dataset"), ("autoattack_members", ("apgd-ce", "fab")),
             ("model", "vgg")]
    for field, value in cases:
        cfg = _config("smoke")
        cfg[field] = value
        with pytest.raises(ValueError, match=f"config.{field}"):
            exp.train_and_evaluate(cfg, str(tmp_path / field))
        assert not (tmp_path / field).exists()  # nothing written, nothing trained


def test_repro_config_validates_and_matches_the_results_readme():
    cfg = _config("repro")
    _experiment().validate_config(cfg)
    # What experiments/results/l2lda/README.md states about the run.
    assert cfg.dataset == "mnist_embedded" and cfg.num_train == 10000 and cfg.num_test == 1000
    assert cfg.model == "cnn" and tuple(cfg.cnn_features) == (16, 32)
    assert cfg.cnn_kernel_size == 3 and cfg.cnn_hidden == 128   # the quickstart's CNN
    assert cfg.eps == pytest.approx(0.3)
    assert tuple(cfg.rows) == ("Plain", "PGD10", "L2L*", "L2L-DA")
    assert tuple(cfg.columns) == ("FGSM", "PGD10", "PGD100", "CW100", "L2L-DA", "AutoAttack")
    assert tuple(cfg.autoattack_members) == ("apgd-ce", "apgd-t")
    assert cfg.autoattack_steps == 100
    assert cfg.lambda_div == pytest.approx(0.02) and cfg.latent_dim == 8
    assert cfg.warm_start and cfg.eps_rampup_steps > 0
    assert cfg.diversity_steps > 0
    readme = os.path.join(_HERE, "results", "l2lda", "README.md")
    if os.path.exists(readme):
        text = open(readme, encoding="utf-8").read()
        assert "--config experiments/configs/l2lda.py:repro" in text
        for field in ("epochs", "plain_epochs", "batch_size", "l2l_steps", "eps_rampup_steps",
                      "attack_gen_steps", "diversity_steps", "diversity_num_images",
                      "gen_learning_rate"):
            assert f"{field} = {cfg[field]}" in text, field
