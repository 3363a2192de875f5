"""Robustness evaluation: AutoAttack, per-attack / Min / worst-case accuracy, curves, masking
checks, plots."""

from robustjax.evaluation._autoattack import AUTOATTACK_VERSIONS
from robustjax.evaluation._autoattack import AutoAttackResult
from robustjax.evaluation._autoattack import autoattack
from robustjax.evaluation._autoattack import autoattack_fn
from robustjax.evaluation._autoattack import autoattack_members
from robustjax.evaluation._curves import Curve
from robustjax.evaluation._curves import accuracy_at_distortion
from robustjax.evaluation._curves import accuracy_vs_distortion
from robustjax.evaluation._curves import accuracy_vs_eps
from robustjax.evaluation._masking import MaskingFlag
from robustjax.evaluation._masking import check_blackbox_vs_whitebox
from robustjax.evaluation._masking import check_iterative_vs_single_step
from robustjax.evaluation._masking import check_loss_increasing
from robustjax.evaluation._masking import check_robust_below_clean
from robustjax.evaluation._masking import check_unbounded_attack
from robustjax.evaluation._masking import format_masking_summary
from robustjax.evaluation._masking import gradient_masking_checks
from robustjax.evaluation._masking import unbounded_attack_accuracy
from robustjax.evaluation._parallel import data_parallel
from robustjax.evaluation._plots import plot_accuracy_vs_distortion
from robustjax.evaluation._plots import plot_accuracy_vs_eps
from robustjax.evaluation._plots import plot_examples
from robustjax.evaluation._report import RobustnessReport
from robustjax.evaluation._report import attack_key
from robustjax.evaluation._report import bind_attack
from robustjax.evaluation._report import correct
from robustjax.evaluation._report import distortion
from robustjax.evaluation._report import format_table
from robustjax.evaluation._report import robust_accuracy
from robustjax.evaluation._report import robustness_report
from robustjax.evaluation._protocols import LLR_ATTACKS
from robustjax.evaluation._protocols import adam_step_schedule
from robustjax.evaluation._protocols import llr_evaluation_attacks
from robustjax.evaluation._protocols import random_targeted_success_rate
from robustjax.evaluation._stats import format_accuracy
from robustjax.evaluation._stats import mcnemar_exact
from robustjax.evaluation._stats import wilson_interval

__all__ = [
    "AUTOATTACK_VERSIONS",
    "AutoAttackResult",
    "autoattack",
    "autoattack_fn",
    "autoattack_members",
    "LLR_ATTACKS",
    "adam_step_schedule",
    "llr_evaluation_attacks",
    "random_targeted_success_rate",
    "Curve",
    "MaskingFlag",
    "RobustnessReport",
    "accuracy_at_distortion",
    "accuracy_vs_distortion",
    "accuracy_vs_eps",
    "attack_key",
    "bind_attack",
    "check_blackbox_vs_whitebox",
    "check_iterative_vs_single_step",
    "check_loss_increasing",
    "check_robust_below_clean",
    "check_unbounded_attack",
    "correct",
    "data_parallel",
    "distortion",
    "format_masking_summary",
    "format_table",
    "gradient_masking_checks",
    "plot_accuracy_vs_distortion",
    "plot_accuracy_vs_eps",
    "plot_examples",
    "robust_accuracy",
    "robustness_report",
    "unbounded_attack_accuracy",
    "format_accuracy",
    "mcnemar_exact",
    "wilson_interval",
]
