"""Tests of the gradient-masking sanity checks: they fire on bad cases and stay quiet on good."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import evaluation_testlib as tl
from robustjax import evaluation as ev


def test_iterative_vs_single_step():
    good = ev.check_iterative_vs_single_step(0.30, 0.40)
    assert good.passed and good.name == "iterative_vs_single_step"
    assert ev.check_iterative_vs_single_step(0.405, 0.40, tol=0.01).passed  # within tol
    bad = ev.check_iterative_vs_single_step(0.45, 0.40, tol=0.01, iterative_name="PGD100")
    assert not bad.passed and "PGD100" in bad.detail and "weaker" in bad.detail
    with pytest.raises(ValueError, match="iterative_accuracy"):
        ev.check_iterative_vs_single_step(1.5, 0.4)


def test_unbounded_attack():
    assert ev.check_unbounded_attack(0.0).passed
    assert ev.check_unbounded_attack(0.005, tol=0.01).passed
    bad = ev.check_unbounded_attack(0.2, eps=1000.0)
    assert not bad.passed and "eps=1000" in bad.detail
    with pytest.raises(ValueError, match="tol"):
        ev.check_unbounded_attack(0.2, tol=-1)


def test_blackbox_vs_whitebox():
    assert ev.check_blackbox_vs_whitebox(0.5, 0.3).passed
    bad = ev.check_blackbox_vs_whitebox(0.2, 0.3)
    assert not bad.passed and "black-box" in bad.detail


def test_loss_increasing():
    t = np.linspace(0, 1, 10)
    assert ev.check_loss_increasing(t).passed
    # oscillating but increasing overall is fine; the decreasing steps are reported
    osc = t + 0.2 * np.sin(7 * t)
    flag = ev.check_loss_increasing(osc)
    assert flag.passed and f"{int(np.sum(np.diff(osc) < 0))}/9 steps decreased" in flag.detail
    assert not ev.check_loss_increasing(np.ones(5)).passed  # flat: masked gradients
    assert not ev.check_loss_increasing(t[::-1]).passed
    assert not ev.check_loss_increasing(np.array([0.0, np.nan, 1.0])).passed
    # [T, N]: the mean rises because of one example while 3 of 4 stall
    tr = np.zeros((5, 4))
    tr[:, 0] = np.linspace(0, 10, 5)
    flag = ev.check_loss_increasing(tr)
    assert not flag.passed and "75.00% of examples" in flag.detail
    assert ev.check_loss_increasing(tr, max_stalled_fraction=0.8).passed
    assert ev.check_loss_increasing(np.linspace(0, 1, 5)[:, None] * np.ones((1, 4))).passed
    with pytest.raises(ValueError, match="loss_trace"):
        ev.check_loss_increasing(np.ones(1))
    with pytest.raises(ValueError, match="loss_trace"):
        ev.check_loss_increasing(np.ones((2, 2, 2)))


def test_loss_increasing_on_a_real_pgd_trace():
    x, y = tl.random_data(30, 16)
    w, b = tl.random_linear(31)
    xs = [x]
    for _ in range(5):  # NumPy PGD, one step at a time
        xs.append(tl.np_pgd(w, b, xs[0], y, 0.1, steps=len(xs)))
    z = [tl.np_logits(w, b, xi) for xi in xs]
    ce = np.stack([np.log(np.exp(zi).sum(-1)) - zi[np.arange(16), y] for zi in z])  # [T, N]
    assert ev.check_loss_increasing(ce).passed
    assert not ev.check_loss_increasing(np.repeat(ce[:1], 6, axis=0)).passed


def test_robust_below_clean():
    assert ev.check_robust_below_clean({"FGSM": 0.3, "PGD": 0.2}, 0.9).passed
    assert ev.check_robust_below_clean(0.9, 0.9).passed
    bad = ev.check_robust_below_clean({"FGSM": 0.3, "Weird": 0.95}, 0.9)
    assert not bad.passed and "Weird" in bad.detail and "FGSM" not in bad.detail


def _report(labels, clean, **adv):
    labels = np.asarray(labels, np.int32)
    zeros = {k: np.zeros(len(labels), np.float32) for k in adv}
    return ev.RobustnessReport(labels, np.asarray(clean, np.int32),
                               {k: np.asarray(v, np.int32) for k, v in adv.items()}, zeros, zeros)


Y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])


def test_gradient_masking_checks_quiet_on_good_report(capsys):
    rep = _report(Y, Y, FGSM=[0, 1, 0, 1, 0, 0, 1, 0, 1, 0],  # robust 4/10
                  PGD10=[0, 1, 0, 0, 1, 0, 1, 0, 1, 0],  # 2/10
                  NES=[0, 1, 0, 1, 0, 1, 1, 0, 1, 0])  # 5/10
    trace = np.linspace(0.1, 2.0, 10)
    flags = ev.gradient_masking_checks(rep, unbounded_accuracy=0.0, unbounded_eps=100.0,
                                       loss_trace=trace, verbose=True)
    assert [f.name for f in flags] == ["iterative_vs_single_step", "unbounded_attack",
                                       "blackbox_vs_whitebox", "loss_increasing",
                                       "robust_below_clean"]
    assert all(f.passed for f in flags), flags
    out = capsys.readouterr().out
    assert "5/5 checks passed" in out and "SUSPICIOUS" not in out
    # without extra runs and without a black-box attack, those checks are skipped
    rep2 = _report(Y, Y, fgsm_8=Y, pgd_8=1 - Y)
    names = [f.name for f in ev.gradient_masking_checks(rep2)]
    assert names == ["iterative_vs_single_step", "robust_below_clean"]


def test_gradient_masking_checks_fire_on_bad_report(capsys):
    clean = Y.copy()
    clean[:4] = 1 - Y[:4]  # clean accuracy 6/10
    rep = _report(Y, clean,
                  FGSM=[1, 0, 1, 0, 0, 0, 1, 0, 1, 0],  # robust only on example 4: 1/10
                  PGD10=Y,  # PGD does nothing: robust 6/10 > FGSM
                  NES=1 - Y)  # black-box 0 % < white-box
    flags = {f.name: f for f in ev.gradient_masking_checks(
        rep, unbounded_accuracy=0.3, loss_trace=np.ones(5))}
    assert not flags["iterative_vs_single_step"].passed
    assert not flags["unbounded_attack"].passed
    assert not flags["blackbox_vs_whitebox"].passed
    assert not flags["loss_increasing"].passed
    # adversarial accuracy (unconditioned) of PGD10 is 100 % > clean 60 %
    assert not flags["robust_below_clean"].passed and "PGD10" in flags["robust_below_clean"].detail
    summary = ev.format_masking_summary(list(flags.values()))
    assert "0/5 checks passed" in summary and summary.count("[SUSPICIOUS]") == 5
    with pytest.raises(ValueError, match="not in the report"):
        ev.gradient_masking_checks(rep, iterative="PGD40")
    with pytest.raises(ValueError, match="report"):
        ev.gradient_masking_checks({"clean": 0.9})


def test_unbounded_attack_accuracy_catches_a_masked_model():
    x, y = tl.random_data(40, 24, k=2)
    w, b = tl.random_linear(41, k=2)
    f = tl.linear_logits_fn(w, b)
    # quantized input: zero gradient almost everywhere, so gradient attacks do nothing
    masked = lambda v: f(jnp.round(v * 8.0) / 8.0)
    good = ev.unbounded_attack_accuracy(f, x, y, lambda e: tl.fgsm(f, e), key=jax.random.key(0))
    bad = ev.unbounded_attack_accuracy(masked, x, y, lambda e: tl.fgsm(masked, e),
                                       key=jax.random.key(0))
    assert good == 0.0
    assert bad == pytest.approx((tl.predict(masked, x) == y).mean()) and bad > 0.3
    assert ev.check_unbounded_attack(good).passed
    assert not ev.check_unbounded_attack(bad).passed
