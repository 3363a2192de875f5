r"""Spatial transformer network in front of a one-hidden-layer classifier (``f_stn``).

Appendix 6.8 of *Provable defenses against spatially transformed adversarial inputs*: "a three
layer spatial transformer network with 100 hidden units processes input images before feeding
them to [the] classification network" (Jaderberg et al., 2015).

Choices: the localisation network is ``flatten -> Dense(100) -> ReLU -> Dense(100) -> ReLU ->
Dense(6)`` (three layers), its last layer initialised to zero weights and the identity affine
bias, so the untrained STN is the identity. The affine map acts on pixel coordinates normalised
to ``[-1, 1]`` (align-corners); the sampling grid is converted to a displacement field and
applied with :func:`robustjax.spatial.warp` (bilinear, zero padding). The classifier is
:class:`robustjax.models.MLP` (parameters under ``"classifier"``), so the certified bounds can be
computed for the classifier head alone (they do not cover the STN).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.models._mlp import MLP
from robustjax.spatial import warp


def affine_flow(theta: jax.Array, height: int, width: int) -> jax.Array:
    r"""Displacement field of an affine sampling grid.

    ``theta [N, 2, 3]`` maps normalised output coordinates :math:`(x, y, 1)` (columns, rows, in
    ``[-1, 1]``) to normalised source coordinates; returns the flow ``[N, H, W, 2]`` in pixels
    (``[..., 0]`` columns, ``[..., 1]`` rows, the :func:`robustjax.spatial.warp` convention).
    The identity ``theta`` gives a zero flow. Cost ``O(N·H·W)``.
    """
    ys = jnp.linspace(-1.0, 1.0, height)
    xs = jnp.linspace(-1.0, 1.0, width)
    gx, gy = jnp.meshgrid(xs, ys)  # [H, W]
    grid = jnp.stack([gx, gy, jnp.ones_like(gx)], axis=-1)  # [H, W, 3]
    src = jnp.einsum("nij,hwj->nhwi", theta, grid)  # [N, H, W, 2] normalised (x, y)
    scale = jnp.asarray([(width - 1) / 2.0, (height - 1) / 2.0], theta.dtype)
    return (src - grid[..., :2]) * scale


class STNClassifier(nn.Module):
    """Affine spatial transformer followed by a one-hidden-layer MLP classifier.

    Attributes:
      hidden: classifier hidden width (500 in the paper's appendix).
      stn_hidden: localisation hidden width (100 in the paper).
      num_classes: number of logits.

    Input ``[N, H, W, C]``, output ``[N, K]``. ``return_transformed`` (call argument) also
    returns the transformed images. Cost: O(N·(2·D·stn_hidden + D·hidden)), ``D = H·W·C``.
    """

    hidden: int = 500
    stn_hidden: int = 100
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, return_transformed: bool = False):
        n, h, w, _ = x.shape
        z = x.reshape((n, -1))
        z = nn.relu(nn.Dense(self.stn_hidden, name="loc_0")(z))
        z = nn.relu(nn.Dense(self.stn_hidden, name="loc_1")(z))
        ident = jnp.asarray([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], x.dtype)
        theta = nn.Dense(6, name="loc_2", kernel_init=nn.initializers.zeros,
                         bias_init=lambda *_: ident)(z).reshape((n, 2, 3))
        xt = warp(x, affine_flow(theta, h, w))
        logits = MLP(hidden=self.hidden, num_classes=self.num_classes,
                     name="classifier")(xt, train=train)
        return (logits, xt) if return_transformed else logits
