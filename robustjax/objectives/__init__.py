"""Per-method training objectives and min-max steps, built on :mod:`robustjax.training`.

An objective maps ``(params, batch_stats, apply_fn, batch, key)`` to a loss and metrics and plugs
into :func:`robustjax.training.fit` / :func:`robustjax.training.make_train_step`: Madry et al.'s
PGD adversarial training (with an ε ramp), TRADES, LLR and ADV-k (Qin et al.), the spatial
paper's bound regularizers and spatial adversarial training, and the WGAN-GP / class-conditional
VAE objectives of the generative defenses. L2L-DA's min-max step and the attack-generator
baselines (AdvGAN, GAP, L2L*) carry their own state.
"""

from robustjax.training._objectives import adversarial_objective
from robustjax.training._llr import adv_k_objective
from robustjax.training._llr import llr_objective
from robustjax.training._llr import nominal_batch_stats
from robustjax.training._llr import trades_objective
from robustjax.training._generative import WGANState
from robustjax.training._generative import class_conditional_vae_objective
from robustjax.training._generative import gradient_penalty
from robustjax.training._generative import make_wgan_gp
from robustjax.training._generative import wgan_generator_loss
from robustjax.training._generative import wgan_gp_critic_loss
from robustjax.training._l2lda import L2LDAState
from robustjax.training._l2lda import create_l2lda_state
from robustjax.training._l2lda import l2lda_generator_fn
from robustjax.training._l2lda import make_l2lda_step
from robustjax.training._l2lda import l2lda_generator_loss
from robustjax.training._l2lda import l2lda_cost_model
from robustjax.training._l2l_baselines import GeneratorState
from robustjax.training._l2l_baselines import create_generator_state
from robustjax.training._l2l_baselines import make_advgan_step
from robustjax.training._l2l_baselines import make_gap_step
from robustjax.training._l2l_baselines import make_l2l_generator_step
from robustjax.training._l2l_baselines import make_l2l_star_step
from robustjax.training._l2l_baselines import train_attack_generator
from robustjax.training._spatial import DUAL_KEY
from robustjax.training._spatial import init_sdp_dual
from robustjax.training._spatial import mlp_weights
from robustjax.training._spatial import norm_regularized_objective
from robustjax.training._spatial import norm_regularizer
from robustjax.training._spatial import pair_indices
from robustjax.training._spatial import pairwise_dual_bounds
from robustjax.training._spatial import sdp_dual_objective
from robustjax.training._spatial import sdp_regularizer
from robustjax.training._spatial import spatial_adversarial_objective

__all__ = [
    "adversarial_objective",
    "adv_k_objective",
    "llr_objective",
    "nominal_batch_stats",
    "trades_objective",
    "WGANState",
    "class_conditional_vae_objective",
    "gradient_penalty",
    "make_wgan_gp",
    "wgan_generator_loss",
    "wgan_gp_critic_loss",
    "L2LDAState",
    "create_l2lda_state",
    "l2lda_generator_fn",
    "make_l2lda_step",
    "l2lda_generator_loss",
    "l2lda_cost_model",
    "GeneratorState",
    "create_generator_state",
    "make_advgan_step",
    "make_gap_step",
    "make_l2l_generator_step",
    "make_l2l_star_step",
    "train_attack_generator",
    "DUAL_KEY",
    "init_sdp_dual",
    "mlp_weights",
    "norm_regularized_objective",
    "norm_regularizer",
    "pair_indices",
    "pairwise_dual_bounds",
    "sdp_dual_objective",
    "sdp_regularizer",
    "spatial_adversarial_objective",
]
