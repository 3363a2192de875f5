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
    for name in ("results.json", "table.md", "spatial.png"):
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, name
    with open(tmp_path / "spatial.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["variants"]) == {"f_nt", "f_fro", "f_spe", "f_stn", "f_at", "f_sdp"}
    table = (tmp_path / "table.md").read_text()
    for name in saved["variants"]:
        assert f"| {name} |" in table
    for name, r in results["variants"].items():
        clean = r["clean_accuracy"]
        assert 0.0 <= clean <= 1.0
        for kind in ("frobenius", "spectral", "sdp"):
            err = np.asarray(r["certified_error"][kind])
            # 0/1 loss: at eps = 0 it is the clean error; it never decreases with eps.
            assert abs(err[0] - (1.0 - clean)) < 1e-6, (name, kind)
            assert np.all(np.diff(err) >= -1e-12), (name, kind)
        # Algorithm 1 is a lower bound and the SDP-dual bound an upper bound of one quantity.
        lb = np.asarray(r["lower_bound"]["mean"])
        ub = np.asarray(r["lower_bound"]["sdp_upper"])
        assert np.all(lb <= ub + 1e-4), (name, lb, ub)
        for s, a in zip(r["stadv"]["success_rate"], r["stadv"]["adv_accuracy"]):
            assert 0.0 <= s <= 1.0 and 0.0 <= a <= clean + 1e-9
