r"""The LLR paper's evaluation protocol (appendix F.1) as a dictionary of bound attacks.

Qin et al., *Adversarial Robustness through Local Linearization*, NeurIPS 2019, appendix F.1:

* perturbation updates driven by Adam,
  :math:`\delta \leftarrow \mathrm{Proj}(\delta + \eta_t\,\mathrm{Adam}(\nabla_\delta \ell))`;
* **Untargeted** and **Random-Targeted**: 200 steps with the step-size schedule
  :math:`\eta = 0.1` (steps 0–99), :math:`0.01` (100–149), :math:`0.001` (150–199);
* **Multi-Targeted**: one targeted run per wrong class, :math:`\eta = 0.1` for 200 steps;
* 20 random restarts (uniform starts in the ball); an example counts as broken if *any*
  restart succeeds (the attacks keep the per-example worst restart);
* **FGSM-20**: 20 sign steps of size :math:`\epsilon/10` (CIFAR-10 baseline);
* **PGD-50**: the weaker attack used for monitoring during training (appendix F.2, Table F2).

Choices (documented because the paper leaves them open):

* step sizes are absolute, in input units (images in ``[0, 1]``), as written in F.1; with
  :math:`\epsilon < \eta` the Adam step saturates at the ball and the schedule's small sizes
  refine inside it;
* when ``steps`` is shrunk, the schedule boundaries scale with it: they sit at the fractions
  ``boundaries = (0.5, 0.75)`` of ``steps`` (100 and 150 of 200);
* the untargeted / random-targeted loss is the cross-entropy, the multi-targeted loss the
  target margin (``"cw"``), as in :func:`robustjax.attacks.multi_targeted` (Gowal et al. 2019);
* FGSM-20 and PGD-50 start from a uniform random point (one restart); PGD-50 uses sign steps
  of :math:`2.5\,\epsilon / 50`;
* ``"FGSM"`` (one step of size ε, no random start) is added as the weakest attack, for the
  gradient-obfuscation study of Table F4.
"""

from __future__ import annotations

from typing import Callable, Sequence

import optax

from robustjax import attacks as _attacks
from robustjax._src import validation as V
from robustjax._src.types import Array, LogitsFn, PRNGKey

__all__ = [
    "LLR_ATTACKS",
    "adam_step_schedule",
    "llr_evaluation_attacks",
]

BoundAttack = Callable[[PRNGKey, Array, Array], Array]

#: Names of the attacks :func:`llr_evaluation_attacks` can build, in its default order.
LLR_ATTACKS = ("FGSM", "FGSM-20", "PGD-50", "Untargeted", "Random-Targeted", "Multi-Targeted")


def adam_step_schedule(
    *,
    steps: int = 200,
    step_sizes: Sequence[float] = (0.1, 0.01, 0.001),
    boundaries: Sequence[float] = (0.5, 0.75),
) -> optax.Schedule:
    r"""Piecewise-constant step-size schedule of appendix F.1.

    .. math:: \eta_t = \eta_i \quad\text{for}\quad \lfloor b_i T\rfloor \le t
              < \lfloor b_{i+1} T\rfloor

    With the defaults and ``steps = 200``: 0.1 for steps 0–99, 0.01 for 100–149, 0.001 after.

    Args:
      steps: total number of attack steps ``T >= 1``.
      step_sizes: ``len(boundaries) + 1`` positive step sizes.
      boundaries: increasing fractions of ``steps`` in ``(0, 1)`` where the size changes.

    Returns:
      An optax schedule ``count -> eta`` (jittable). Cost: O(1).
    """
    V.check_positive_int(steps, "steps")
    step_sizes = tuple(float(s) for s in step_sizes)
    boundaries = tuple(float(b) for b in boundaries)
    if len(step_sizes) != len(boundaries) + 1:
        raise ValueError(
            f"`step_sizes` must have len(boundaries) + 1 = {len(boundaries) + 1} entries, "
            f"got {len(step_sizes)}.")
    for s in step_sizes:
        V.check_positive(s, "step_sizes")
    if any(not 0.0 < b < 1.0 for b in boundaries) or list(boundaries) != sorted(boundaries):
        raise ValueError(f"`boundaries` must be increasing fractions in (0, 1), got {boundaries}.")
    scales = {}
    for i, b in enumerate(boundaries):
        at = max(1, int(b * steps))
        scales[at] = scales.get(at, 1.0) * step_sizes[i + 1] / step_sizes[i]
    return optax.piecewise_constant_schedule(step_sizes[0], scales)


def llr_evaluation_attacks(
    logits_fn: LogitsFn,
    *,
    eps: float,
    steps: int = 200,
    restarts: int = 20,
    step_sizes: Sequence[float] = (0.1, 0.01, 0.001),
    boundaries: Sequence[float] = (0.5, 0.75),
    multi_targeted_steps: int | None = None,
    multi_targeted_restarts: int | None = None,
    multi_targeted_step_size: float | None = None,
    fgsm_steps: int = 20,
    monitor_steps: int = 50,
    include: Sequence[str] = LLR_ATTACKS,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> dict[str, BoundAttack]:
    r"""The F.1 evaluation suite of the LLR paper, bound to a model (ℓ∞).

    Builds ``{name: attack(key, x, y) -> x_adv}`` for
    :func:`robustjax.evaluation.robustness_report`; names (the keys) as in :data:`LLR_ATTACKS`,
    except that ``"FGSM-20"`` / ``"PGD-50"`` carry the actual ``fgsm_steps`` / ``monitor_steps``
    (e.g. ``"FGSM-3"``). See the module docstring for the protocol and the choices made.

    * ``"Untargeted"``: :func:`robustjax.attacks.pgd`, Adam steps, :func:`adam_step_schedule`,
      ``steps`` steps, ``restarts`` restarts, cross-entropy.
    * ``"Random-Targeted"``: :func:`robustjax.attacks.random_targeted`, same settings.
    * ``"Multi-Targeted"``: :func:`robustjax.attacks.multi_targeted`, Adam steps of constant size
      ``multi_targeted_step_size`` (default ``step_sizes[0]`` = 0.1), margin loss.
    * ``"FGSM-20"``: ``fgsm_steps`` sign steps of size ε/10 from a random start.
    * ``"PGD-50"``: ``monitor_steps`` sign steps of size 2.5ε/``monitor_steps``, random start.
    * ``"FGSM"``: a single sign step of size ε.

    Args:
      logits_fn: model ``x [N, H, W, C] -> logits [N, K]``.
      eps: ℓ∞ radius ``>= 0``.
      steps: steps of Untargeted / Random-Targeted (200 in the paper).
      restarts: random restarts of Untargeted / Random-Targeted (20 in the paper).
      step_sizes, boundaries: the schedule, see :func:`adam_step_schedule`.
      multi_targeted_steps, multi_targeted_restarts: default ``steps`` / ``restarts``.
      multi_targeted_step_size: default ``step_sizes[0]``.
      fgsm_steps: steps of FGSM-k (20). monitor_steps: steps of the monitoring PGD (50).
      include: the subset of :data:`LLR_ATTACKS` to build (order kept).
      box: image domain.

    Returns:
      ``dict[str, (key, x [N, ...], y [N]) -> x_adv]`` (each result ``stop_gradient``-ed).

    Cost per example: Untargeted and Random-Targeted ``O(R·T·(fwd+bwd))`` each,
    Multi-Targeted ``O((K−1)·R·T·(fwd+bwd))``, FGSM-k ``O(k·(fwd+bwd))``.
    """
    V.check_nonnegative(eps, "eps")
    V.check_positive_int(restarts, "restarts")
    V.check_positive_int(fgsm_steps, "fgsm_steps")
    V.check_positive_int(monitor_steps, "monitor_steps")
    for name in include:
        V.check_choice(name, "include", LLR_ATTACKS)
    mt_steps = steps if multi_targeted_steps is None else multi_targeted_steps
    mt_restarts = restarts if multi_targeted_restarts is None else multi_targeted_restarts
    V.check_positive_int(mt_steps, "multi_targeted_steps")
    V.check_positive_int(mt_restarts, "multi_targeted_restarts")
    schedule = adam_step_schedule(steps=steps, step_sizes=step_sizes, boundaries=boundaries)
    mt_step = float(step_sizes[0] if multi_targeted_step_size is None
                    else multi_targeted_step_size)
    V.check_positive(mt_step, "multi_targeted_step_size")

    def bind(attack, **kw):
        def run(key, x, y):
            return attack(logits_fn, key, x, y, eps=eps, box=box, **kw)
        return run

    builders = {
        "FGSM": lambda: bind(_attacks.fgsm),
        "FGSM-20": lambda: bind(_attacks.pgd, steps=fgsm_steps, step_size=eps / 10.0,
                                step_rule="sign", random_start=True, restarts=1),
        "PGD-50": lambda: bind(_attacks.pgd, steps=monitor_steps,
                               step_size=2.5 * eps / monitor_steps, step_rule="sign",
                               random_start=True, restarts=1),
        "Untargeted": lambda: bind(_attacks.pgd, steps=steps, step_size=schedule,
                                   step_rule="adam", loss="ce", random_start=True,
                                   restarts=restarts),
        "Random-Targeted": lambda: bind(_attacks.random_targeted, steps=steps,
                                        step_size=schedule, step_rule="adam", loss="ce",
                                        random_start=True, restarts=restarts),
        "Multi-Targeted": lambda: bind(_attacks.multi_targeted, steps=mt_steps,
                                       step_size=mt_step, step_rule="adam", loss="cw",
                                       random_start=True, restarts=mt_restarts),
    }
    names = {"FGSM-20": f"FGSM-{fgsm_steps}", "PGD-50": f"PGD-{monitor_steps}"}
    return {names.get(n, n): builders[n]() for n in include}
