"""Spatial (flow) transformations: bilinear warping, flow total variation, its matrix form."""

from robustjax.spatial._adv_loss import adversarial_loss
from robustjax.spatial._adv_loss import adversarial_loss_linear
from robustjax.spatial._adv_loss import adversarial_loss_midpoint
from robustjax.spatial._adv_loss import warp_diagonal
from robustjax.spatial._adv_loss import warp_jacobian_diag
from robustjax.spatial._flow import FLOW_LOSS_FORMS
from robustjax.spatial._flow import TVFactors
from robustjax.spatial._flow import aabb_radii
from robustjax.spatial._flow import ellipsoid_radius
from robustjax.spatial._flow import flow_loss
from robustjax.spatial._flow import neighbour_matrices
from robustjax.spatial._flow import tv_factors
from robustjax.spatial._flow import tv_gram
from robustjax.spatial._warp import warp

__all__ = [
    "FLOW_LOSS_FORMS",
    "TVFactors",
    "aabb_radii",
    "adversarial_loss",
    "adversarial_loss_linear",
    "adversarial_loss_midpoint",
    "ellipsoid_radius",
    "flow_loss",
    "neighbour_matrices",
    "tv_factors",
    "tv_gram",
    "warp",
    "warp_diagonal",
    "warp_jacobian_diag",
]
