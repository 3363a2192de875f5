"""robustness_report and the masking checks driven by the library's own attacks."""

import jax
import numpy as np
import pytest

import evaluation_testlib as tl
from robustjax import evaluation as ev

attacks_lib = pytest.importorskip("robustjax.attacks")


def test_report_with_library_attacks_matches_numpy_and_passes_masking_checks():
    x, y, (w, b) = tl.trained_linear()
    f = tl.linear_logits_fn(w, b)
    eps = 0.1
    suite = {
        "FGSM": ev.bind_attack(attacks_lib.fgsm, f, eps=eps),
        "PGD5": ev.bind_attack(attacks_lib.pgd, f, eps=eps, steps=5, step_size=2.5 * eps / 5,
                               random_start=False),
    }
    rep = ev.robustness_report(f, x, y, suite, key=jax.random.key(0), batch_size=64,
                               progress=False)
    # the library FGSM is the closed-form NumPy FGSM on a linear model
    ref = tl.np_logits(w, b, tl.np_fgsm(w, b, x, y, eps)).argmax(-1) == y
    np.testing.assert_array_equal(rep.adv_correct["FGSM"], ref)
    assert rep.distortion_stats["PGD5"]["linf_max"] <= eps + 1e-6
    for acc in rep.robust_accuracy.values():
        assert rep.min_accuracy() <= acc <= rep.clean_accuracy
    assert rep.robust_accuracy["PGD5"] < rep.clean_accuracy
    if hasattr(attacks_lib, "pgd_with_trace"):
        _, trace = jax.jit(lambda a, c: attacks_lib.pgd_with_trace(
            f, jax.random.key(1), a, c, eps=eps, steps=5, random_start=False))(x, y)
        assert ev.check_loss_increasing(trace).passed
        flags = ev.gradient_masking_checks(rep, loss_trace=trace)
    else:
        flags = ev.gradient_masking_checks(rep)
    assert all(fl.passed for fl in flags), ev.format_masking_summary(flags)
