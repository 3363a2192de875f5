"""Differentiation through ``argmin``: implicit VJPs, Neumann series, backtracking, projections.

Implements the gradient modes of Chen, Xie, Zhu, "On Breaking Deep Generative Model-based Defenses
and Beyond" (ICML 2020): exact implicit differentiation (supplementary Eqn 1), the truncated
Neumann series of Lemma 1, backtracking ``Q(x')`` of Lemma 2, full unrolling and BPDA, plus the
Lipschitz bound of Theorem 2.
"""

from robustjax.implicit._custom_root import custom_fixed_point
from robustjax.implicit._custom_root import custom_root
from robustjax.implicit._custom_root import root_vjp
from robustjax.implicit._latent import MODES
from robustjax.implicit._latent import descend
from robustjax.implicit._latent import latent_projection
from robustjax.implicit._latent import reconstruction_bpda
from robustjax.implicit._linear_solve import solve_cg
from robustjax.implicit._linear_solve import solve_neumann
from robustjax.implicit._linear_solve import solve_normal_cg
from robustjax.implicit._lipschitz import layer_omegas
from robustjax.implicit._lipschitz import lipschitz_bound
from robustjax.implicit._spectral import check_backward_learning_rate
from robustjax.implicit._spectral import hessian_spectral_norm

__all__ = [
    "MODES",
    "check_backward_learning_rate",
    "hessian_spectral_norm",
    "custom_fixed_point",
    "custom_root",
    "descend",
    "latent_projection",
    "layer_omegas",
    "lipschitz_bound",
    "reconstruction_bpda",
    "root_vjp",
    "solve_cg",
    "solve_neumann",
    "solve_normal_cg",
]
