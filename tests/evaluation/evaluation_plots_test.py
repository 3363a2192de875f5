"""Tests of the PNG plot helpers (matplotlib Agg canvas)."""

import numpy as np
import pytest
from PIL import Image

from robustjax import evaluation as ev

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_w=100, min_h=100):
    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:8] == PNG_SIGNATURE
    assert 2_000 < len(data) < 5_000_000
    with Image.open(path) as im:
        w, h = im.size
    assert min_w <= w <= 4000 and min_h <= h <= 4000
    return w, h


def test_plot_accuracy_vs_eps(tmp_path):
    curves = {"Plain": ev.Curve(np.array([0, 0.1, 0.2, 0.3]), np.array([0.99, 0.4, 0.05, 0.0])),
              "PGD10": ([0, 0.1, 0.2, 0.3], [0.98, 0.9, 0.8, 0.6])}
    path = tmp_path / "sub" / "eps.png"  # parent folders are created
    out = ev.plot_accuracy_vs_eps(curves, path, title="MNIST")
    assert out == str(path)
    _check_png(path)
    with pytest.raises(ValueError, match="curves"):
        ev.plot_accuracy_vs_eps({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="curves"):
        ev.plot_accuracy_vs_eps({"a": ([0, 1], [1.0])}, tmp_path / "x.png")


def test_plot_accuracy_vs_distortion_with_infinite_threshold(tmp_path):
    rng = np.random.default_rng(0)
    c, a, d = rng.random(30) < 0.9, rng.random(30) < 0.3, rng.exponential(1.0, 30)
    curve = ev.accuracy_at_distortion(c, a, d)
    assert np.isinf(curve.x[-1])
    path = ev.plot_accuracy_vs_distortion({"CW": curve, "CW-defended": (curve.x, curve.accuracy)},
                                          tmp_path / "dist.png", norm="l2", title="CW")
    _check_png(path)
    with pytest.raises(ValueError, match="norm"):
        ev.plot_accuracy_vs_distortion({"CW": curve}, tmp_path / "x.png", norm="l1")


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_examples(tmp_path, channels):
    rng = np.random.default_rng(channels)
    n = 5
    clean = rng.random((n, 8, 8, channels)).astype(np.float32)
    adv = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)
    labels = np.arange(n) % 3
    w, h = _check_png(ev.plot_examples(clean, adv, labels, labels, (labels + 1) % 3,
                                       tmp_path / "ex.png", class_names=["a", "b", "c"],
                                       title="examples"), min_w=200)
    assert w > h  # 5 columns, 3 rows
    w3, _ = _check_png(ev.plot_examples(clean, adv, labels, labels, labels, tmp_path / "ex3.png",
                                        max_examples=2, show_perturbation=False), min_w=50)
    assert w3 < w
    with pytest.raises(ValueError, match="adv"):
        ev.plot_examples(clean, adv[:2], labels, labels, labels, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="preds_adv"):
        ev.plot_examples(clean, adv, labels, labels, labels[:2], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="max_examples"):
        ev.plot_examples(clean, adv, labels, labels, labels, tmp_path / "bad.png", max_examples=0)


def test_plotting_leaves_pyplot_backend_alone(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    ev.plot_accuracy_vs_eps({"a": ([0, 1], [1, 0])}, tmp_path / "a.png")
    assert matplotlib.get_backend() == before
