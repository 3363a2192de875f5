"""Training: the generic loop — train state, the standard objective, pure train/eval steps,
``fit`` with checkpoints and resume, optimizers, data parallelism over devices and hosts.

The per-method objectives and min-max steps (adversarial training, TRADES, LLR, ADV-k, the
spatial bound regularizers, L2L-DA, attack generators, WGAN-GP, VAEs) are in
:mod:`robustjax.objectives`.
"""

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

__all__ = [
    "NonFiniteLossError",
    "Objective",
    "TrainState",
    "add_distributed_args",
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
