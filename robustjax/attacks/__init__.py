"""Adversarial attacks: ``attack(logits_fn, key, x, y, *, ...) -> x_adv`` (``stop_gradient``).

Gradient attacks (FGSM, PGD, Auto-PGD / APGD-T and its targeted / random-targeted / multi-targeted forms,
Carlini–Wagner ℓ2), a black-box NES attack, and the BPDA / EOT wrappers that make
non-differentiable or randomized defenses attackable by all of them; the stAdv flow attack;
the L2L-DA recurrent generator attack; attacks on generative-model defenses through z*.
"""

from robustjax.attacks._base import LOSSES
from robustjax.attacks._base import STEP_RULES
from robustjax.attacks._base import normalize_l2
from robustjax.attacks._apgd import APGDTrace
from robustjax.attacks._apgd import apgd
from robustjax.attacks._apgd import apgd_checkpoints
from robustjax.attacks._apgd import apgd_targeted
from robustjax.attacks._apgd import apgd_with_trace
from robustjax.attacks._cw import CWResult
from robustjax.attacks._cw import carlini_wagner_l2
from robustjax.attacks._cw import carlini_wagner_l2_with_info
from robustjax.attacks._fab import FABInfo
from robustjax.attacks._fab import fab
from robustjax.attacks._fab import fab_projection
from robustjax.attacks._fab import fab_with_info
from robustjax.attacks._square import SquareInfo
from robustjax.attacks._square import square
from robustjax.attacks._square import square_p_schedule
from robustjax.attacks._square import square_with_info
from robustjax.attacks._fgsm import fgsm
from robustjax.attacks._nes import nes_attack
from robustjax.attacks._nes import nes_gradient
from robustjax.attacks._pgd import PGD
from robustjax.attacks._pgd import PGDState
from robustjax.attacks._pgd import PGDTrace
from robustjax.attacks._pgd import make_pgd
from robustjax.attacks._pgd import multi_targeted
from robustjax.attacks._pgd import pgd
from robustjax.attacks._pgd import pgd_with_trace
from robustjax.attacks._pgd import random_targeted
from robustjax.attacks._wrappers import bpda
from robustjax.attacks._wrappers import eot
from robustjax.attacks._l2l import l2l_attack
from robustjax.attacks._l2l import L2LRecurrence
from robustjax.attacks._l2l import l2l_perturbation
from robustjax.attacks._l2l import l2l_perturbation_steps
from robustjax.attacks._l2l import l2l_recurrence
from robustjax.attacks._l2l import normalize_gradient
from robustjax.attacks._stadv import StadvResult
from robustjax.attacks._stadv import StadvSweep
from robustjax.attacks._stadv import stadv
from robustjax.attacks._stadv import stadv_flow
from robustjax.attacks._stadv import stadv_tau_sweep
from robustjax.attacks._generative import SCHEDULES
from robustjax.attacks._generative import GenerativeAttackResult
from robustjax.attacks._generative import abs_latent_attack
from robustjax.attacks._generative import abs_latent_attack_with_info
from robustjax.attacks._generative import advt_cw_l2
from robustjax.attacks._generative import generative_cw_l2
from robustjax.attacks._generative import generative_cw_l2_with_info
from robustjax.attacks._generative import generative_nes_l2
from robustjax.attacks._generative import generative_nes_l2_with_info
from robustjax.attacks._generative import make_defensegan_attack
from robustjax.attacks._generative import step_size_schedule
from robustjax.attacks._generators import advgan_attack
from robustjax.attacks._generators import advgan_perturbation
from robustjax.attacks._generators import gap_attack
from robustjax.attacks._generators import gap_perturbation
from robustjax.attacks._generators import l2l_star_attack

__all__ = [
    "FABInfo",
    "fab",
    "fab_projection",
    "fab_with_info",
    "SquareInfo",
    "square",
    "square_p_schedule",
    "square_with_info",
    "APGDTrace",
    "apgd",
    "apgd_checkpoints",
    "apgd_targeted",
    "apgd_with_trace",
    "advgan_attack",
    "advgan_perturbation",
    "gap_attack",
    "gap_perturbation",
    "l2l_star_attack",
    "SCHEDULES",
    "GenerativeAttackResult",
    "abs_latent_attack",
    "abs_latent_attack_with_info",
    "advt_cw_l2",
    "generative_cw_l2",
    "generative_cw_l2_with_info",
    "generative_nes_l2",
    "generative_nes_l2_with_info",
    "make_defensegan_attack",
    "step_size_schedule",
    "l2l_attack",
    "l2l_perturbation",
    "l2l_perturbation_steps",
    "l2l_recurrence",
    "L2LRecurrence",
    "normalize_gradient",
    "StadvResult",
    "StadvSweep",
    "stadv",
    "stadv_flow",
    "stadv_tau_sweep",
    "LOSSES",
    "PGD",
    "PGDState",
    "PGDTrace",
    "STEP_RULES",
    "bpda",
    "CWResult",
    "carlini_wagner_l2",
    "carlini_wagner_l2_with_info",
    "eot",
    "fgsm",
    "make_pgd",
    "multi_targeted",
    "nes_attack",
    "nes_gradient",
    "normalize_l2",
    "pgd",
    "pgd_with_trace",
    "random_targeted",
]
