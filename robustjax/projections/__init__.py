"""Projections onto norm balls and the image box; random starts in a ball."""

from robustjax.projections._lp import NORMS
from robustjax.projections._lp import clip_box
from robustjax.projections._lp import per_example_norm
from robustjax.projections._lp import project
from robustjax.projections._lp import project_l2
from robustjax.projections._lp import project_linf
from robustjax.projections._lp import random_in_ball
from robustjax.projections._lp import random_start

__all__ = [
    "NORMS",
    "clip_box",
    "per_example_norm",
    "project",
    "project_l2",
    "project_linf",
    "random_in_ball",
    "random_start",
]
