"""Gradient-masking sanity checks for a robustness evaluation.

Each ``check_*`` function is a pure function of numbers (accuracies are fractions in ``[0, 1]``)
returning a :class:`MaskingFlag`; ``passed=False`` marks a *suspicious* evaluation — the usual
symptoms of obfuscated gradients listed by Athalye, Carlini & Wagner (ICML 2018, §3.1) and used in
the gradient-obfuscation study of the LLR paper (Qin et al., NeurIPS 2019, supplementary):

(a) an iterative attack is weaker than a single-step one;
(b) an unbounded attack does not reach ~0 % accuracy;
(c) a black-box (gradient-free) attack is stronger than the white-box one;
(d) the attack loss does not increase along the attack;
(e) robust accuracy is above clean accuracy.

:func:`gradient_masking_checks` runs every applicable check from a :class:`RobustnessReport`
plus optional extra runs; :func:`format_masking_summary` renders the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from robustjax._src import validation as V
from robustjax._src.types import ArrayLike, BoundAttack, LogitsFn, PRNGKey
from robustjax.evaluation._report import RobustnessReport
from robustjax.evaluation._report import robustness_report

__all__ = [
    "MaskingFlag",
    "check_iterative_vs_single_step",
    "check_unbounded_attack",
    "check_blackbox_vs_whitebox",
    "check_loss_increasing",
    "check_robust_below_clean",
    "unbounded_attack_accuracy",
    "gradient_masking_checks",
    "format_masking_summary",
]


class MaskingFlag(NamedTuple):
    """Outcome of one sanity check: ``passed=False`` means the evaluation looks suspicious."""

    name: str
    passed: bool
    detail: str


def _pct(v: float) -> str:
    return f"{100.0 * v:.2f}%"


def _acc(v: float, name: str) -> float:
    V.check_probability(v, name)
    return float(v)


def check_iterative_vs_single_step(
    iterative_accuracy: float,
    single_step_accuracy: float,
    *,
    tol: float = 0.01,
    iterative_name: str = "PGD",
    single_step_name: str = "FGSM",
) -> MaskingFlag:
    """(a) An iterative attack must be at least as strong as a single-step one.

    Fails when ``iterative_accuracy > single_step_accuracy + tol``.
    """
    it = _acc(iterative_accuracy, "iterative_accuracy")
    ss = _acc(single_step_accuracy, "single_step_accuracy")
    V.check_nonnegative(tol, "tol")
    ok = it <= ss + tol
    rel = "<=" if ok else ">"
    return MaskingFlag(
        "iterative_vs_single_step", ok,
        f"{iterative_name} {_pct(it)} {rel} {single_step_name} {_pct(ss)} + tol {_pct(tol)}"
        + ("" if ok else ": the iterative attack is weaker than the single-step one"),
    )


def check_unbounded_attack(
    unbounded_accuracy: float, *, tol: float = 0.01, eps: float | None = None
) -> MaskingFlag:
    """(b) An attack with an unbounded (huge) ε must drive accuracy to ~0.

    Fails when ``unbounded_accuracy > tol``.
    """
    acc = _acc(unbounded_accuracy, "unbounded_accuracy")
    V.check_nonnegative(tol, "tol")
    ok = acc <= tol
    at = "" if eps is None else f" at eps={eps:g}"
    return MaskingFlag(
        "unbounded_attack", ok,
        f"robust accuracy{at} {_pct(acc)} {'<=' if ok else '>'} tol {_pct(tol)}"
        + ("" if ok else ": an unbounded attack should reach ~0%"),
    )


def check_blackbox_vs_whitebox(
    blackbox_accuracy: float,
    whitebox_accuracy: float,
    *,
    tol: float = 0.01,
    blackbox_name: str = "NES",
    whitebox_name: str = "PGD",
) -> MaskingFlag:
    """(c) A white-box attack must be at least as strong as a black-box one.

    Fails when ``whitebox_accuracy > blackbox_accuracy + tol``.
    """
    bb = _acc(blackbox_accuracy, "blackbox_accuracy")
    wb = _acc(whitebox_accuracy, "whitebox_accuracy")
    V.check_nonnegative(tol, "tol")
    ok = wb <= bb + tol
    return MaskingFlag(
        "blackbox_vs_whitebox", ok,
        f"white-box {whitebox_name} {_pct(wb)} {'<=' if ok else '>'} black-box "
        f"{blackbox_name} {_pct(bb)} + tol {_pct(tol)}"
        + ("" if ok else ": the black-box attack is stronger than the white-box one"),
    )


def check_loss_increasing(
    loss_trace: ArrayLike,
    *,
    tol: float = 0.0,
    max_stalled_fraction: float = 0.5,
) -> MaskingFlag:
    r"""(d) The attack's loss must increase from the first to the last iterate.

    ``loss_trace`` is ``[T]`` (e.g. the mean loss per step) or ``[T, N]`` (per example). With
    :math:`\bar\ell_t` the mean over examples, the check fails when
    :math:`\bar\ell_{T-1} - \bar\ell_0 \le` ``tol``, when the trace has non-finite values, or
    (``[T, N]`` only) when more than ``max_stalled_fraction`` of the examples end with a loss
    :math:`\le` their initial loss. Non-monotone traces (sign steps oscillate) are allowed; the
    number of decreasing steps is reported.

    Args:
      loss_trace: ``[T]`` or ``[T, N]`` with ``T >= 2``.
      tol: required increase of the mean loss (≥ 0).
      max_stalled_fraction: in ``[0, 1]``.
    """
    tr = np.asarray(loss_trace, np.float64)
    if tr.ndim not in (1, 2):
        raise ValueError(f"`loss_trace` must have rank 1 or 2, got shape {tr.shape}.")
    if tr.shape[0] < 2:
        raise ValueError(f"`loss_trace` must have at least 2 steps, got shape {tr.shape}.")
    V.check_nonnegative(tol, "tol")
    V.check_probability(max_stalled_fraction, "max_stalled_fraction")
    if not np.all(np.isfinite(tr)):
        return MaskingFlag("loss_increasing", False, "the loss trace contains NaN or inf")
    mean = tr if tr.ndim == 1 else tr.mean(axis=1)
    gain = float(mean[-1] - mean[0])
    down = int(np.count_nonzero(np.diff(mean) < 0))
    ok = gain > tol
    detail = (f"mean loss {mean[0]:.4g} -> {mean[-1]:.4g} (gain {gain:+.4g}, tol {tol:g}); "
              f"{down}/{len(mean) - 1} steps decreased")
    if tr.ndim == 2:
        stalled = float(np.mean(tr[-1] <= tr[0]))
        detail += f"; {_pct(stalled)} of examples did not increase their loss"
        ok = ok and stalled <= max_stalled_fraction
    if not ok:
        detail += ": the attack does not increase the loss"
    return MaskingFlag("loss_increasing", ok, detail)


def check_robust_below_clean(
    robust_accuracy: float | Mapping[str, float],
    clean_accuracy: float,
    *,
    tol: float = 0.0,
) -> MaskingFlag:
    """(e) No attack may give higher accuracy than the clean inputs.

    ``robust_accuracy`` is one accuracy or ``{attack: accuracy}``; use the accuracy on the
    adversarial examples *not* conditioned on clean correctness
    (:attr:`RobustnessReport.adversarial_accuracy`), otherwise the check holds by construction.
    Fails when any value exceeds ``clean_accuracy + tol``.
    """
    clean = _acc(clean_accuracy, "clean_accuracy")
    V.check_nonnegative(tol, "tol")
    accs = dict(robust_accuracy) if isinstance(robust_accuracy, Mapping) else {
        "attack": robust_accuracy}
    for k, v in accs.items():
        _acc(v, f"robust_accuracy[{k!r}]")
    bad = {k: float(v) for k, v in accs.items() if float(v) > clean + tol}
    if bad:
        items = ", ".join(f"{k} {_pct(v)}" for k, v in bad.items())
        return MaskingFlag("robust_below_clean", False,
                           f"{items} > clean {_pct(clean)} + tol {_pct(tol)}: an attack "
                           "improved accuracy")
    worst = max(accs.values()) if accs else float("nan")
    return MaskingFlag("robust_below_clean", True,
                       f"max adversarial accuracy {_pct(worst)} <= clean {_pct(clean)}")


def unbounded_attack_accuracy(
    logits_fn: LogitsFn,
    x: ArrayLike,
    y: ArrayLike,
    attack_factory: Callable[[float], BoundAttack],
    *,
    key: PRNGKey,
    eps: float = 1e3,
    batch_size: int = 256,
    progress: bool = False,
) -> float:
    """Robust accuracy under ``attack_factory(eps)`` with a huge ``eps`` (input for check (b)).

    With ``eps`` far above the image range every image is reachable; a sound attack then
    reaches ~0 % (x stay in ``[0, 1]``, so the attack is limited only by the box).
    Cost: one :func:`robustness_report` with one attack.
    """
    V.check_positive(eps, "eps")
    rep = robustness_report(logits_fn, x, y, {"unbounded": attack_factory(eps)},
                            key=key, batch_size=batch_size, progress=progress)
    return rep.robust_accuracy["unbounded"]


def _pick(names: Sequence[str], given: str | Sequence[str] | None, pattern: str) -> list[str]:
    if given is None:
        return [n for n in names if pattern in n.lower()]
    given = [given] if isinstance(given, str) else list(given)
    for g in given:
        if g not in names:
            raise ValueError(f"attack {g!r} is not in the report (have {tuple(names)}).")
    return given


def gradient_masking_checks(
    report: RobustnessReport,
    *,
    single_step: str | Sequence[str] | None = None,
    iterative: str | Sequence[str] | None = None,
    blackbox: str | Sequence[str] | None = None,
    unbounded_accuracy: float | None = None,
    unbounded_eps: float | None = None,
    loss_trace: ArrayLike | None = None,
    tol: float = 0.01,
    verbose: bool = False,
) -> list[MaskingFlag]:
    """Run every applicable masking check on a report plus optional extra runs.

    Attack roles are named explicitly or, when ``None``, found by name (case-insensitive):
    single-step = names containing ``"fgsm"``, iterative = ``"pgd"``, black-box = ``"nes"``.
    White-box attacks are all attacks that are not black-box. Checks run:

    * (a) for each iterative attack against the best (lowest-accuracy) single-step attack whose
      largest ℓ∞ distortion does not exceed the iterative attack's (so a report holding
      several ε compares like with like);
    * (b) when ``unbounded_accuracy`` is given (see :func:`unbounded_attack_accuracy`);
    * (c) strongest white-box vs strongest black-box within its ℓ∞ budget, when both exist;
    * (d) when ``loss_trace`` is given;
    * (e) always, on the unconditioned adversarial accuracies.

    Checks whose inputs are missing are skipped (not listed). Accuracies compared in (a)–(c) are
    the report's robust accuracies (correct clean and after the attack).

    Args:
      report: a :class:`RobustnessReport`.
      single_step, iterative, blackbox: attack names (one or several) or ``None``.
      unbounded_accuracy: robust accuracy under an unbounded-ε attack, in ``[0, 1]``.
      unbounded_eps: its ε (for the message only).
      loss_trace: ``[T]`` or ``[T, N]`` attack loss per step.
      tol: tolerance for (a), (b), (c) (fraction); (d) uses 0 and (e) uses ``0``.
      verbose: print :func:`format_masking_summary` of the result.

    Returns:
      ``list[MaskingFlag]``.
    """
    if not isinstance(report, RobustnessReport):
        raise ValueError(f"`report` must be a RobustnessReport, got {type(report).__name__}.")
    V.check_nonnegative(tol, "tol")
    names = list(report.attack_names)
    acc = report.robust_accuracy
    ss = _pick(names, single_step, "fgsm")
    it = _pick(names, iterative, "pgd")
    bb = _pick(names, blackbox, "nes")
    flags: list[MaskingFlag] = []
    # Only compare attacks whose budgets are comparable: a reference (single-step / black-box)
    # attack is paired with an attack under test only if its largest ℓ∞ distortion does not
    # exceed the tested attack's (a report may hold several ε, e.g. FGSM ε=0.3 and PGD ε=0.1).
    linf_max = {k: v["linf_max"] for k, v in report.distortion_stats.items()}

    def within(ref: str, tested: str) -> bool:
        a, b = linf_max.get(ref, float("nan")), linf_max.get(tested, float("nan"))
        if not (np.isfinite(a) and np.isfinite(b)):
            return True
        return a <= b * (1 + 1e-4) + 1e-6

    for name in it if ss else []:
        cands = [k for k in ss if within(k, name)]
        if not cands:
            continue
        best_ss = min(cands, key=lambda k: acc[k])
        flags.append(check_iterative_vs_single_step(
            acc[name], acc[best_ss], tol=tol, iterative_name=name, single_step_name=best_ss))
    if unbounded_accuracy is not None:
        flags.append(check_unbounded_attack(unbounded_accuracy, tol=tol, eps=unbounded_eps))
    wb = [n for n in names if n not in bb]
    if bb and wb:
        best_wb = min(wb, key=lambda k: acc[k])
        cands = [k for k in bb if within(k, best_wb)]
        if cands:
            best_bb = min(cands, key=lambda k: acc[k])
            flags.append(check_blackbox_vs_whitebox(
                acc[best_bb], acc[best_wb], tol=tol, blackbox_name=best_bb,
                whitebox_name=best_wb))
    if loss_trace is not None:
        flags.append(check_loss_increasing(loss_trace))
    flags.append(check_robust_below_clean(report.adversarial_accuracy, report.clean_accuracy))
    if verbose:
        print(format_masking_summary(flags))
    return flags


def format_masking_summary(flags: Sequence[MaskingFlag]) -> str:
    """Readable multi-line summary: one ``[ok]`` / ``[SUSPICIOUS]`` line per check."""
    lines = []
    for f in flags:
        lines.append(f"[{'ok' if f.passed else 'SUSPICIOUS'}] {f.name}: {f.detail}")
    bad = sum(not f.passed for f in flags)
    lines.append(f"{len(flags) - bad}/{len(flags)} checks passed"
                 + ("" if not bad else f"; {bad} suggest gradient masking or a weak evaluation"))
    return "\n".join(lines)
