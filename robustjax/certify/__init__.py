"""Certificates and lower bounds for spatial (flow) robustness of small networks."""

from robustjax.certify._lower_bounds import InitPair
from robustjax.certify._lower_bounds import LowerBoundResult
from robustjax.certify._lower_bounds import linear_lower_bound
from robustjax.certify._lower_bounds import one_hidden_lower_bound
from robustjax.certify._lower_bounds import theorem1_init
from robustjax.certify._lower_bounds import theorem2_init
from robustjax.certify._upper_bounds import DualCertificate
from robustjax.certify._upper_bounds import SDPSolution
from robustjax.certify._upper_bounds import box_bound
from robustjax.certify._upper_bounds import dual_init
from robustjax.certify._upper_bounds import ellipsoid_bound
from robustjax.certify._upper_bounds import frobenius_bound
from robustjax.certify._upper_bounds import linear_upper_bound
from robustjax.certify._upper_bounds import multiclass_sdp_bound
from robustjax.certify._upper_bounds import optimize_dual
from robustjax.certify._upper_bounds import optimize_dual_bm
from robustjax.certify._upper_bounds import pairwise_sdp_matrices
from robustjax.certify._upper_bounds import sdp_bound
from robustjax.certify._upper_bounds import sdp_dual_bound
from robustjax.certify._upper_bounds import sdp_matrix
from robustjax.certify._upper_bounds import spectral_bound

__all__ = [
    "DualCertificate",
    "InitPair",
    "LowerBoundResult",
    "SDPSolution",
    "box_bound",
    "dual_init",
    "ellipsoid_bound",
    "frobenius_bound",
    "linear_lower_bound",
    "linear_upper_bound",
    "multiclass_sdp_bound",
    "one_hidden_lower_bound",
    "optimize_dual",
    "optimize_dual_bm",
    "pairwise_sdp_matrices",
    "sdp_bound",
    "sdp_dual_bound",
    "sdp_matrix",
    "spectral_bound",
    "theorem1_init",
    "theorem2_init",
]
