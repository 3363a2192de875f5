"""Robust accuracy of a model under a suite of attacks, per attack and per-example **Min**.

The per-example helpers (:func:`correct`, :func:`robust_accuracy`, :func:`distortion`) are pure,
jit- and vmap-friendly JAX functions. :func:`robustness_report` is the host-side driver: it walks a
dataset in fixed-size batches, runs every attack (each jitted once), and gathers per-example
results into a :class:`RobustnessReport`, whose :func:`format_table` reproduces the layout of
Table A of the L2L-DA paper (rows = models; columns Natural, attacks…, Min).
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


def correct(logits_fn: LogitsFn, x: ArrayLike, y: ArrayLike) -> Array:
    """Per-example correctness of ``logits_fn`` on ``x``.

    Args:
      logits_fn: model, ``x [N, H, W, C] -> logits [N, K]``.
      x: images ``float32 [N, H, W, C]``.
      y: labels ``int32 [N]``.

    Returns:
      ``bool [N]``: ``argmax_k logits_fn(x)[n, k] == y[n]``. Cost: one forward pass.
    """
    V.check_images(x, "x", box=None)
    V.check_labels(y, "y", batch_size=jnp.shape(x)[0])
    logits = logits_fn(jnp.asarray(x))
    V.check_rank(logits, "logits_fn(x)", 2)
    return jnp.argmax(logits, axis=-1) == jnp.asarray(y)


def robust_accuracy(
    logits_fn: LogitsFn, x: ArrayLike, y: ArrayLike, x_adv: ArrayLike, *, require_clean: bool = True
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

    Returns:
      ``bool [N]``; callers reduce (``jnp.mean``). Cost: two forward passes (one if
      ``require_clean=False``).
    """
    V.check_images(x_adv, "x_adv", box=None)
    if jnp.shape(x) != jnp.shape(x_adv):
        raise ValueError(
            f"`x_adv` must have the shape of `x`, got {jnp.shape(x_adv)} and {jnp.shape(x)}."
        )
    ok = correct(logits_fn, x_adv, y)
    if require_clean:
        ok = ok & correct(logits_fn, x, y)
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

    Accuracies are fractions in ``[0, 1]``. An example is *robust to an attack* when it is
    classified correctly both clean and after the attack (:func:`robust_accuracy` with
    ``require_clean=True``); the **Min** column counts an example as robust only if it is
    correct clean and survives every attack (L2L-DA supplementary, Table A).
    """

    labels: np.ndarray
    clean_predictions: np.ndarray
    adv_predictions: Mapping[str, np.ndarray]
    linf: Mapping[str, np.ndarray]
    l2: Mapping[str, np.ndarray]

    # ---- per-example arrays -------------------------------------------------------------
    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def attack_names(self) -> tuple[str, ...]:
        return tuple(self.adv_predictions)

    @property
    def clean_correct(self) -> np.ndarray:
        """``bool [N]``: correct on clean inputs."""
        return self.clean_predictions == self.labels

    @property
    def adv_correct(self) -> dict[str, np.ndarray]:
        """``{attack: bool [N]}``: correct on the attack's output (ignoring the clean result)."""
        return {k: v == self.labels for k, v in self.adv_predictions.items()}

    @property
    def robust_correct(self) -> dict[str, np.ndarray]:
        """``{attack: bool [N]}``: correct clean **and** after the attack."""
        clean = self.clean_correct
        return {k: clean & v for k, v in self.adv_correct.items()}

    def min_correct(self, attacks: Sequence[str] | None = None) -> np.ndarray:
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
        """Fraction of examples in :meth:`min_correct`."""
        return float(np.mean(self.min_correct(attacks)))

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
            "distortion": self.distortion_stats,
        }
        if per_example:
            d["per_example"] = {
                "labels": self.labels.tolist(),
                "clean_predictions": self.clean_predictions.tolist(),
                "adv_predictions": {k: v.tolist() for k, v in self.adv_predictions.items()},
                "linf": {k: np.asarray(v).tolist() for k, v in self.linf.items()},
                "l2": {k: np.asarray(v).tolist() for k, v in self.l2.items()},
            }
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
        )

    def __str__(self) -> str:
        return format_table({"model": self})


def _check_dataset(images: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    V.check_images(images, "images")
    V.check_labels(labels, "labels", batch_size=np.shape(images)[0])
    if np.shape(images)[0] == 0:
        raise ValueError("`images` must hold at least one example.")
    return np.asarray(images, np.float32), np.asarray(labels, np.int32)


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
    images: ArrayLike,
    labels: ArrayLike,
    attacks: Mapping[str, BoundAttack],
    *,
    key: PRNGKey,
    batch_size: int = 256,
    progress: bool = True,
    jit: bool = True,
    desc: str = "robustness",
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

    Args:
      logits_fn: model, ``x [B, H, W, C] -> logits [B, K]`` (closed over its parameters).
      images: ``float32 [N, H, W, C]`` in ``[0, 1]`` (NumPy or JAX; kept on the host).
      labels: ``int32 [N]``.
      attacks: ``{name: bound_attack}`` with ``bound_attack(key, x [B,H,W,C], y [B]) -> x_adv``
        (e.g. ``functools.partial(pgd, logits_fn, eps=0.3, steps=10)`` reordered to
        ``(key, x, y)``). Insertion order is the column order of :func:`format_table`.
      key: PRNG key; per-batch, per-attack keys are folded in.
      batch_size: maximum batch size ``B`` (static).
      progress: show a tqdm progress bar over batches.
      jit: ``jax.jit`` each attack+evaluation (set ``False`` for attacks that run host code).
      desc: progress-bar label.

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
    images, labels = _check_dataset(images, labels)
    V.check_positive_int(batch_size, "batch_size")
    V.check_key(key, "key")
    return _evaluate(logits_fn, images, labels, attacks,
                     key_fn=lambda name, b: attack_key(key, name, b), batch_size=batch_size,
                     progress=progress, jit=jit, desc=desc)


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
) -> RobustnessReport:
    """The driver of :func:`robustness_report`; ``key_fn(name, batch_index)`` gives the keys."""
    if not isinstance(attacks, Mapping):
        raise ValueError(
            f"`attacks` must be a mapping name -> attack, got {type(attacks).__name__}.")
    for name, attack in attacks.items():
        if not isinstance(name, str) or not callable(attack):
            raise ValueError(f"`attacks` must map str -> callable, got {name!r} -> {attack!r}.")

    n = images.shape[0]
    bs = min(batch_size, n)

    def clean_eval(x):
        return jnp.argmax(logits_fn(x), axis=-1).astype(jnp.int32)

    def make_eval(attack):
        def f(k, x, y):
            x_adv = jax.lax.stop_gradient(attack(k, x, y))
            if x_adv.shape != x.shape:
                raise ValueError(
                    f"an attack returned shape {x_adv.shape} for input shape {x.shape}.")
            pred = jnp.argmax(logits_fn(x_adv), axis=-1).astype(jnp.int32)
            d = x_adv - x
            return pred, per_example_norm(d, norm="linf"), per_example_norm(d, norm="l2")
        return f

    wrap = jax.jit if jit else (lambda f: f)
    clean_fn = wrap(clean_eval)
    attack_fns = {name: wrap(make_eval(a)) for name, a in attacks.items()}

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
            xb = jnp.asarray(_pad(images[start:stop], bs))
            yb = jnp.asarray(_pad(labels[start:stop], bs))
            clean_pred[start:stop] = np.asarray(clean_fn(xb))[:m]
            for name, fn in attack_fns.items():
                p, di, d2 = fn(key_fn(name, b), xb, yb)
                adv_pred[name][start:stop] = np.asarray(p)[:m]
                linf[name][start:stop] = np.asarray(di)[:m]
                l2[name][start:stop] = np.asarray(d2)[:m]
            if bar is not None:
                done = stop
                post = {"clean": f"{np.mean(clean_pred[:done] == labels[:done]):.3f}"}
                if attacks:
                    ok = clean_pred[:done] == labels[:done]
                    for name in attacks:
                        ok &= adv_pred[name][:done] == labels[:done]
                    post["min"] = f"{np.mean(ok):.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    return RobustnessReport(
        labels=labels,
        clean_predictions=clean_pred,
        adv_predictions=adv_pred,
        linf=linf,
        l2=l2,
    )


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
    corner: str = "Defense",
) -> str:
    """Markdown table in the format of L2L-DA Table A: rows = models, columns = attacks.

    Columns are ``Natural`` (clean accuracy), one column per attack (robust accuracy, see
    :class:`RobustnessReport`), and ``Min``: the per-example minimum over the **shown** attack
    columns that the row's report has (so with every attack shown it is the Min of Table A).
    A report lacking a column shows ``-`` there.

    Args:
      reports: ``{row name: report}``, e.g. ``{"Plain": r0, "PGD10": r1, "L2L-DA": r2}``.
      columns: attack columns in order; default: every attack of every report in order of
        first appearance.
      percent: print accuracies in percent (``68.27``) rather than fractions.
      digits: decimals.
      natural, min_name, corner: header labels.

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
    header = [corner, natural, *cols, min_name]
    rule = "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for row, r in reports.items():
        acc = r.robust_accuracy
        shown = [c for c in cols if c in acc]
        cells = [str(row), _fmt(r.clean_accuracy, percent, digits)]
        cells += [_fmt(acc[c], percent, digits) if c in acc else "-" for c in cols]
        cells.append(_fmt(r.min_accuracy(shown), percent, digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
