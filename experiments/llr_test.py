"""End-to-end smoke test of ``experiments/llr.py`` and unit tests of the F.1 protocol."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax.evaluation import _protocols

from _common import load_module as _load

_HERE = os.path.dirname(os.path.abspath(__file__))


PNG = b"\x89PNG\r\n\x1a\n"


def test_adam_step_schedule_matches_paper():
    f = _protocols.adam_step_schedule(steps=200)
    got = [float(f(t)) for t in (0, 99, 100, 149, 150, 199)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)
    g = _protocols.adam_step_schedule(steps=8)  # boundaries scale with the step count
    np.testing.assert_allclose([float(g(t)) for t in (3, 4, 5, 6, 7)],
                               [0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)
    with pytest.raises(ValueError, match="step_sizes"):
        _protocols.adam_step_schedule(step_sizes=(0.1, 0.01))
    with pytest.raises(ValueError, match="boundaries"):
        _protocols.adam_step_schedule(boundaries=(0.75, 0.5))


def test_protocol_attacks_linear_model():
    """On a linear model the optimal ℓ∞ attack is closed form: x − ε·sign(w_y − w_j)."""
    w = jnp.array([[1.0, -1.0, 0.5], [-0.5, 1.0, -1.0], [0.3, 0.2, 1.0], [0.0, -0.4, 0.7]])

    def logits_fn(x):
        return x.reshape(x.shape[0], -1) @ w

    key = jax.random.key(0)
    x = jax.random.uniform(key, (6, 2, 2, 1), minval=0.3, maxval=0.7)
    y = jnp.argmax(logits_fn(x), -1)
    eps = 0.2
    suite = _protocols.llr_evaluation_attacks(
        logits_fn, eps=eps, steps=20, restarts=2, fgsm_steps=3, monitor_steps=5,
        multi_targeted_steps=20, box=None)
    assert list(suite) == ["FGSM", "FGSM-3", "PGD-5", "Untargeted", "Random-Targeted",
                           "Multi-Targeted"]
    logits = logits_fn(x)
    # Closed-form worst-case margin over all wrong classes.
    best = jnp.full((6,), jnp.inf)
    for j in range(3):
        dw = w[:, y] - w[:, j:j + 1].repeat(6, 1)  # [D, N]
        m = logits[jnp.arange(6), y] - logits[:, j] - eps * jnp.sum(jnp.abs(dw), 0)
        best = jnp.where(j == y, best, jnp.minimum(best, m))
    mt = jax.jit(suite["Multi-Targeted"])(key, x, y)
    assert float(jnp.max(jnp.abs(mt - x))) <= eps + 1e-6
    z = logits_fn(mt)
    margin = z[jnp.arange(6), y] - jnp.max(jnp.where(jax.nn.one_hot(y, 3) > 0, -jnp.inf, z), -1)
    np.testing.assert_allclose(margin, best, atol=1e-3)
    for name in ("FGSM", "Untargeted"):
        xa = jax.jit(suite[name])(key, x, y)
        assert xa.shape == x.shape
        assert float(jnp.max(jnp.abs(xa - x))) <= eps + 1e-6, name
        if name == "FGSM":  # one full sign step: a vertex of the ball
            np.testing.assert_allclose(jnp.abs(xa - x), eps, atol=1e-5)
        else:  # the ascent raised the loss of every example
            ce = lambda z: -jax.nn.log_softmax(logits_fn(z))[jnp.arange(6), y]  # noqa: E731
            assert bool(jnp.all(ce(xa) > ce(x) + 0.05))
    with pytest.raises(ValueError, match="include"):
        _protocols.llr_evaluation_attacks(logits_fn, eps=eps, include=("CW",))


def test_smoke_end_to_end(tmp_path):
    config = _load("llr_config", os.path.join(_HERE, "configs", "llr.py")).get_config("smoke")
    llr = _load("llr_main", os.path.join(_HERE, "llr.py"))
    res = llr.train_and_evaluate(config, str(tmp_path))
    names = list(res["models"])
    assert names[:3] == ["LLR-1", "TRADES-1", "ADV-1"]
    for name, m in res["models"].items():
        assert 0.0 <= m["nominal"] <= 1.0
        for attack, acc in m["robust_accuracy"].items():
            assert 0.0 <= acc <= m["nominal"] + 1e-9, (name, attack)
        ra = m["robust_accuracy"]
        assert ra["Multi-Targeted"] <= ra["Untargeted"] + 0.25
        assert m["gamma_mean"] >= 0.0 and np.isfinite(m["gamma_mean"])
        lo, hi = m["loss_surface_range"]
        assert 0.0 <= lo <= hi and np.isfinite(hi)
        with open(tmp_path / f"loss_surface_{name}.png", "rb") as f:
            assert f.read(8) == PNG
    with open(tmp_path / "gamma_histogram.png", "rb") as f:
        assert f.read(8) == PNG
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["models"].keys() == res["models"].keys()
    table = (tmp_path / "table.md").read_text()
    assert "| Methods | PGD steps | Nominal | Untargeted | Multi-Targeted |" in table
    assert "Table F4" in table and "| ADV-1 |" in table and "| LLR-1 |" in table
