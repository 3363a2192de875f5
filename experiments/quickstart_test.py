"""Smoke test of the README's main job with the few-second config."""

import json
import os

from _common import load_module as _load

_HERE = os.path.dirname(os.path.abspath(__file__))


def test_quickstart_smoke(tmp_path):
    cfg = _load("qs_config", os.path.join(_HERE, "configs", "quickstart.py")).get_config("smoke")
    qs = _load("qs_main", os.path.join(_HERE, "quickstart.py"))
    results = qs.train_and_evaluate(cfg, str(tmp_path))
    for name in ("results.json", "table.md", "accuracy_vs_eps.png", "examples_standard.png",
                 "examples_adversarial.png"):
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, name
    with open(tmp_path / "accuracy_vs_eps.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["num_train"] == cfg.num_train and saved["num_test"] == cfg.num_test
    for model in ("standard", "adversarial"):
        clean = results["clean_accuracy"][model]
        assert 0.0 <= clean <= 1.0
        for acc in results["robust_accuracy"][model].values():
            assert 0.0 <= acc <= clean + 1e-9  # robust never above clean
    assert (tmp_path / "standard" / "metrics.jsonl").exists()
    # AutoAttack column (labelled as a smoke deviation), Min and Worst case columns.
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert "| Min | Worst case |" in lines[0]
    aa_header = [ln for ln in lines if "AutoAttack ε=0.3 (smoke" in ln]
    assert aa_header and "PGD-3 ε=0.3" in aa_header[0]
    for model in ("standard", "adversarial"):
        aa = saved["autoattack"][model]
        (col,) = aa
        assert list(aa[col]["after_each_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
        sub = results["autoattack_table"][model]
        assert aa[col]["robust_accuracy"] == sub["robust_accuracy"][col]
        assert sub["robust_accuracy"][col] <= sub["clean_accuracy"] + 1e-9
        assert results["worst_case_accuracy"][model] <= results["min_accuracy"][model] + 1e-9
