"""Smoke test of the spatial-robustness experiment (six variants) with the seconds-long config."""

import json
import os

import numpy as np

from _common import load_module as _load

_HERE = os.path.dirname(os.path.abspath(__file__))


def test_spatial_smoke(tmp_path):
    cfg = _load("sp_config", os.path.join(_HERE, "configs", "spatial.py")).get_config("smoke")
    exp = _load("sp_main", os.path.join(_HERE, "spatial.py"))
    results = exp.train_and_evaluate(cfg, str(tmp_path))
    for name in ("results.json", "table.md", "fig5_certified.png", "fig6_stadv.png",
                 "fig2_lower_bounds.png", "fig4_convergence.png"):
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, name
    with open(tmp_path / "fig6_stadv.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["variants"]) == {"f_nt", "f_fro", "f_spe", "f_stn", "f_at", "f_sdp"}
    table = (tmp_path / "table.md").read_text()
    assert "zero-mean" in table and "ε/√2" in table
    for name in saved["variants"]:
        assert f"| {name} (0) |" in table
    assert set(saved["lower_bounds"]) == {"f_rd", "f_nt"}
    for name, lbr in saved["lower_bounds"].items():
        assert lbr["alg1_mean"][0] == 0.0  # eps = 0: no flow, no loss
        # Algorithm 1 keeps the best pair, Theorem 1's initial pair included: it is at least
        # the exact loss there, and history[0] is that initial loss
        hist = lbr["history"]["7.84"]
        assert lbr["alg1_mean"][-1] >= hist[0] - 1e-5
    for name, per_seed in results["variants"].items():
        r = per_seed["0"]
        clean = r["clean_accuracy"][0]
        lo, hi = r["clean_accuracy"][1:]
        assert 0.0 <= lo <= clean <= hi <= 1.0
        for kind in exp.BOUNDS:
            err = np.asarray(r["certified_error"][kind])
            # 0/1 loss: at eps = 0 it is the clean error; it never decreases with eps.
            assert abs(err[0] - (1.0 - clean)) < 1e-6, (name, kind)
            assert np.all(np.diff(err) >= -1e-12), (name, kind)
        # Algorithm 1 is a lower bound and the SDP-dual bound an upper bound of one quantity.
        lb = np.asarray(r["lower_bound"]["alg1"])
        ub = np.asarray(r["lower_bound"]["sdp_upper"])
        assert np.all(lb <= ub + 1e-4), (name, lb, ub)
        for (s, lo, hi), (a, _, _) in zip(r["stadv"]["success"], r["stadv"]["adv_accuracy"]):
            assert 0.0 <= lo <= s <= hi <= 1.0 and 0.0 <= a <= clean + 1e-9
