"""Per-example losses (``[N]`` outputs; callers reduce)."""

from robustjax.losses._classification import cross_entropy
from robustjax.losses._classification import cw_loss
from robustjax.losses._classification import dlr_loss
from robustjax.losses._classification import dlr_targeted_loss
from robustjax.losses._classification import hinge
from robustjax.losses._classification import margin
from robustjax.losses._classification import trades_kl
from robustjax.losses._diversity import mode_seeking_diversity

__all__ = ["cross_entropy", "cw_loss", "dlr_loss", "dlr_targeted_loss", "hinge", "margin",
           "trades_kl"]
