"""Tests of robustjax.evaluation: per-example helpers, robustness_report, format_table."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import evaluation_testlib as tl
from robustjax import evaluation as ev


# ---------------------------------------------------------------- per-example helpers
def test_correct_and_robust_accuracy_match_numpy_jit_vmap():
    x, y = tl.random_data(0, 12)
    w, b = tl.random_linear(1)
    f = tl.linear_logits_fn(w, b)
    x_adv = np.clip(x + 0.3 * np.sign(np.random.default_rng(2).normal(size=x.shape)), 0, 1)
    x_adv = x_adv.astype(np.float32)
    ref_clean = (x.reshape(12, -1) @ np.asarray(w) + np.asarray(b)).argmax(-1) == y
    ref_adv = (x_adv.reshape(12, -1) @ np.asarray(w) + np.asarray(b)).argmax(-1) == y
    np.testing.assert_array_equal(ev.correct(f, x, y), ref_clean)
    np.testing.assert_array_equal(jax.jit(lambda a, c: ev.correct(f, a, c))(x, y), ref_clean)
    rob = jax.jit(lambda *a: ev.robust_accuracy(f, *a))(x, y, x_adv)
    assert rob.shape == (12,) and rob.dtype == jnp.bool_
    np.testing.assert_array_equal(rob, ref_clean & ref_adv)
    np.testing.assert_array_equal(
        ev.robust_accuracy(f, x, y, x_adv, require_clean=False), ref_adv)
    # vmap over a leading axis of 2 copies: the second copy swaps clean and adversarial.
    xs, xas = np.stack([x, x_adv]), np.stack([x_adv, x])
    out = jax.vmap(lambda a, c, d: ev.robust_accuracy(f, a, c, d))(xs, np.stack([y, y]), xas)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], ref_clean & ref_adv)


def test_distortion_matches_numpy_jit_vmap():
    x, _ = tl.random_data(3, 5)
    xa = np.clip(x + np.random.default_rng(4).normal(size=x.shape) * 0.1, 0, 1).astype(np.float32)
    d = (xa - x).reshape(5, -1)
    np.testing.assert_allclose(ev.distortion(x, xa, norm="linf"), np.abs(d).max(-1), atol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda a, c: ev.distortion(a, c, norm="l2"))(x, xa),
                               np.linalg.norm(d, axis=-1), atol=1e-6)
    v = jax.vmap(lambda a, c: ev.distortion(a, c, norm="l2"))(x[None], xa[None])
    np.testing.assert_allclose(v[0], np.linalg.norm(d, axis=-1), atol=1e-6)
    with pytest.raises(ValueError, match="norm"):
        ev.distortion(x, xa, norm="l1")
    with pytest.raises(ValueError, match="x_adv"):
        ev.distortion(x, xa[:2])


# ---------------------------------------------------------------- robustness_report
def _suite(f, x_star):
    return {
        "FGSM": tl.fgsm(f, 0.1),
        "PGD5": tl.pgd(f, 0.1, steps=5),
        "Const": tl.constant_attack(x_star),
        "None": tl.noop,
    }


@pytest.mark.parametrize("data", ["random", "trained"])
def test_worst_case_le_min_le_columns_le_clean_and_equal_hand(data):
    if data == "random":
        x, y = tl.random_data(5, 40)
        w, b = tl.random_linear(6)
    else:
        x, y, (w, b) = tl.trained_linear()
    f = tl.linear_logits_fn(w, b)
    x_star = np.full(tl.SHAPE, 0.5, np.float32)
    attacks = _suite(f, x_star)
    key = jax.random.key(0)
    rep = ev.robustness_report(f, x, y, attacks, key=key, batch_size=len(x), progress=False)
    # hand computation in NumPy (closed-form gradients of the linear model)
    clean_ok = tl.np_logits(w, b, x).argmax(-1) == y
    hand_adv = {"FGSM": tl.np_fgsm(w, b, x, y, 0.1), "PGD5": tl.np_pgd(w, b, x, y, 0.1, 5),
                "Const": np.broadcast_to(x_star, x.shape), "None": x}
    hand_min = clean_ok.copy()
    for name in attacks:
        xa = hand_adv[name]
        adv_ok = tl.np_logits(w, b, xa).argmax(-1) == y
        np.testing.assert_array_equal(rep.adv_correct[name], adv_ok)
        np.testing.assert_array_equal(rep.robust_correct[name], clean_ok & adv_ok)
        np.testing.assert_allclose(rep.linf[name], np.abs(xa - x).reshape(len(x), -1).max(-1),
                                   atol=1e-6)
        np.testing.assert_allclose(rep.l2[name], np.linalg.norm((xa - x).reshape(len(x), -1),
                                                                axis=-1), atol=1e-5)
        hand_min &= adv_ok
    # Worst case = per example (correct clean and after every attack); Min = the paper's,
    # the minimum over the columns' accuracies (L2L-DA Table A).
    np.testing.assert_array_equal(rep.worst_case_correct(), hand_min)
    np.testing.assert_array_equal(rep.clean_correct, clean_ok)
    assert rep.worst_case_accuracy() == pytest.approx(hand_min.mean())
    hand_cols = [np.mean(clean_ok & (tl.np_logits(w, b, hand_adv[k]).argmax(-1) == y))
                 for k in attacks]
    assert rep.min_accuracy() == pytest.approx(min(hand_cols))
    assert rep.clean_accuracy == pytest.approx(clean_ok.mean())
    for name, acc in rep.robust_accuracy.items():
        assert rep.worst_case_accuracy() <= rep.min_accuracy() <= acc <= rep.clean_accuracy
    # the do-nothing attack keeps clean accuracy and has zero distortion
    assert rep.robust_accuracy["None"] == rep.clean_accuracy
    assert rep.distortion_stats["None"] == {"linf_mean": 0.0, "linf_max": 0.0,
                                            "l2_mean": 0.0, "l2_max": 0.0}
    # FGSM moves every coordinate by exactly eps unless clipped
    assert rep.distortion_stats["FGSM"]["linf_max"] == pytest.approx(0.1, abs=1e-6)
    # the constant attack: correct exactly on the class f predicts for x_star
    c = tl.predict(f, x_star[None])[0]
    np.testing.assert_array_equal(rep.adv_correct["Const"], y == c)
    if data == "trained":
        assert rep.clean_accuracy >= 0.9  # the student learned the linear teacher
        assert rep.robust_accuracy["PGD5"] <= rep.robust_accuracy["FGSM"] + 0.05


def test_partial_last_batch_padding_equals_one_batch_and_compiles_once():
    x, y = tl.random_data(7, 37)
    f = tl.linear_logits_fn(*tl.random_linear(8))
    traces = {"n": 0}
    fgsm = tl.fgsm(f, 0.05)

    def counted(key, xb, yb):
        traces["n"] += 1  # Python side effect: runs once per trace
        return fgsm(key, xb, yb)

    attacks = {"FGSM": counted, "PGD": tl.pgd(f, 0.05, steps=3)}
    key = jax.random.key(1)
    small = ev.robustness_report(f, x, y, attacks, key=key, batch_size=8, progress=False)
    assert traces["n"] == 1  # 5 batches (last has 5 rows), one trace
    big = ev.robustness_report(f, x, y, attacks, key=key, batch_size=256, progress=False)
    assert traces["n"] == 2  # one more for the single 37-row batch
    np.testing.assert_array_equal(small.clean_predictions, big.clean_predictions)
    for name in attacks:
        np.testing.assert_array_equal(small.adv_predictions[name], big.adv_predictions[name])
        np.testing.assert_allclose(small.linf[name], big.linf[name], atol=1e-6)
        np.testing.assert_allclose(small.l2[name], big.l2[name], atol=1e-5)
    assert small.num_examples == 37 and small.labels.shape == (37,)


def test_keys_fold_in_deterministic_and_per_batch():
    x, y = tl.random_data(9, 20)
    f = tl.linear_logits_fn(*tl.random_linear(10))
    # jit=False: eager random ops compile once per shape (threefry compiles slowly on CPU)
    noise = {"noise": tl.noise_attack(0.2)}
    r1 = ev.robustness_report(f, x, y, noise, key=jax.random.key(3), batch_size=10,
                              progress=False, jit=False)
    r2 = ev.robustness_report(f, x, y, noise, key=jax.random.key(3), batch_size=10,
                              progress=False, jit=False)
    r3 = ev.robustness_report(f, x, y, noise, key=jax.random.key(4), batch_size=10,
                              progress=False, jit=False)
    np.testing.assert_array_equal(r1.l2["noise"], r2.l2["noise"])
    assert not np.allclose(r1.l2["noise"], r3.l2["noise"])
    # the two batches get different keys: their noise differs even for identical inputs
    xx = np.concatenate([x[:10], x[:10]])
    yy = np.concatenate([y[:10], y[:10]])
    r4 = ev.robustness_report(f, xx, yy, noise, key=jax.random.key(3), batch_size=10,
                              progress=False, jit=False)
    assert not np.allclose(r4.l2["noise"][:10], r4.l2["noise"][10:])
    np.testing.assert_allclose(r4.l2["noise"][:10], r1.l2["noise"][:10])
    # an attack's key does not depend on the other attacks of the suite
    r5 = ev.robustness_report(f, x, y, {"other": tl.noop, **noise}, key=jax.random.key(3),
                              batch_size=10,
                              progress=False, jit=False)
    np.testing.assert_array_equal(r5.l2["noise"], r1.l2["noise"])


def test_progress_bar_can_be_disabled(capsys):
    x, y = tl.random_data(11, 10)
    f = tl.linear_logits_fn(*tl.random_linear(12))
    ev.robustness_report(f, x, y, {"None": tl.noop}, key=jax.random.key(0), batch_size=4,
                         progress=False)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    ev.robustness_report(f, x, y, {"None": tl.noop}, key=jax.random.key(0), batch_size=4,
                         progress=True, desc="evalbar")
    out = capsys.readouterr()
    assert "evalbar" in out.err and "3/3" in out.err


def test_empty_attack_suite_gives_clean_min():
    x, y = tl.random_data(15, 6)
    f = tl.linear_logits_fn(*tl.random_linear(16))
    rep = ev.robustness_report(f, x, y, {}, key=jax.random.key(0), progress=False)
    assert rep.min_accuracy() == rep.clean_accuracy
    assert rep.worst_case_accuracy() == rep.clean_accuracy
    assert rep.attack_names == ()


def _report(labels, clean, **adv):
    labels = np.asarray(labels, np.int32)
    return ev.RobustnessReport(
        labels=labels, clean_predictions=np.asarray(clean, np.int32),
        adv_predictions={k: np.asarray(v, np.int32) for k, v in adv.items()},
        linf={k: np.full(len(labels), 0.1, np.float32) for k in adv},
        l2={k: np.arange(len(labels), dtype=np.float32) for k in adv})


def test_format_table_layout_and_values():
    y = [0, 1, 2, 0]
    plain = _report(y, [0, 1, 2, 1], FGSM=[1, 1, 0, 0], PGD10=[1, 0, 0, 0])
    robust = _report(y, [0, 1, 2, 0], FGSM=[0, 1, 2, 1], PGD10=[0, 1, 0, 0])
    table = ev.format_table({"Plain": plain, "PGD10": robust})
    lines = table.splitlines()
    assert lines[0] == "| Defense | Natural | FGSM | PGD10 | Min | Worst case |"
    assert lines[1].startswith("|---|---:")
    # Plain: clean 3/4; FGSM robust = clean & adv = [F, T, F, F] -> 25; PGD10 -> 0; Min 0
    assert lines[2] == "| Plain | 75.00 | 25.00 | 0.00 | 0.00 | 0.00 |"
    # PGD10 row: clean 4/4, FGSM [T,T,T,F] 75, PGD10 [T,T,F,T] 75. Min (the paper's, over
    # columns) = 75; worst case (per example) [T,T,F,F] = 50 < both columns.
    assert lines[3] == "| PGD10 | 100.00 | 75.00 | 75.00 | 75.00 | 50.00 |"
    # chosen columns; a missing column shows '-' and Min covers only the shown columns
    t2 = ev.format_table({"Plain": plain, "PGD10": robust}, columns=["FGSM", "CW"],
                         percent=False, digits=3)
    assert t2.splitlines()[3] == "| PGD10 | 1.000 | 0.750 | - | 0.750 | 0.750 |"
    assert str(robust).splitlines()[2].startswith("| model | 100.00")
    with pytest.raises(ValueError, match="reports"):
        ev.format_table({})


def test_to_dict_json_round_trip_and_distortion_curve():
    y = [0, 1, 2, 0]
    rep = _report(y, [0, 1, 2, 0], FGSM=[0, 1, 1, 1], PGD=[0, 0, 0, 1])
    d = json.loads(rep.to_json())
    assert d["num_examples"] == 4
    assert d["clean_accuracy"] == 1.0
    assert d["robust_accuracy"] == {"FGSM": 0.5, "PGD": 0.25}
    assert d["min_accuracy"] == 0.25 and d["worst_case_accuracy"] == 0.25
    assert d["distortion"]["PGD"] == {"linf_mean": pytest.approx(0.1), "linf_max":
                                      pytest.approx(0.1), "l2_mean": 1.5, "l2_max": 3.0}
    assert "per_example" not in d
    back = ev.RobustnessReport.from_dict(json.loads(rep.to_json(per_example=True)))
    assert back.to_dict() == rep.to_dict()
    np.testing.assert_array_equal(back.min_correct(), rep.min_correct())
    with pytest.raises(ValueError, match="per_example"):
        ev.RobustnessReport.from_dict(d)
    # PGD fooled examples 1, 2, 3 at l2 distortions 1, 2, 3: acc(t) = 1 - #{d <= t} / 4
    t, acc = rep.distortion_curve("PGD", norm="l2", thresholds=[0.5, 1.0, 2.5, np.inf])
    np.testing.assert_allclose(acc, [1.0, 0.75, 0.5, 0.25])
    assert acc[-1] == rep.robust_accuracy["PGD"]
    with pytest.raises(ValueError, match="attack"):
        rep.distortion_curve("CW")


def _ten(v):  # a valid 10-class logits_fn
    return jnp.zeros((v.shape[0], 10))


@pytest.mark.parametrize("bad, match", [
    (lambda x, y, a: ev.robustness_report(_ten, x[0], y, a, key=jax.random.key(0)),
     "`x`"),
    (lambda x, y, a: ev.robustness_report(_ten, x, y[:3], a, key=jax.random.key(0)),
     "`y`"),
    (lambda x, y, a: ev.robustness_report(_ten, x, y, a, key=jax.random.key(0),
                                          batch_size=0), "batch_size"),
    (lambda x, y, a: ev.robustness_report(_ten, x, y, [tl.noop], key=jax.random.key(0)),
     "attacks"),
    (lambda x, y, a: ev.robustness_report(_ten, x, y, a, key=0), "key"),
    (lambda x, y, a: ev.robustness_report(_ten, x * 3, y, a, key=jax.random.key(0)),
     "`x`"),
    (lambda x, y, a: ev.robustness_report(_ten, x[:0], y[:0], a, key=jax.random.key(0)),
     "`x`"),
])
def test_bad_input_raises(bad, match):
    x, y = tl.random_data(0, 5)
    with pytest.raises(ValueError, match=match):
        bad(x, y, {"None": tl.noop})


def test_attack_returning_wrong_shape_raises():
    x, y = tl.random_data(0, 5)
    f = tl.linear_logits_fn(*tl.random_linear(0))
    with pytest.raises(ValueError, match="shape"):
        ev.robustness_report(f, x, y, {"bad": lambda k, a, b: a[:, :2]}, key=jax.random.key(0),
                             progress=False)


def test_bind_attack_passes_model_key_and_hyperparameters():
    seen = {}

    def attack(logits_fn, key, x, y, *, eps, steps=1):
        seen.update(logits_fn=logits_fn, key=key, eps=eps, steps=steps)
        return x + eps

    f = lambda v: v
    bound = ev.bind_attack(attack, f, eps=0.25, steps=3)
    k = jax.random.key(5)
    out = bound(k, np.zeros((2, 1, 1, 1), np.float32), np.zeros(2, np.int32))
    np.testing.assert_allclose(out, 0.25)
    assert seen["logits_fn"] is f and seen["key"] is k and seen["eps"] == 0.25
    assert seen["steps"] == 3 and bound.__name__ == "attack"
    with pytest.raises(ValueError, match="attack"):
        ev.bind_attack(None, f)
