"""Local linearity of the loss surface (LLR): g(δ; x), γ(ε, x), the LLR penalty, GGN bounds."""

from robustjax.linearity._ggn import GGN_LOSSES
from robustjax.linearity._ggn import GGNBound
from robustjax.linearity._ggn import cross_entropy_ggn_bound
from robustjax.linearity._ggn import ggn_quadratic_form
from robustjax.linearity._ggn import quadratic_model_error
from robustjax.linearity._ggn import squared_error_ggn_bound
from robustjax.linearity._measures import STEP_RULES
from robustjax.linearity._measures import GapSearch
from robustjax.linearity._measures import LinearityTerms
from robustjax.linearity._measures import LocalLinearity
from robustjax.linearity._measures import linearity_gap
from robustjax.linearity._measures import linearity_terms
from robustjax.linearity._measures import llr_penalty
from robustjax.linearity._measures import local_linearity
from robustjax.linearity._measures import maximize_linearity_gap

__all__ = [
    "GGN_LOSSES",
    "GGNBound",
    "STEP_RULES",
    "GapSearch",
    "LinearityTerms",
    "LocalLinearity",
    "cross_entropy_ggn_bound",
    "ggn_quadratic_form",
    "linearity_gap",
    "linearity_terms",
    "llr_penalty",
    "local_linearity",
    "maximize_linearity_gap",
    "quadratic_model_error",
    "squared_error_ggn_bound",
]
