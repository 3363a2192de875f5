"""Robust accuracy of a model under a suite of attacks: per attack, **Min** and **worst case**.

The per-example helpers (:func:`correct`, :func:`robust_accuracy`, :func:`distortion`) are pure,
jit- and vmap-friendly JAX functions. :func:`robustness_report` is the host-side driver: it walks a
dataset in fixed-size batches, runs every attack (each jitted once), and gathers per-example
results into a :class:`RobustnessReport`, whose :func:`format_table` reproduces the layout of
Table A of the L2L-DA paper (rows = models; columns Natural, attacks…, Min) plus a per-example
"Worst case" column, and prints the evaluation's warnings (gradient-masking checks, probability
outputs, attacks that left points unchanged) under the table.

Two different summaries, both reported:

* **Min** (the L2L-DA paper's, Table A): the minimum over the attack columns' accuracies — in
  Table A each row's Min equals one of its own columns (PGD10 row: 8.97 = its PGD100 value).
* **Worst case** (per example): an example counts only if it is correct clean and survives
  every attack. Never above Min; the honest number for an ensemble of attacks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, BoundAttack, LogitsFn, PRNGKey
from robustjax.evaluation import _parallel
from robustjax.projections import per_example_norm

__all__ = [
    "correct",
    "robust_accuracy",
    "distortion",
    "RobustnessReport",
    "robustness_report",
    "format_table",
    "attack_key",
    "bind_attack",
]


def correct(
    logits_fn: LogitsFn, x: ArrayLike, y: ArrayLike, *, box: tuple[float, float] | None = (0.0, 1.0)
) -> Array:
    """Per-example correctness of ``logits_fn`` on ``x``.

    Args:
      logits_fn: model, ``x [N, H, W, C] -> logits [N, K]``.
      x: images ``float32 [N, H, W, C]``.
      y: labels ``int32 [N]`` in ``[0, K)``.
      box: pixel range checked on concrete ``x`` (``None`` skips it).

    Returns:
      ``bool [N]``: ``argmax_k logits_fn(x)[n, k] == y[n]``. Cost: one forward pass.
    """
    V.check_images(x, "x", box=box)
    V.check_labels(y, "y", batch_size=jnp.shape(x)[0])
    logits = logits_fn(jnp.asarray(x))
    V.check_rank(logits, "logits_fn(x)", 2)
    V.check_labels(y, "y", batch_size=jnp.shape(x)[0], num_classes=jnp.shape(logits)[1])
    return jnp.argmax(logits, axis=-1) == jnp.asarray(y)


def robust_accuracy(
    logits_fn: LogitsFn, x: ArrayLike, y: ArrayLike, x_adv: ArrayLike, *, require_clean: bool = True,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Array:
    r"""Per-example robustness: correct on ``x_adv`` (and on ``x`` when ``require_clean``).

    .. math:: r_n = [\arg\max f(x_n) = y_n] \wedge [\arg\max f(x^{adv}_n) = y_n]

    ``require_clean=True`` (the default, as in RobustBench-style evaluations) counts an example as
    robust only if it is also classified correctly without attack, so robust accuracy never
    exceeds clean accuracy. With ``require_clean=False`` it is the plain accuracy on ``x_adv``.

    Args:
      logits_fn: model, ``[N, H, W, C] -> [N, K]``.
      x: clean images ``[N, H, W, C]``.
      y: labels ``int32 [N]``.
      x_adv: adversarial images, same shape as ``x``.
      require_clean: see above (static).
      box: pixel range of ``x`` and ``x_adv`` (``None`` skips the check).

    Returns:
      ``bool [N]``; callers reduce (``jnp.mean``). Cost: two forward passes (one if
      ``require_clean=False``).
    """
    V.check_images(x_adv, "x_adv", box=box)
    if jnp.shape(x) != jnp.shape(x_adv):
        raise ValueError(
            f"`x_adv` must have the shape of `x`, got {jnp.shape(x_adv)} and {jnp.shape(x)}."
        )
    ok = correct(logits_fn, x_adv, y, box=box)
    if require_clean:
        ok = ok & correct(logits_fn, x, y, box=box)
    return ok


def distortion(x: ArrayLike, x_adv: ArrayLike, *, norm: str = "linf") -> Array:
    r"""Per-example distortion :math:`\|x^{adv}_n - x_n\|_p` for ``norm`` in ``"linf"``, ``"l2"``.

    Args:
      x: clean images ``[N, ...]``.
      x_adv: adversarial images, same shape.
      norm: ``"linf"`` or ``"l2"`` (static).

    Returns:
      ``float32 [N]``. Cost: ``O(size of x)``.
    """
    V.check_choice(norm, "norm", ("linf", "l2"))
    if jnp.shape(x) != jnp.shape(x_adv):
        raise ValueError(
            f"`x_adv` must have the shape of `x`, got {jnp.shape(x_adv)} and {jnp.shape(x)}."
        )
    return per_example_norm(jnp.asarray(x_adv) - jnp.asarray(x), norm=norm)


def bind_attack(attack: Callable[..., Array], logits_fn: LogitsFn, **hyperparams: Any
                ) -> BoundAttack:
    """Bind a model and hyperparameters: ``(key, x, y) -> attack(logits_fn, key, x, y, **hp)``.

    Turns an attack with the library signature ``attack(logits_fn, key, x, y, *, ...)`` (e.g.
    ``robustjax.attacks.pgd``) into the ``BoundAttack`` that :func:`robustness_report` takes::

        attacks = {"FGSM": bind_attack(fgsm, f, eps=0.3),
                   "PGD40": bind_attack(pgd, f, eps=0.3, steps=40)}
    """
    if not callable(attack):
        raise ValueError(f"`attack` must be callable, got {attack!r}.")

    def bound(key: PRNGKey, x: Array, y: Array) -> Array:
        return attack(logits_fn, key, x, y, **hyperparams)

    bound.__name__ = getattr(attack, "__name__", "attack")
    return bound


def attack_key(key: PRNGKey, name: str, batch_index: int) -> PRNGKey:
    """The key :func:`robustness_report` gives attack ``name`` on batch ``batch_index``.

    ``fold_in(fold_in(key, crc32(name)), batch_index)``: an attack's randomness does not depend
    on which other attacks are evaluated beside it, nor on their order.
    """
    name_id = zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF
    return jax.random.fold_in(jax.random.fold_in(key, name_id), batch_index)


def _stats(v: np.ndarray) -> tuple[float, float]:
    if v.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.max(v))


@dataclasses.dataclass(frozen=True, eq=False)
class RobustnessReport:
    """Per-example results of a model under several attacks (host-side NumPy arrays).

    Attributes:
      labels: ``int32 [N]`` true labels.
      clean_predictions: ``int32 [N]`` predicted classes on clean inputs.
      adv_predictions: ``{attack: int32 [N]}`` predicted classes on each attack's output.
      linf: ``{attack: float32 [N]}`` ℓ∞ distortion ``‖x_adv − x‖∞`` per example.
      l2: ``{attack: float32 [N]}`` ℓ2 distortion per example.

      thresholds: ``{attack: (norm, tau)}``: for these (unbounded, minimum-norm) attacks an
        output counts as adversarial only if misclassified **and** within ``‖δ‖_norm <= tau``.
      notes: warnings printed under the table (masking checks, probability outputs, attacks
        that returned correctly classified points unchanged, thresholds, re-scoring).
      draw_correct: for a randomized model re-scored with fresh keys (``rescore_keys``):
        ``{"clean" | attack: bool [R, N]}`` correctness under each of ``R`` fresh draws; the
        per-example arrays below then require correctness under every draw (worst case), and
        :attr:`rescored_accuracy` gives mean and worst over draws.

    Accuracies are fractions in ``[0, 1]``. An example is *robust to an attack* when it is
    classified correctly both clean and after the attack (:func:`robust_accuracy` with
    ``require_clean=True``). **Min** (:meth:`min_accuracy`, the L2L-DA paper's Table A) is the
    minimum over the attack columns' accuracies; **worst case** (:meth:`worst_case_accuracy`)
    counts an example only if it is correct clean and survives every attack (per example).
    """

    labels: np.ndarray
    clean_predictions: np.ndarray
    adv_predictions: Mapping[str, np.ndarray]
    linf: Mapping[str, np.ndarray]
    l2: Mapping[str, np.ndarray]
    thresholds: Mapping[str, tuple[str, float]] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()
    draw_correct: Mapping[str, np.ndarray] | None = None

    # ---- per-example arrays -------------------------------------------------------------
    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def attack_names(self) -> tuple[str, ...]:
        return tuple(self.adv_predictions)

    @property
    def clean_correct(self) -> np.ndarray:
        """``bool [N]``: correct on clean inputs (under every fresh draw when re-scored)."""
        if self.draw_correct is not None and "clean" in self.draw_correct:
            return np.all(self.draw_correct["clean"], axis=0)
        return self.clean_predictions == self.labels

    def _adv_ok(self, name: str, pred_ok: np.ndarray) -> np.ndarray:
        if name in self.thresholds:
            norm, tau = self.thresholds[name]
            dist = (self.linf if norm == "linf" else self.l2)[name]
            return pred_ok | (np.asarray(dist) > tau)
        return pred_ok

    @property
    def adv_correct(self) -> dict[str, np.ndarray]:
        """``{attack: bool [N]}``: correct on the attack's output (ignoring the clean result).

        For a thresholded attack an output beyond its distortion threshold counts as correct
        (the attack failed within the budget); for a re-scored randomized model, correct under
        every fresh draw.
        """
        out = {}
        for k, v in self.adv_predictions.items():
            if self.draw_correct is not None and k in self.draw_correct:
                ok = np.all(self.draw_correct[k], axis=0)
            else:
                ok = v == self.labels
            out[k] = self._adv_ok(k, ok)
        return out

    @property
    def robust_correct(self) -> dict[str, np.ndarray]:
        """``{attack: bool [N]}``: correct clean **and** after the attack."""
        clean = self.clean_correct
        return {k: clean & v for k, v in self.adv_correct.items()}

    def worst_case_correct(self, attacks: Sequence[str] | None = None) -> np.ndarray:
        """``bool [N]``: correct clean and after every attack in ``attacks`` (default: all)."""
        names = self.attack_names if attacks is None else tuple(attacks)
        out = self.clean_correct.copy()
        adv = self.adv_correct
        for name in names:
            if name not in adv:
                raise ValueError(
                    f"`attacks` names unknown attack {name!r}; have {self.attack_names}.")
            out &= adv[name]
        return out

    def min_correct(self, attacks: Sequence[str] | None = None) -> np.ndarray:
        """Former name of :meth:`worst_case_correct` (per example; *not* the paper's Min)."""
        return self.worst_case_correct(attacks)

    def with_attack(self, name: str, adv_predictions: ArrayLike, linf: ArrayLike,
                    l2: ArrayLike) -> "RobustnessReport":
        """A copy with one more attack column computed elsewhere (e.g. by
        :func:`robustjax.evaluation.autoattack`): per-example predictions on its outputs and
        their ℓ∞ / ℓ2 distortions, ``[N]`` each. Notes are kept as they are."""
        if name in self.adv_predictions:
            raise ValueError(f"`name` {name!r} is already a column of this report.")
        arrs = {}
        for arg, v in (("adv_predictions", adv_predictions), ("linf", linf), ("l2", l2)):
            v = np.asarray(v)
            if v.shape != (self.num_examples,):
                raise ValueError(f"`{arg}` must have shape ({self.num_examples},), got "
                                 f"{v.shape}.")
            arrs[arg] = v
        return dataclasses.replace(
            self,
            adv_predictions={**self.adv_predictions,
                             name: arrs["adv_predictions"].astype(np.int32)},
            linf={**self.linf, name: arrs["linf"].astype(np.float32)},
            l2={**self.l2, name: arrs["l2"].astype(np.float32)})

    def select(self, index: Any) -> "RobustnessReport":
        """The report restricted to the examples ``index`` (a slice, mask or index array)."""
        take = lambda a: np.asarray(a)[index]  # noqa: E731
        return dataclasses.replace(
            self, labels=take(self.labels), clean_predictions=take(self.clean_predictions),
            adv_predictions={k: take(v) for k, v in self.adv_predictions.items()},
            linf={k: take(v) for k, v in self.linf.items()},
            l2={k: take(v) for k, v in self.l2.items()},
            draw_correct=(None if self.draw_correct is None else
                          {k: np.asarray(v)[:, index] for k, v in self.draw_correct.items()}))

    # ---- reductions ---------------------------------------------------------------------
    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.clean_correct))

    @property
    def robust_accuracy(self) -> dict[str, float]:
        """``{attack: accuracy}`` counting examples correct clean and after the attack."""
        return {k: float(np.mean(v)) for k, v in self.robust_correct.items()}

    @property
    def adversarial_accuracy(self) -> dict[str, float]:
        """``{attack: accuracy on x_adv}`` ignoring the clean result (may exceed clean)."""
        return {k: float(np.mean(v)) for k, v in self.adv_correct.items()}

    def min_accuracy(self, attacks: Sequence[str] | None = None) -> float:
        """The L2L-DA paper's **Min**: the minimum over the attack columns' robust accuracies.

        In Table A each row's Min equals one of its own columns. ``attacks`` selects the
        columns (default: all); with no attack it is the clean accuracy. Compare
        :meth:`worst_case_accuracy` (per example, never above Min).
        """
        names = self.attack_names if attacks is None else tuple(attacks)
        acc = self.robust_accuracy
        for name in names:
            if name not in acc:
                raise ValueError(
                    f"`attacks` names unknown attack {name!r}; have {self.attack_names}.")
        return min([acc[n] for n in names], default=self.clean_accuracy)

    def worst_case_accuracy(self, attacks: Sequence[str] | None = None) -> float:
        """Per-example worst case: fraction correct clean and after every attack."""
        return float(np.mean(self.worst_case_correct(attacks)))

    @property
    def rescored_accuracy(self) -> dict[str, dict[str, float]] | None:
        """Re-scored randomized model: ``{"clean" | attack: {"mean", "worst"}}`` over draws.

        ``mean``: accuracy averaged over the fresh draws (attack columns: correct clean and
        after the attack in the same draw); ``worst``: correct under every draw. ``None``
        for a deterministic model.
        """
        if self.draw_correct is None:
            return None
        clean = np.asarray(self.draw_correct["clean"])
        out = {"clean": {"mean": float(clean.mean()),
                         "worst": float(np.all(clean, axis=0).mean())}}
        for k in self.attack_names:
            if k not in self.draw_correct:
                continue
            d = np.asarray(self.draw_correct[k]) & clean
            d = self._adv_ok(k, d) & clean
            out[k] = {"mean": float(d.mean()), "worst": float(np.all(d, axis=0).mean())}
        return out

    @property
    def distortion_stats(self) -> dict[str, dict[str, float]]:
        """``{attack: {"linf_mean", "linf_max", "l2_mean", "l2_max"}}`` over all examples."""
        out = {}
        for name in self.attack_names:
            lm, lx = _stats(np.asarray(self.linf[name]))
            m2, x2 = _stats(np.asarray(self.l2[name]))
            out[name] = {"linf_mean": lm, "linf_max": lx, "l2_mean": m2, "l2_max": x2}
        return out

    def distortion_curve(self, attack: str, *, norm: str = "l2", thresholds=None):
        """:func:`accuracy_at_distortion` for one attack of this report (see ``_curves``)."""
        # pylint: disable-next=g-import-not-at-top
        from robustjax.evaluation._curves import accuracy_at_distortion

        V.check_choice(norm, "norm", ("linf", "l2"))
        if attack not in self.adv_predictions:
            raise ValueError(f"`attack` must be one of {self.attack_names}, got {attack!r}.")
        dist = (self.linf if norm == "linf" else self.l2)[attack]
        return accuracy_at_distortion(
            self.clean_correct, self.adv_correct[attack], dist, thresholds=thresholds)

    # ---- serialization ------------------------------------------------------------------
    def to_dict(self, *, per_example: bool = False) -> dict[str, Any]:
        """JSON-ready summary; with ``per_example=True`` also the arrays (see :meth:`from_dict`)."""
        d: dict[str, Any] = {
            "num_examples": self.num_examples,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "adversarial_accuracy": self.adversarial_accuracy,
            "min_accuracy": self.min_accuracy() if self.num_examples else float("nan"),
            "worst_case_accuracy": (self.worst_case_accuracy() if self.num_examples
                                    else float("nan")),
            "distortion": self.distortion_stats,
            "thresholds": {k: [v[0], float(v[1])] for k, v in self.thresholds.items()},
            "notes": list(self.notes),
        }
        if self.draw_correct is not None:
            d["rescored_accuracy"] = self.rescored_accuracy
        if per_example:
            d["per_example"] = {
                "labels": self.labels.tolist(),
                "clean_predictions": self.clean_predictions.tolist(),
                "adv_predictions": {k: v.tolist() for k, v in self.adv_predictions.items()},
                "linf": {k: np.asarray(v).tolist() for k, v in self.linf.items()},
                "l2": {k: np.asarray(v).tolist() for k, v in self.l2.items()},
            }
            if self.draw_correct is not None:
                d["per_example"]["draw_correct"] = {
                    k: np.asarray(v).tolist() for k, v in self.draw_correct.items()}
        return d

    def to_json(self, *, per_example: bool = False, **kwargs: Any) -> str:
        """``json.dumps(self.to_dict(per_example=...), **kwargs)``."""
        return json.dumps(self.to_dict(per_example=per_example), **kwargs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RobustnessReport":
        """Rebuild a report from ``to_dict(per_example=True)`` (or its JSON)."""
        if "per_example" not in d:
            raise ValueError("`d` must come from to_dict(per_example=True).")
        p = d["per_example"]
        return cls(
            labels=np.asarray(p["labels"], np.int32),
            clean_predictions=np.asarray(p["clean_predictions"], np.int32),
            adv_predictions={k: np.asarray(v, np.int32) for k, v in p["adv_predictions"].items()},
            linf={k: np.asarray(v, np.float32) for k, v in p["linf"].items()},
            l2={k: np.asarray(v, np.float32) for k, v in p["l2"].items()},
            thresholds={k: (v[0], float(v[1])) for k, v in d.get("thresholds", {}).items()},
            notes=tuple(d.get("notes", ())),
            draw_correct=(None if "draw_correct" not in p else
                          {k: np.asarray(v, bool) for k, v in p["draw_correct"].items()}),
        )

    def __str__(self) -> str:
        return format_table({"model": self})


def _check_dataset(x: Any, y: Any, logits_fn: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate the evaluation set; with ``logits_fn`` the labels are checked against its class
    count (``jax.eval_shape`` on one example, free)."""
    if np.ndim(x) == 4 and np.shape(x)[0] == 0:
        raise ValueError("`x` must hold at least one example.")
    V.check_images(x, "x")
    num_classes = None
    if logits_fn is not None:
        if not callable(logits_fn):
            raise ValueError(f"`logits_fn` must be callable, got {type(logits_fn).__name__}.")
        out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct((1,) + tuple(np.shape(x)[1:]),
                                                             jnp.float32))
        if len(out.shape) != 2 or out.shape[0] != 1:
            raise ValueError(f"`logits_fn` must map x [B, H, W, C] to logits [B, K], got "
                             f"{tuple(out.shape)} for B = 1.")
        num_classes = int(out.shape[1])
    V.check_labels(y, "y", batch_size=np.shape(x)[0], num_classes=num_classes)
    return np.asarray(x, np.float32), np.asarray(y, np.int32)


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    """Pad ``a`` along axis 0 to ``size`` rows by repeating its last row."""
    m = a.shape[0]
    if m == size:
        return a
    return np.concatenate([a, np.repeat(a[-1:], size - m, axis=0)], axis=0)


def iterate_batches(n: int, batch_size: int):
    """Yield ``(batch_index, start, stop)`` covering ``range(n)``."""
    for b in range(math.ceil(n / batch_size)):
        yield b, b * batch_size, min(n, (b + 1) * batch_size)


def robustness_report(
    logits_fn: LogitsFn,
    x: ArrayLike,
    y: ArrayLike,
    attacks: Mapping[str, BoundAttack],
    *,
    key: PRNGKey,
    batch_size: int = 256,
    progress: bool = True,
    jit: bool = True,
    desc: str = "robustness",
    distortion_threshold: Mapping[str, tuple[str, float]] | None = None,
    masking_checks: bool = True,
    rescore_keys: int = 0,
    devices: Sequence[Any] | None = None,
) -> RobustnessReport:
    r"""Evaluate ``logits_fn`` on a dataset, clean and under every attack, batch by batch.

    For each batch ``b`` and attack ``a`` the attack is called as
    ``attacks[a](attack_key(key, a, b), x_b, y_b)`` (see :func:`attack_key`), then the model is
    evaluated on its output and the ℓ∞ / ℓ2 distortions are recorded.

    **Batching.** The effective batch size is ``B = min(batch_size, N)``. A last partial batch is
    padded to ``B`` rows by repeating its last example and the padded rows are dropped, so each
    attack is traced and compiled exactly once (one input shape). For per-example attacks with
    no randomness (FGSM, PGD without random start, ...) the result is therefore identical to
    running the whole dataset as one batch; attacks that draw noise of shape ``[B, ...]`` get
    different (equally distributed) noise under a different batching.

    **Devices.** With several local devices (GPUs, TPU cores, or CPU host devices from
    ``XLA_FLAGS=--xla_force_host_platform_device_count=D``) every batch is sharded over them
    (:func:`robustjax.evaluation.data_parallel`): each batch covers the same rows and gets
    the same key as on one device, padded to a multiple of the device count ``D``, and each
    device attacks ``ceil(B / D)`` rows. The per-example results equal one device's with the
    same key (random draws are element-wise under JAX's partitionable Threefry, so neither the
    sharding nor the padding rows change them), up to float effects of XLA's per-device
    kernels. On a CPU host see README "Performance" for the recipe (one single-threaded host
    device per core).

    Args:
      logits_fn: model, ``x [B, H, W, C] -> logits [B, K]`` (closed over its parameters).
      x: ``float32 [N, H, W, C]`` in ``[0, 1]`` (NumPy or JAX; kept on the host).
      y: ``int32 [N]``.
      attacks: ``{name: bound_attack}`` with ``bound_attack(key, x [B,H,W,C], y [B]) -> x_adv``
        (e.g. ``functools.partial(pgd, logits_fn, eps=0.3, steps=10)`` reordered to
        ``(key, x, y)``). Insertion order is the column order of :func:`format_table`.
      key: PRNG key; per-batch, per-attack keys are folded in.
      batch_size: maximum batch size ``B`` (static).
      progress: show a tqdm progress bar over batches.
      jit: ``jax.jit`` each attack+evaluation (set ``False`` for attacks that run host code).
      desc: progress-bar label.
      distortion_threshold: ``{attack: (norm, tau)}`` for unbounded / minimum-norm attacks
        (Carlini–Wagner, FAB without ε, ...): an output counts as adversarial only if it is
        misclassified within ``‖δ‖_norm <= tau`` (``norm`` ``"linf"`` or ``"l2"``). Without a
        threshold such an attack's column is its success rate at any distortion, and points it
        failed on count as robust — the table then says so (see below).
      masking_checks: run the cheap gradient-masking checks and record every warning in
        :attr:`RobustnessReport.notes` (printed under the table): the checks of
        :func:`robustjax.evaluation.gradient_masking_checks` on the report; outputs of
        ``logits_fn`` that look like probabilities (non-negative rows summing to 1 — attacks
        then see vanishing gradients: pass logits); correctly classified examples whose
        cross-entropy input gradient is exactly zero (first batch). Always recorded, whatever
        this flag: attacks that returned correctly classified points unchanged (a failed
        attack, not robustness) and thresholded attacks.
      rescore_keys: ``0`` for a deterministic ``logits_fn``. ``R > 0`` for a randomized
        defense: ``logits_fn`` is then ``(key, x) -> logits`` and every prediction (clean and
        on each attack's output) is re-scored under ``R`` fresh keys, never the keys the
        attacks saw (``fold_in(fold_in(key, crc32("rescore")), batch)`` folded with the
        column and draw); per example, correct means correct under every draw (worst case)
        and :attr:`RobustnessReport.rescored_accuracy` gives mean and worst over draws. The
        attacks are bound by the caller (e.g. to ``eot(logits_fn, ...)``).
      devices: devices to shard each batch over (data parallel, needs ``jit=True``); default
        ``jax.local_devices()`` — one device on a plain CPU host, so nothing changes there.
        ``devices=jax.local_devices()[:1]`` runs unsharded.

    Returns:
      A :class:`RobustnessReport` with per-example predictions and distortions.

    Example::

        from robustjax import attacks, evaluation as ev
        suite = {"FGSM": ev.bind_attack(attacks.fgsm, f, eps=0.3),
                 "PGD10": ev.bind_attack(attacks.pgd, f, eps=0.3, steps=10)}
        rep = ev.robustness_report(f, ds.images, ds.labels, suite, key=jax.random.key(0))
        print(ev.format_table({"Plain": rep}))   # | Defense | Natural | FGSM | PGD10 | Min |

    The drivers are host-side loops (not jittable themselves); the per-example helpers
    :func:`correct`, :func:`robust_accuracy` and :func:`distortion` work under ``jit``/``vmap``.

    Cost: ``ceil(N / B)`` batches × (one forward pass + for each attack its own cost + one
    forward pass); one compilation per attack.

    References:
      Jang et al., *Adversarial Defense via Learning to Generate Diverse Attacks*, ICCV 2019,
      supplementary Table A ("Min" column).
    """
    V.check_key(key, "key")
    V.check_nonnegative_int(rescore_keys, "rescore_keys")
    x, y = _check_dataset(x, y, (lambda v: logits_fn(key, v)) if rescore_keys else logits_fn)
    V.check_positive_int(batch_size, "batch_size")
    thresholds = _check_thresholds(distortion_threshold, attacks)
    mesh = _parallel.resolve_mesh(devices)
    rescore_base = jax.random.fold_in(key, zlib.crc32(b"rescore") & 0x7FFFFFFF)
    return _evaluate(logits_fn, x, y, attacks,
                     key_fn=lambda name, b: attack_key(key, name, b), batch_size=batch_size,
                     progress=progress, jit=jit, desc=desc, thresholds=thresholds,
                     masking_checks=masking_checks, rescore_keys=rescore_keys,
                     rescore_key_fn=lambda name, b: attack_key(rescore_base, name, b),
                     mesh=mesh)


def _check_thresholds(thresholds, attacks) -> dict[str, tuple[str, float]]:
    if thresholds is None:
        return {}
    if not isinstance(thresholds, Mapping):
        raise ValueError("`distortion_threshold` must map attack name -> (norm, tau), got "
                         f"{type(thresholds).__name__}.")
    out = {}
    for name, v in thresholds.items():
        if isinstance(attacks, Mapping) and name not in attacks:
            raise ValueError(f"`distortion_threshold` names unknown attack {name!r}.")
        if not (isinstance(v, (tuple, list)) and len(v) == 2):
            raise ValueError(f"`distortion_threshold[{name!r}]` must be (norm, tau), got {v!r}.")
        V.check_choice(v[0], f"distortion_threshold[{name!r}] norm", ("linf", "l2"))
        V.check_nonnegative(v[1], f"distortion_threshold[{name!r}] tau")
        out[name] = (str(v[0]), float(v[1]))
    return out


def _looks_like_probabilities(out: np.ndarray) -> bool:
    out = np.asarray(out, np.float64)
    return bool(out.size and np.all(out >= 0.0)
                and np.allclose(out.sum(axis=-1), 1.0, rtol=0.0, atol=1e-4))


def _zero_grad_fraction(logits_fn, x, y) -> float:
    """Fraction of correctly classified rows of ``x`` with an exactly zero CE input gradient."""
    # pylint: disable-next=g-import-not-at-top
    from robustjax import losses

    def total(v):
        return jnp.sum(losses.cross_entropy(logits_fn(v), y))

    g = np.asarray(jax.jit(jax.grad(total))(jnp.asarray(x)))
    ok = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), axis=-1)) == y
    zero = np.all(g.reshape(g.shape[0], -1) == 0.0, axis=-1)
    return float(np.sum(zero & ok) / max(1, np.sum(ok)))


def _notes(report: RobustnessReport, *, masking_checks: bool, probabilities: bool,
           zero_grad: float | None, rescore_keys: int) -> tuple[str, ...]:
    notes = []
    if probabilities:
        notes.append(
            "WARNING logits_fn returns non-negative rows summing to 1: it looks like "
            "probabilities, not logits. Softmax outputs saturate and give attacks vanishing "
            "gradients (robust accuracy overstated); pass the logits.")
    if zero_grad:
        notes.append(
            f"WARNING {100 * zero_grad:.1f}% of the correctly classified examples of the first "
            "batch have an exactly zero input gradient of the cross-entropy (saturated outputs, "
            "gradient masking or a non-differentiable model): gradient attacks cannot move them.")
    clean = report.clean_correct
    for name in report.attack_names:
        unchanged = clean & report.adv_correct[name] & (np.asarray(report.linf[name]) == 0.0)
        k = int(np.sum(unchanged))
        if k:
            notes.append(
                f"WARNING {name}: returned {k} of {int(clean.sum())} correctly classified points "
                "unchanged (x_adv == x): the attack failed there (or saw zero gradients); they "
                "count as robust.")
        if name in report.thresholds:
            norm, tau = report.thresholds[name]
            dist = np.asarray(report.linf[name] if norm == "linf" else report.l2[name])
            beyond = int(np.sum(clean & (report.adv_predictions[name] != report.labels)
                                & (dist > tau)))
            notes.append(
                f"{name}: unbounded attack scored at ||delta||_{norm[1:]} <= {tau:g}; {beyond} "
                "adversarial examples beyond the threshold count as robust.")
    if rescore_keys:
        r = report.rescored_accuracy
        means = ", ".join(f"{k} {100 * v['mean']:.2f}" for k, v in r.items())
        notes.append(
            f"randomized model re-scored with {rescore_keys} fresh keys (not the attacks'): "
            f"cells are the worst case over draws; mean over draws: {means}.")
    if masking_checks:
        # pylint: disable-next=g-import-not-at-top
        from robustjax.evaluation._masking import gradient_masking_checks

        for flag in gradient_masking_checks(report):
            if not flag.passed:
                notes.append(f"WARNING gradient masking check {flag.name}: {flag.detail}")
    return tuple(notes)


def _evaluate(
    logits_fn: LogitsFn,
    images: np.ndarray,
    labels: np.ndarray,
    attacks: Mapping[str, BoundAttack],
    *,
    key_fn: Callable[[str, int], PRNGKey],
    batch_size: int,
    progress: bool,
    jit: bool,
    desc: str,
    thresholds: Mapping[str, tuple[str, float]] | None = None,
    masking_checks: bool = False,
    rescore_keys: int = 0,
    rescore_key_fn: Callable[[str, int], PRNGKey] | None = None,
    mesh: Any = None,
    pad_multiple: int = 1,
) -> RobustnessReport:
    """The driver of :func:`robustness_report`; ``key_fn(name, batch_index)`` gives the keys.

    ``mesh``: a one-axis mesh of several devices to shard each batch over (``jit`` only), or
    ``None``. ``pad_multiple``: pad each batch to a multiple of this many rows (for attacks that
    are sharded already, e.g. by :func:`accuracy_vs_eps`)."""
    if not isinstance(attacks, Mapping):
        raise ValueError(
            f"`attacks` must be a mapping name -> attack, got {type(attacks).__name__}.")
    for name, attack in attacks.items():
        if not isinstance(name, str) or not callable(attack):
            raise ValueError(f"`attacks` must map str -> callable, got {name!r} -> {attack!r}.")

    n = images.shape[0]
    bs = min(batch_size, n)
    if not jit:
        mesh = None
    # Batches cover the same rows (and get the same keys) on any number of devices; with D
    # devices each is padded to a multiple of D rows (the padding rows are dropped).
    padded = _parallel.round_up(bs, pad_multiple if mesh is None else mesh.devices.size)

    rs = int(rescore_keys)

    def predict(rk, x):
        """Predictions ``[N]`` (deterministic) or ``[R, N]`` under ``R`` fresh draws."""
        if not rs:
            return jnp.argmax(logits_fn(x), axis=-1).astype(jnp.int32)
        keys = jax.vmap(lambda d: jax.random.fold_in(rk, d))(jnp.arange(rs))
        return jax.vmap(lambda k: jnp.argmax(logits_fn(k, x), axis=-1).astype(jnp.int32))(keys)

    def clean_eval(rk, x):
        return predict(rk, x)

    def make_eval(attack):
        def f(k, rk, x, y):
            x_adv = jax.lax.stop_gradient(attack(k, x, y))
            if x_adv.shape != x.shape:
                raise ValueError(
                    f"an attack returned shape {x_adv.shape} for input shape {x.shape}.")
            d = x_adv - x
            return (predict(rk, x_adv), per_example_norm(d, norm="linf"),
                    per_example_norm(d, norm="l2"))
        return f

    if jit:
        clean_fn = _parallel.sharded_jit(clean_eval, mesh, (1,), 2)
        attack_fns = {name: _parallel.sharded_jit(make_eval(a), mesh, (2, 3), 4)
                      for name, a in attacks.items()}
    else:
        clean_fn = clean_eval
        attack_fns = {name: make_eval(a) for name, a in attacks.items()}
    if rescore_key_fn is None:
        rescore_key_fn = key_fn
    draws = None if not rs else {
        name: np.zeros((rs, n), bool) for name in ("clean", *attacks)}
    probabilities = False
    zero_grad = None

    clean_pred = np.zeros((n,), np.int32)
    adv_pred = {name: np.zeros((n,), np.int32) for name in attacks}
    linf = {name: np.zeros((n,), np.float32) for name in attacks}
    l2 = {name: np.zeros((n,), np.float32) for name in attacks}

    batches = list(iterate_batches(n, bs))
    bar = None
    if progress:
        from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
        bar = tqdm(total=len(batches), desc=desc, unit="batch")
    try:
        for b, start, stop in batches:
            m = stop - start
            xb = jnp.asarray(_pad(images[start:stop], padded))
            yb = jnp.asarray(_pad(labels[start:stop], padded))
            cp = np.asarray(clean_fn(rescore_key_fn("clean", b), xb))
            if rs:
                draws["clean"][:, start:stop] = cp[:, :m] == labels[None, start:stop]
                cp = cp[0]
            clean_pred[start:stop] = cp[:m]
            if b == 0 and masking_checks:
                out0 = (logits_fn(rescore_key_fn("probe", 0), xb) if rs else logits_fn(xb))
                probabilities = _looks_like_probabilities(np.asarray(out0)[:m])
                if not rs:
                    try:
                        zero_grad = _zero_grad_fraction(logits_fn, xb[:m], labels[start:stop])
                    except Exception:  # pylint: disable=broad-except
                        zero_grad = None  # not differentiable by JAX (host code): no check
            for name, fn in attack_fns.items():
                p, di, d2 = fn(key_fn(name, b), rescore_key_fn(name, b), xb, yb)
                p = np.asarray(p)
                if rs:
                    draws[name][:, start:stop] = p[:, :m] == labels[None, start:stop]
                    p = p[0]
                adv_pred[name][start:stop] = p[:m]
                linf[name][start:stop] = np.asarray(di)[:m]
                l2[name][start:stop] = np.asarray(d2)[:m]
            if bar is not None:
                done = stop
                post = {"clean": f"{np.mean(clean_pred[:done] == labels[:done]):.3f}"}
                if attacks:
                    ok = clean_pred[:done] == labels[:done]
                    for name in attacks:
                        ok &= adv_pred[name][:done] == labels[:done]
                    post["worst"] = f"{np.mean(ok):.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    report = RobustnessReport(
        labels=labels,
        clean_predictions=clean_pred,
        adv_predictions=adv_pred,
        linf=linf,
        l2=l2,
        thresholds=dict(thresholds or {}),
        draw_correct=draws,
    )
    notes = _notes(report, masking_checks=masking_checks, probabilities=probabilities,
                   zero_grad=zero_grad, rescore_keys=rs)
    return dataclasses.replace(report, notes=notes)


def _fmt(v: float, percent: bool, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100.0 * v:.{digits}f}" if percent else f"{v:.{digits}f}"


def format_table(
    reports: Mapping[str, RobustnessReport],
    columns: Sequence[str] | None = None,
    *,
    percent: bool = True,
    digits: int = 2,
    natural: str = "Natural",
    min_name: str = "Min",
    worst_name: str = "Worst case",
    corner: str = "Defense",
    notes: bool = True,
) -> str:
    """Markdown table in the format of L2L-DA Table A: rows = models, columns = attacks.

    Columns are ``Natural`` (clean accuracy), one column per attack (robust accuracy, see
    :class:`RobustnessReport`), ``Min`` — the minimum over the **shown** attack columns' values
    that the row's report has, the L2L-DA paper's Min (Table A: each row's Min equals one of its
    columns) — and ``Worst case``: the fraction of examples correct clean and surviving every
    shown attack (per example; never above Min). A report lacking a column shows ``-`` there.
    With ``notes`` every report's warnings (:attr:`RobustnessReport.notes`: masking checks,
    probability outputs, attacks that left points unchanged, thresholds, re-scoring) follow the
    table, one line each, prefixed with the row name.

    Args:
      reports: ``{row name: report}``, e.g. ``{"Plain": r0, "PGD10": r1, "L2L-DA": r2}``.
      columns: attack columns in order; default: every attack of every report in order of
        first appearance.
      percent: print accuracies in percent (``68.27``) rather than fractions.
      digits: decimals.
      natural, min_name, worst_name, corner: header labels.
      notes: append the reports' notes under the table.

    Returns:
      The Markdown table as a string (no trailing newline).
    """
    if not isinstance(reports, Mapping) or not reports:
        raise ValueError("`reports` must be a non-empty mapping row name -> RobustnessReport.")
    if columns is None:
        cols: list[str] = []
        for r in reports.values():
            cols.extend(a for a in r.attack_names if a not in cols)
    else:
        cols = list(columns)
    header = [corner, natural, *cols, min_name, worst_name]
    rule = "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for row, r in reports.items():
        acc = r.robust_accuracy
        shown = [c for c in cols if c in acc]
        cells = [str(row), _fmt(r.clean_accuracy, percent, digits)]
        cells += [_fmt(acc[c], percent, digits) if c in acc else "-" for c in cols]
        cells.append(_fmt(r.min_accuracy(shown), percent, digits))
        cells.append(_fmt(r.worst_case_accuracy(shown), percent, digits))
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        extra = [f"- {row}: {note}" for row, r in reports.items() for note in r.notes]
        if extra:
            lines += [""] + extra
    return "\n".join(lines)
