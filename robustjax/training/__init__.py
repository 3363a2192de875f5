"""Training: train state, objectives, pure train steps, data-parallel ``fit`` with checkpoints."""

from robustjax.training._checkpoint import make_checkpoint_manager
from robustjax.training._checkpoint import restore_checkpoint
from robustjax.training._checkpoint import save_checkpoint
from robustjax.training._distributed import add_distributed_args
from robustjax.training._distributed import define_distributed_flags
from robustjax.training._distributed import initialize_distributed
from robustjax.training._distributed import initialize_from_args
from robustjax.training._fit import epoch_permutation
from robustjax.training._fit import NonFiniteLossError
from robustjax.training._fit import fit
from robustjax.training._objectives import Objective
from robustjax.training._objectives import adversarial_objective
from robustjax.training._objectives import apply_model
from robustjax.training._objectives import example_keys
from robustjax.training._objectives import standard_objective
from robustjax.training._optimizers import make_optimizer
from robustjax.training._optimizers import make_schedule
from robustjax.training._parallel import make_mesh
from robustjax.training._parallel import pmap_replicate
from robustjax.training._parallel import pmap_split
from robustjax.training._parallel import pmap_unreplicate
from robustjax.training._parallel import replicate
from robustjax.training._parallel import shard_batch
from robustjax.training._steps import make_eval_step
from robustjax.training._steps import make_train_step
from robustjax.training._train_state import TrainState
from robustjax.training._train_state import create_train_state
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
    "NonFiniteLossError",
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
    "l2lda_generator_loss",
    "l2lda_cost_model",
    "GeneratorState",
    "create_generator_state",
    "make_advgan_step",
    "make_gap_step",
    "make_l2l_generator_step",
    "make_l2l_star_step",
    "train_attack_generator",
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
    "Objective",
    "TrainState",
    "add_distributed_args",
    "adversarial_objective",
    "apply_model",
    "create_train_state",
    "define_distributed_flags",
    "epoch_permutation",
    "example_keys",
    "fit",
    "initialize_distributed",
    "initialize_from_args",
    "make_checkpoint_manager",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "pmap_replicate",
    "pmap_split",
    "pmap_unreplicate",
    "replicate",
    "restore_checkpoint",
    "save_checkpoint",
    "shard_batch",
    "standard_objective",
]
