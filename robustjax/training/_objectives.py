"""Training objectives: ``objective(params, state, batch, key) -> (loss, (batch_stats, metrics))``.

An *objective* is the differentiable part of a training step. ``make_train_step`` differentiates
it with respect to ``params`` (first argument) with ``jax.value_and_grad(..., has_aux=True)``.
``state`` is the current :class:`~robustjax.training.TrainState` (``state.apply_fn`` is
``model.apply`` and ``state.batch_stats`` the running statistics); ``batch`` is
``{"image": float32 [N, H, W, C], "label": int32 [N]}``, optionally with ``"index": int32 [N]``,
the global position of each example in the batch (added by ``make_train_step``), which
:func:`example_keys` uses to give every example randomness that does not depend on how the batch
is split across devices.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from robustjax import losses as _losses
from robustjax._src import validation
from robustjax._src.types import Array, AttackFn, PRNGKey, PyTree

#: ``objective(params, state, batch, key) -> (loss, (new_batch_stats, metrics))``.
Objective = Callable[[PyTree, Any, dict, PRNGKey], tuple[Array, tuple[PyTree, dict]]]

_LOSSES = {"ce": _losses.cross_entropy, "hinge": _losses.hinge}


def resolve_loss(loss: str | Callable[[Array, Array], Array]) -> Callable[[Array, Array], Array]:
    """Map ``"ce"`` / ``"hinge"`` or a callable ``(logits [N,K], labels [N]) -> [N]`` to a loss."""
    if callable(loss):
        return loss
    validation.check_choice(loss, "loss", tuple(_LOSSES))
    return _LOSSES[loss]


def apply_model(
    state: Any,
    params: PyTree,
    x: Array,
    *,
    train: bool,
    key: PRNGKey | None = None,
) -> tuple[Array, PyTree]:
    """Run ``state.apply_fn`` with ``params`` and the state's batch statistics.

    In train mode with batch norm the batch statistics of ``x`` are used and the running
    averages are updated (``mutable=["batch_stats"]``); otherwise the running averages are used
    and returned unchanged.

    Args:
        state: a :class:`~robustjax.training.TrainState`.
        params: parameters to use (the ones being differentiated).
        x: ``float32 [N, H, W, C]`` inputs.
        train: static; train mode (batch statistics, dropout) or eval mode.
        key: PRNG key for the ``"dropout"`` rng stream (train mode only).

    Returns:
        ``(logits [N, K], batch_stats)`` where ``batch_stats`` is the updated (train mode) or
        unchanged (eval mode) statistics.
    """
    variables = {"params": params}
    batch_stats = state.batch_stats
    if batch_stats:
        variables["batch_stats"] = batch_stats
    rngs = {"dropout": key} if (train and key is not None) else None
    if train and batch_stats:
        logits, updates = state.apply_fn(
            variables, x, train=True, rngs=rngs, mutable=["batch_stats"]
        )
        return logits, updates["batch_stats"]
    logits = state.apply_fn(variables, x, train=train, rngs=rngs)
    return logits, batch_stats


def example_keys(key: PRNGKey, batch: dict) -> Array:
    """One PRNG key per example: ``fold_in(key, index)`` with the example's global index.

    ``batch["index"]`` (``int32 [N]``, added by ``make_train_step``) holds the position of each
    example in the *global* batch, so the keys — hence attack random starts — are the same
    whether the batch is processed on one device, sharded, or split by ``pmap``. Without it,
    ``arange(N)`` is used.

    Args:
        key: the step key.
        batch: a batch dict with ``"image"`` ``[N, ...]`` and optionally ``"index"`` ``[N]``.

    Returns:
        A key array of shape ``[N]``.
    """
    n = jnp.shape(batch["image"])[0]
    index = batch.get("index")
    if index is None:
        index = jnp.arange(n, dtype=jnp.int32)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(index)


def _metrics(per_example_loss: Array, logits: Array, labels: Array) -> dict[str, Array]:
    return {
        "loss": jnp.mean(per_example_loss),
        "accuracy": jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)),
    }


def standard_objective(*, loss: str | Callable[[Array, Array], Array] = "ce") -> Objective:
    r"""Empirical risk minimisation on the clean batch.

    .. math:: L(\theta) = \frac{1}{N} \sum_i \ell(f_\theta(x_i), y_i)

    The model runs in train mode (batch statistics of the batch, dropout with the step key);
    the returned batch statistics are the updated running averages.

    Args:
        loss: ``"ce"`` (softmax cross-entropy), ``"hinge"`` or a per-example loss
            ``(logits [N, K], labels [N]) -> [N]``.

    Returns:
        An objective ``(params, state, batch, key) -> (loss, (batch_stats, metrics))`` with
        metrics ``{"loss", "accuracy"}`` (means over the batch).

    Cost: one forward + backward pass, O(fwd + bwd).
    """
    loss_fn = resolve_loss(loss)

    def objective(params, state, batch, key):
        x, y = batch["image"], batch["label"]
        logits, new_stats = apply_model(state, params, x, train=True, key=key)
        per_example = loss_fn(logits, y)
        return jnp.mean(per_example), (new_stats, _metrics(per_example, logits, y))

    return objective


def adversarial_objective(
    attack_fn: AttackFn,
    *,
    mix: float = 1.0,
    loss: str | Callable[[Array, Array], Array] = "ce",
    per_example_keys: bool = True,
    eps_schedule: Callable[[Array], Array] | None = None,
) -> Objective:
    r"""Adversarial training (Madry et al., 2018): train on attacked inputs.

    .. math::
        L(\theta) = \frac{1}{N}\sum_i (1-\text{mix})\,\ell(f_\theta(x_i), y_i)
            + \text{mix}\,\ell(f_\theta(x_i^{adv}), y_i),\quad
        x^{adv} = \text{attack}(f_{\text{sg}(\theta)}^{\text{eval}}, x, y)

    i.e. the saddle-point problem :math:`\min_\theta \mathbb{E}\max_{\delta\in S}
    \ell(\theta, x+\delta, y)` of Madry et al. (eq. 2.1), with the inner maximisation
    approximated by ``attack_fn`` and Danskin's theorem (gradient at the attack's point, no
    gradient through the attack).

    **Batch norm.** The attack sees the model in *eval* mode (running statistics, no dropout)
    with ``stop_gradient(params)``, so attacking neither changes the statistics nor depends on
    the other examples in the batch (this is what makes the attack per-example and the result
    independent of the device split). The training pass then runs in *train* mode on the
    adversarial batch — for ``0 < mix < 1`` on the concatenation ``[x; x_adv]`` in one pass, so
    the batch statistics and their running averages are those of the mixed batch.

    **Randomness.** With ``per_example_keys=True`` (default) the attack is ``vmap``-ped over the
    examples, each with the key ``fold_in(attack_key, global_index)`` (see
    :func:`example_keys`), so random starts are identical on 1 or many devices and under
    ``pmap``; the attack must then work on a batch of one (every robustjax attack does).

    Args:
        attack_fn: ``attack_fn(logits_fn, key, x, y) -> x_adv`` with hyperparameters bound, e.g.
            ``functools.partial(robustjax.attacks.pgd, eps=0.3, steps=7)``; with
            ``eps_schedule`` leave ``eps`` unbound (the objective passes the scheduled ε).
        mix: static weight of the adversarial term in ``[0, 1]``; ``1.0`` is Madry's PGD
            training, ``0.5`` Goodfellow et al.'s mixed objective.
        loss: training loss, ``"ce"``, ``"hinge"`` or a per-example callable.
        per_example_keys: static; vmap the attack with per-example keys (see above). When
            ``False`` the attack gets the whole batch and one key.
        eps_schedule: optional ε ramp-up, ``step -> eps`` (e.g. an optax schedule such as
            ``optax.linear_schedule(0.0, 0.3, 300)``), evaluated at ``state.step`` and passed to
            ``attack_fn`` as the keyword ``eps`` (a traced scalar: the ramp does not recompile;
            :func:`robustjax.attacks.pgd` and ``fgsm`` accept it). Leave the attack's
            ``step_size`` unbound so that its default ``2.5·eps/steps`` follows the ramp.
            Starting at a small ε avoids the plateau at the uniform prediction (loss log K)
            that PGD training at ε = 0.3 on MNIST otherwise sits on for its first hundreds of
            steps.

    Returns:
        An objective with metrics ``{"loss", "accuracy"}`` where ``accuracy`` is the training
        accuracy on ``x_adv`` (train mode); for ``mix < 1`` also ``"clean_accuracy"`` and
        ``"adv_loss"`` / ``"clean_loss"``.

    Cost: one attack (e.g. O(T·(fwd + bwd)) for T-step PGD) plus O(fwd + bwd) on ``N``
    (``mix == 1``) or ``2N`` (``0 < mix < 1``) inputs.

    References:
        Madry et al., *Towards Deep Learning Models Resistant to Adversarial Attacks*, ICLR 2018
        (arXiv:1706.06083), eq. (2.1) and Sec. 4.
    """
    if not callable(attack_fn):
        raise ValueError(f"`attack_fn` must be callable, got {type(attack_fn).__name__}.")
    validation.check_probability(mix, "mix")
    mix = float(mix)
    loss_fn = resolve_loss(loss)
    if mix == 0.0:
        return standard_objective(loss=loss)

    def objective(params, state, batch, key):
        x, y = batch["image"], batch["label"]
        attack_key, dropout_key = jax.random.split(key)
        frozen = jax.lax.stop_gradient(params)
        attack = attack_fn
        if eps_schedule is not None:
            eps_t = jnp.asarray(eps_schedule(state.step), x.dtype)
            attack = functools.partial(attack_fn, eps=eps_t)

        def logits_fn(z):
            return apply_model(state, frozen, z, train=False)[0]

        if per_example_keys:
            keys = example_keys(attack_key, batch)

            def attack_one(k, xi, yi):
                return attack(logits_fn, k, xi[None], yi[None])[0]

            x_adv = jax.vmap(attack_one)(keys, x, y)
        else:
            x_adv = attack(logits_fn, attack_key, x, y)
        x_adv = jax.lax.stop_gradient(x_adv)

        if mix == 1.0:
            logits, new_stats = apply_model(state, params, x_adv, train=True, key=dropout_key)
            per_example = loss_fn(logits, y)
            return jnp.mean(per_example), (new_stats, _metrics(per_example, logits, y))

        n = x.shape[0]
        both = jnp.concatenate([x, x_adv], axis=0)
        logits, new_stats = apply_model(state, params, both, train=True, key=dropout_key)
        per_example = loss_fn(logits, jnp.concatenate([y, y], axis=0))
        clean_loss, adv_loss = jnp.mean(per_example[:n]), jnp.mean(per_example[n:])
        total = (1.0 - mix) * clean_loss + mix * adv_loss
        adv_metrics = _metrics(per_example[n:], logits[n:], y)
        clean_metrics = _metrics(per_example[:n], logits[:n], y)
        metrics = {
            "loss": total,
            "accuracy": adv_metrics["accuracy"],
            "clean_accuracy": clean_metrics["accuracy"],
            "adv_loss": adv_loss,
            "clean_loss": clean_loss,
        }
        return total, (new_stats, metrics)

    return objective
