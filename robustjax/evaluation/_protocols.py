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

**Random-Targeted is a success rate, not an accuracy.** Table F3 (ImageNet, ResNet-152, 4/255)
lists LLR at 47.0 % Untargeted and 0.40 % Random-Targeted. Read as accuracies, the weaker
attack (one random target instead of the most convenient wrong class) would fool 99.6 % of the
images where the untargeted attack — free to pick any wrong class, hence at least as strong —
fools 53 %; the column is the
*targeted attack success rate*: the fraction of examples that the attack drives to its randomly
drawn target class (lower is better for the defence). :func:`random_targeted_success_rate`
reports it so, and :func:`llr_evaluation_attacks` (whose attacks are scored as true-label
accuracies by :func:`robustjax.evaluation.robustness_report`) refuses to build it.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax import attacks as _attacks
from robustjax.attacks import _base as _attack_base
from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.evaluation._report import attack_key
from robustjax.evaluation._stats import wilson_interval

__all__ = [
    "LLR_ATTACKS",
    "RANDOM_TARGETED_NAME",
    "RandomTargetedBatch",
    "TargetedSuccess",
    "adam_step_schedule",
    "llr_evaluation_attacks",
    "random_targets",
    "random_targeted_success",
    "random_targeted_success_rate",
]

BoundAttack = Callable[[PRNGKey, Array, Array], Array]

#: Names of the attacks :func:`llr_evaluation_attacks` can build, in its default order. Each is
#: scored as a true-label (robust) accuracy. The paper's Random-Targeted column is a success
#: rate: see :func:`random_targeted_success_rate`.
LLR_ATTACKS = ("FGSM", "FGSM-20", "PGD-50", "Untargeted", "Multi-Targeted")

#: Column name under which the Random-Targeted *success rate* is reported (lower is better).
RANDOM_TARGETED_NAME = "Random-Targeted success rate"


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
    unroll: int | bool | None = None,
) -> dict[str, BoundAttack]:
    r"""The F.1 evaluation suite of the LLR paper, bound to a model (ℓ∞).

    Builds ``{name: attack(key, x, y) -> x_adv}`` for
    :func:`robustjax.evaluation.robustness_report`; names (the keys) as in :data:`LLR_ATTACKS`,
    except that ``"FGSM-20"`` / ``"PGD-50"`` carry the actual ``fgsm_steps`` / ``monitor_steps``
    (e.g. ``"FGSM-3"``). See the module docstring for the protocol and the choices made.

    * ``"Untargeted"``: :func:`robustjax.attacks.pgd`, Adam steps, :func:`adam_step_schedule`,
      ``steps`` steps, ``restarts`` restarts, cross-entropy.
    * ``"Random-Targeted"`` is not built here: it is a success rate, not an accuracy (module
      docstring); use :func:`random_targeted_success_rate`. Asking for it raises.
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
      unroll: unroll factor of every attack's step loop (speed only; ``None`` is the attacks'
        default, a rolled loop).

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
        if name in ("Random-Targeted", RANDOM_TARGETED_NAME):
            raise ValueError(
                "`include` may not contain 'Random-Targeted': the paper reports it as a "
                "targeted attack success rate, not an accuracy; use "
                "robustjax.evaluation.random_targeted_success_rate.")
        V.check_choice(name, "include", LLR_ATTACKS)
    if unroll is not None and not isinstance(unroll, bool):
        V.check_positive_int(unroll, "unroll")
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

    def bind_unrolled(attack, **kw):
        return bind(attack, unroll=unroll, **kw)

    builders = {
        "FGSM": lambda: bind(_attacks.fgsm),
        "FGSM-20": lambda: bind_unrolled(_attacks.pgd, steps=fgsm_steps, step_size=eps / 10.0,
                                         step_rule="sign", random_start=True, restarts=1),
        "PGD-50": lambda: bind_unrolled(_attacks.pgd, steps=monitor_steps,
                                        step_size=2.5 * eps / monitor_steps, step_rule="sign",
                                        random_start=True, restarts=1),
        "Untargeted": lambda: bind_unrolled(_attacks.pgd, steps=steps, step_size=schedule,
                                            step_rule="adam", loss="ce", random_start=True,
                                            restarts=restarts),
        "Multi-Targeted": lambda: bind_unrolled(_attacks.multi_targeted, steps=mt_steps,
                                                step_size=mt_step, step_rule="adam",
                                                loss="cw", random_start=True,
                                                restarts=mt_restarts),
    }
    names = {"FGSM-20": f"FGSM-{fgsm_steps}", "PGD-50": f"PGD-{monitor_steps}"}
    return {names.get(n, n): builders[n]() for n in include}


# ----------------------------------------------------------------------------------------------
# Random-Targeted: a targeted attack success rate


def random_targets(key: PRNGKey, y: ArrayLike, num_classes: int) -> Array:
    """Uniformly drawn wrong classes: ``t = (y + s) mod K``, ``s ~ U{1, …, K−1}`` per example.

    Drawn from ``fold_in(key, 1)``, exactly as :func:`robustjax.attacks.random_targeted` does, so
    the same key gives the same targets. Cost ``O(N)``.
    """
    V.check_positive_int(num_classes, "num_classes")
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be >= 2 for a targeted attack, got {num_classes}.")
    V.check_key(key, "key")
    V.check_labels(y, "y", num_classes=num_classes)
    y = jnp.asarray(y)
    shift = jax.random.randint(jax.random.fold_in(key, 1), y.shape, 1, num_classes,
                               dtype=y.dtype)
    return (y + shift) % num_classes


def random_targeted_success(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    steps: int = 200,
    restarts: int = 20,
    step_sizes: Sequence[float] = (0.1, 0.01, 0.001),
    boundaries: Sequence[float] = (0.5, 0.75),
    box: tuple[float, float] | None = (0.0, 1.0),
    unroll: int | bool | None = None,
) -> RandomTargetedBatch:
    r"""Random-Targeted attack of F.1 on one batch; per-example success and target.

    Draws a target :math:`t \ne y` per example (:func:`random_targets`), runs targeted Adam PGD
    (cross-entropy of ``t``, :func:`adam_step_schedule`, ``steps`` steps, ``restarts`` random
    starts; the run with the lowest target margin is kept, so any successful restart counts)
    and reports **success** :math:`[\arg\max_k f(x^{adv})_k = t]`. ``x_adv`` equals
    :func:`robustjax.attacks.random_targeted` with the same key and settings.

    Args:
      logits_fn: model ``x [N, ...] -> logits [N, K]``.
      key: PRNG key (targets from ``fold_in(key, 1)``, starts from ``fold_in(key, 0)``).
      x: clean inputs ``[N, H, W, C]`` in ``box``. y: true labels ``int32 [N]``.
      eps: ℓ∞ radius. steps, restarts, step_sizes, boundaries: the F.1 schedule (200 steps,
        20 restarts, 0.1/0.01/0.001). box: image domain. unroll: step-loop unroll (speed only).

    Returns:
      :class:`RandomTargetedBatch` ``(success bool [N], target int32 [N])``. Jittable.

    Cost: ``O(R·T·(fwd + bwd))`` per example, as :func:`robustjax.attacks.pgd`.
    """
    V.check_nonnegative_value(eps, "eps")
    k = _attack_base.check_attack_inputs(logits_fn, key, x, y, box=box)
    target = random_targets(key, y, k)
    schedule = adam_step_schedule(steps=steps, step_sizes=step_sizes, boundaries=boundaries)
    x_adv = _attacks.pgd(logits_fn, jax.random.fold_in(key, 0), x, y, eps=eps, steps=steps,
                         step_size=schedule, step_rule="adam", loss="ce", target=target,
                         random_start=True, restarts=restarts, box=box, unroll=unroll)
    success = jnp.argmax(logits_fn(x_adv), axis=-1) == target
    return RandomTargetedBatch(success, target)


class RandomTargetedBatch(NamedTuple):
    """Result of :func:`random_targeted_success` on one batch.

    Attributes:
      success: ``bool [N]``, the attack reached its target.
      target: ``int32 [N]``, the drawn targets.
    """

    success: Array
    target: Array


class TargetedSuccess(NamedTuple):
    """Result of :func:`random_targeted_success_rate` (host-side).

    Attributes:
      success_rate: fraction of the ``n`` examples driven to their target (lower is better for
        the defence). successes: their count. n: examples evaluated.
      interval: Wilson 95 % interval of ``success_rate``.
      success: ``bool [n]`` per example. targets: ``int32 [n]`` the drawn targets.
    """

    success_rate: float
    successes: int
    n: int
    interval: tuple[float, float]
    success: np.ndarray
    targets: np.ndarray


def random_targeted_success_rate(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    steps: int = 200,
    restarts: int = 20,
    step_sizes: Sequence[float] = (0.1, 0.01, 0.001),
    boundaries: Sequence[float] = (0.5, 0.75),
    box: tuple[float, float] | None = (0.0, 1.0),
    unroll: int | bool | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> TargetedSuccess:
    """The paper's Random-Targeted column: targeted attack success rate over a dataset.

    Counts every example (also those misclassified clean: success means the prediction is the
    drawn target, which a clean error hits only by chance). Batch ``b`` uses
    ``robustjax.evaluation.attack_key(key, "Random-Targeted", b)``; a last partial batch is
    padded (one compilation), the padding dropped.

    Args:
      logits_fn, eps, steps, restarts, step_sizes, boundaries, box, unroll: as
        :func:`random_targeted_success`.
      key: PRNG key. x: ``float32 [N, H, W, C]`` in ``box``. y: ``int32 [N]`` true labels in
        ``[0, K)``. batch_size: batch size. progress: tqdm bar over batches.

    Returns:
      :class:`TargetedSuccess`.

    Cost: ``ceil(N / B)`` batches of :func:`random_targeted_success`; one compilation.
    Host-side (a Python loop over batches): not jittable, and refuses traced input.
    """
    if not callable(logits_fn):
        raise ValueError(f"`logits_fn` must be callable, got {type(logits_fn).__name__}.")
    for name, value in (("x", x), ("y", y)):
        if not V.is_concrete(value):
            raise ValueError(
                f"`{name}` must be a concrete array: random_targeted_success_rate loops over "
                "batches on the host (do not call it under jax.jit); jit "
                "random_targeted_success for one batch instead.")
    V.check_key(key, "key")
    V.check_images(x, "x", box=box)
    V.check_labels(y, "y", batch_size=np.shape(x)[0])
    V.check_positive_int(batch_size, "batch_size")
    V.check_nonnegative(eps, "eps")
    out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(np.shape(x), jnp.float32))
    V.check_labels(y, "y", num_classes=int(out.shape[-1]))
    images = np.asarray(x, np.float32)
    labels = np.asarray(y, np.int32)
    n = images.shape[0]
    bs = min(batch_size, n)
    fn = jax.jit(lambda k, x, y: random_targeted_success(
        logits_fn, k, x, y, eps=eps, steps=steps, restarts=restarts, step_sizes=step_sizes,
        boundaries=boundaries, box=box, unroll=unroll))
    success = np.zeros((n,), bool)
    targets = np.zeros((n,), np.int32)
    batches = range(math.ceil(n / bs))
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc="Random-Targeted", leave=False)
    for b in batches:
        lo, hi = b * bs, min(n, (b + 1) * bs)
        x, y = images[lo:hi], labels[lo:hi]
        if hi - lo < bs:
            pad = bs - (hi - lo)
            x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
            y = np.concatenate([y, np.repeat(y[-1:], pad, 0)])
        s, t = fn(attack_key(key, "Random-Targeted", b), jnp.asarray(x), jnp.asarray(y))
        success[lo:hi] = np.asarray(s)[: hi - lo]
        targets[lo:hi] = np.asarray(t)[: hi - lo]
    count = int(success.sum())
    return TargetedSuccess(success_rate=count / n, successes=count, n=n,
                           interval=wilson_interval(count, n), success=success,
                           targets=targets)
