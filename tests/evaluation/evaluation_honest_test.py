"""robustness_report cannot overstate robustness silently: probability outputs, masking checks,
attacks that fail (unchanged points), distortion thresholds, re-scoring of randomized models."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import evaluation_testlib as tl
from robustjax import attacks
from robustjax import evaluation as ev


def _model():
    x, y, (w, b) = tl.trained_linear()
    return x, y, tl.linear_logits_fn(w, b)


def test_pgd_on_softmax_outputs_is_flagged_as_probabilities():
    x, y, f = _model()
    probs = lambda v: jax.nn.softmax(10.0 * f(v), axis=-1)  # noqa: E731
    suite = {"PGD": ev.bind_attack(attacks.pgd, probs, eps=0.05, steps=5)}
    rep = ev.robustness_report(probs, x, y, suite, key=jax.random.key(0), progress=False)
    table = ev.format_table({"softmax": rep})
    assert "looks like probabilities" in table
    assert any("probabilities" in n for n in rep.notes)
    # The same model returning logits gets no such warning.
    rep2 = ev.robustness_report(f, x, y, {"PGD": ev.bind_attack(attacks.pgd, f, eps=0.05,
                                                                 steps=5)},
                                key=jax.random.key(0), progress=False)
    assert not any("probabilities" in n for n in rep2.notes)
    assert "looks like probabilities" not in ev.format_table({"logits": rep2})


def test_zero_gradient_and_unchanged_points_are_reported():
    x, y, f = _model()
    # A saturating hard-max model: exact zero gradients everywhere (gradient masking).
    hard = lambda v: 50.0 * jax.nn.one_hot(jnp.argmax(f(v), -1), 3)  # noqa: E731
    suite = {"PGD": ev.bind_attack(attacks.pgd, hard, eps=0.05, steps=3, random_start=False)}
    rep = ev.robustness_report(hard, x, y, suite, key=jax.random.key(0), progress=False)
    table = ev.format_table({"hard": rep})
    assert "exactly zero input gradient" in table
    n_clean = int(rep.clean_correct.sum())
    assert f"returned {n_clean} of {n_clean} correctly classified points unchanged" in table


def test_masking_check_warning_is_printed_with_the_table():
    x, y, f = _model()
    eps = 0.1

    def weak_pgd(key, v, w):  # a broken "iterative" attack: random signs at full budget
        del w
        return jnp.clip(v + eps * jnp.sign(jax.random.normal(key, v.shape)), 0.0, 1.0)

    suite = {"FGSM": ev.bind_attack(attacks.fgsm, f, eps=eps), "PGD": weak_pgd}
    rep = ev.robustness_report(f, x, y, suite, key=jax.random.key(0), progress=False)
    assert rep.robust_accuracy["PGD"] > rep.robust_accuracy["FGSM"] + 0.05
    table = ev.format_table({"m": rep})
    assert "gradient masking check iterative_vs_single_step" in table
    off = ev.robustness_report(f, x, y, suite, key=jax.random.key(0), progress=False,
                               masking_checks=False)
    assert "iterative_vs_single_step" not in ev.format_table({"m": off})
    # Several eps in one report: FGSM at a larger eps is not compared with PGD at a smaller.
    both = {"FGSM big": ev.bind_attack(attacks.fgsm, f, eps=0.3),
            "PGD small": ev.bind_attack(attacks.pgd, f, eps=0.02, steps=5)}
    rep3 = ev.robustness_report(f, x, y, both, key=jax.random.key(0), progress=False)
    assert rep3.robust_accuracy["PGD small"] > rep3.robust_accuracy["FGSM big"]
    assert not any("iterative_vs_single_step" in n for n in rep3.notes)


def test_distortion_threshold_for_unbounded_attacks():
    x, y, f = _model()
    far = tl.constant_attack(np.zeros(tl.SHAPE, np.float32))  # unbounded: one far image
    rep = ev.robustness_report(f, x, y, {"CW": far}, key=jax.random.key(0), progress=False,
                               distortion_threshold={"CW": ("l2", 0.5)})
    fooled = rep.adv_predictions["CW"] != y
    beyond = rep.l2["CW"] > 0.5
    np.testing.assert_array_equal(rep.adv_correct["CW"], ~fooled | beyond)
    assert rep.robust_accuracy["CW"] == pytest.approx(
        np.mean(rep.clean_correct & (~fooled | beyond)))
    assert np.any(rep.clean_correct & fooled & beyond)  # the threshold matters here
    table = ev.format_table({"m": rep})
    assert "unbounded attack scored at ||delta||_2 <= 0.5" in table
    back = ev.RobustnessReport.from_dict(rep.to_dict(per_example=True))
    assert back.robust_accuracy == rep.robust_accuracy and back.notes == rep.notes
    with pytest.raises(ValueError, match="distortion_threshold"):
        ev.robustness_report(f, x, y, {"CW": far}, key=jax.random.key(0),
                             distortion_threshold={"CW": ("l7", 0.5)})
    with pytest.raises(ValueError, match="distortion_threshold"):
        ev.robustness_report(f, x, y, {"CW": far}, key=jax.random.key(0),
                             distortion_threshold={"other": ("l2", 0.5)})


def test_randomized_model_rescored_with_fresh_keys():
    x, y, f = _model()

    def noisy(key, v):  # a randomized defense: strong logit noise
        return f(v) + 3.0 * jax.random.normal(key, (v.shape[0], 3))

    key = jax.random.key(7)
    rep = ev.robustness_report(noisy, x, y, {"None": tl.noop}, key=key, batch_size=len(x),
                               progress=False, rescore_keys=5)
    r = rep.rescored_accuracy
    assert set(r) == {"clean", "None"}
    assert r["clean"]["worst"] <= r["clean"]["mean"] - 0.05  # draws disagree
    assert rep.clean_accuracy == pytest.approx(r["clean"]["worst"])
    # The clean draws use fold_in(attack_key(fold_in(key, crc32("rescore")), "clean", 0), d):
    # keys the attacks never see (their keys are attack_key(key, name, b)).
    base = jax.random.fold_in(key, zlib.crc32(b"rescore") & 0x7FFFFFFF)
    k0 = ev.attack_key(base, "clean", 0)
    want = np.stack([tl.predict(lambda v, d=d: noisy(jax.random.fold_in(k0, d), v), x) == y
                     for d in range(5)])
    np.testing.assert_array_equal(rep.draw_correct["clean"], want)
    assert not np.array_equal(jax.random.key_data(k0),
                              jax.random.key_data(ev.attack_key(key, "clean", 0)))
    assert "re-scored with 5 fresh keys" in ev.format_table({"rand": rep})
