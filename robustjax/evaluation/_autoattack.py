"""AutoAttack: the parameter-free ensemble APGD-CE, APGD-T, FAB-T, Square (Croce & Hein 2020).

Each attack of the ensemble runs, in order, only on the points that are still robust (correct
clean and not broken by an earlier attack); a point's result is therefore the worst case over
the members, and :attr:`AutoAttackResult.broken_by` names the member that broke it.

Reference: Croce & Hein, *Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks*, ICML 2020 (arXiv:2003.01690), Sec. 5 ("standard" ensemble;
"plus" and "rand" as in the authors' package).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax._src import validation as V
from robustjax._src.types import PRNGKey
from robustjax.evaluation import _parallel
from robustjax.projections import per_example_norm

__all__ = ["AutoAttackResult", "autoattack", "autoattack_fn", "autoattack_members",
           "AUTOATTACK_VERSIONS"]

AUTOATTACK_VERSIONS = ("standard", "plus", "rand")
_MIN_BUCKET = 8

# Jitted members and predictors of earlier calls, so that calling `autoattack` again on the same
# model (another dataset slice, a second key) neither retraces nor recompiles. Keyed by the
# model object, the member's identity (version and budgets for the built-in members, the
# callable for `attacks=`), the norm and the devices; a few entries, oldest dropped first.
_JIT_CACHE: dict[Any, Callable[..., Any]] = {}
_JIT_CACHE_SIZE = 32


def _cached(key: Any, make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    try:
        hash(key)
    except TypeError:  # an unhashable model or eps: no reuse across calls
        return make()
    if key not in _JIT_CACHE:
        if len(_JIT_CACHE) >= _JIT_CACHE_SIZE:
            _JIT_CACHE.pop(next(iter(_JIT_CACHE)))
        _JIT_CACHE[key] = make()
    return _JIT_CACHE[key]


class AutoAttackResult(NamedTuple):
    """Per-point outcome of :func:`autoattack` (host-side NumPy arrays).

    Attributes:
      x_adv: ``[N, ...]`` the adversarial point that broke each broken point; ``x`` itself for
        points still robust and for points misclassified clean.
      robust: ``bool [N]``: correct clean **and** not broken by any member (the worst case).
      broken_by: ``int32 [N]``: index into ``attack_names`` of the member that broke the point;
        ``-1`` where not broken — either robust or already misclassified clean (see
        ``clean_correct``).
      attack_names: member names in the order they ran.
      clean_correct: ``bool [N]``.
      per_attack_robust_accuracy: ``{name: robust accuracy after this member and all earlier
        ones}`` (cumulative, as AutoAttack prints it); the last value is ``robust.mean()``.
    """

    x_adv: np.ndarray
    robust: np.ndarray
    broken_by: np.ndarray
    attack_names: tuple[str, ...]
    clean_correct: np.ndarray
    per_attack_robust_accuracy: dict[str, float]

    @property
    def robust_accuracy(self) -> float:
        return float(np.mean(self.robust))

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.clean_correct))


def autoattack_members(
    version: str, *, eps: Any, norm: str, num_classes: int, steps: int = 100,
    n_queries: int = 5000, eot_samples: int = 20,
) -> dict[str, Callable[..., Any]]:
    """The members of an AutoAttack ``version`` as ``{name: attack(logits_fn, key, x, y)}``.

    ``"standard"``: APGD-CE (100 iterations, no restarts), APGD-T (targeted DLR, 9 targets),
    FAB-T (9 targets), Square (5,000 queries). ``"plus"``: APGD-CE and APGD-DLR with 5 restarts,
    FAB (untargeted) with 5 restarts, Square with 5,000 queries × 5 restarts, APGD-T, FAB-T.
    ``"rand"``: APGD-CE and APGD-DLR with EOT over 20 draws, for a randomized
    ``logits_fn(key, x)``. The number of targets is ``min(9, K − 1)``. FAB and Square are
    imported here (lazily), so a missing one fails only when its version is asked for.
    ``steps`` (APGD and FAB iterations), ``n_queries`` (Square) and ``eot_samples`` default to
    the paper's values; lower them only for smoke runs, and label such a column as a deviation.
    """
    V.check_positive_int(steps, "steps")
    V.check_positive_int(n_queries, "n_queries")
    V.check_positive_int(eot_samples, "eot_samples")
    # pylint: disable=g-import-not-at-top
    from robustjax import attacks as A

    V.check_choice(version, "version", AUTOATTACK_VERSIONS)
    nt = min(9, num_classes - 1)
    p = functools.partial
    common = dict(eps=eps, norm=norm)
    if version == "rand":
        return {
            "apgd-ce": p(A.apgd, steps=steps, loss="ce", eot_samples=eot_samples, **common),
            "apgd-dlr": p(A.apgd, steps=steps, loss="dlr", eot_samples=eot_samples, **common),
        }
    if version == "standard":
        return {
            "apgd-ce": p(A.apgd, steps=steps, loss="ce", restarts=1, **common),
            "apgd-t": p(A.apgd_targeted, steps=steps, n_target_classes=nt, restarts=1, **common),
            "fab-t": p(A.fab, steps=steps, n_target_classes=nt, restarts=1, **common),
            "square": p(A.square, n_queries=n_queries, restarts=1, **common),
        }
    return {
        "apgd-ce": p(A.apgd, steps=steps, loss="ce", restarts=5, **common),
        "apgd-dlr": p(A.apgd, steps=steps, loss="dlr", restarts=5, **common),
        "fab": p(A.fab, steps=steps, restarts=5, n_target_classes=None, **common),
        "square": p(A.square, n_queries=n_queries, restarts=5, **common),
        "apgd-t": p(A.apgd_targeted, steps=steps, n_target_classes=nt, restarts=1, **common),
        "fab-t": p(A.fab, steps=steps, n_target_classes=nt, restarts=1, **common),
    }


def _bucket(m: int, cap: int) -> int:
    """Smallest power of two ``>= m`` (at least 8), capped at ``cap``: few distinct shapes."""
    b = _MIN_BUCKET
    while b < m:
        b *= 2
    return min(b, cap)


def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    if a.shape[0] == size:
        return a
    reps = np.repeat(a[-1:], size - a.shape[0], axis=0)
    return np.concatenate([a, reps], axis=0)


def _name_key(key: PRNGKey, name: str, chunk: int) -> PRNGKey:
    name_id = zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF
    return jax.random.fold_in(jax.random.fold_in(key, name_id), chunk)


def autoattack(
    logits_fn: Callable[..., Any],
    key: PRNGKey,
    x: Any,
    y: Any,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    batch_size: int | None = None,
    progress: bool = True,
    attacks: Mapping[str, Callable[..., Any]] | None = None,
    box: tuple[float, float] = (0.0, 1.0),
    jit: bool = True,
    steps: int = 100,
    n_queries: int = 5000,
    devices: Sequence[Any] | None = None,
) -> AutoAttackResult:
    """AutoAttack robust accuracy: each member attacks only the points still robust.

    The clean predictions are computed first; then for each member in order, the points still
    robust are gathered on the host, cut into chunks of at most ``batch_size`` and padded
    (repeating the last point) to a bucketed size — powers of two from 8 up to
    ``batch_size`` — so each member compiles once per bucket and is reused across chunks and
    calls; a point counts as broken when the member's output is misclassified (and lies in the
    ε-ball: outputs outside it raise). The per-point result is the worst case over members, so
    ``robust`` equals "correct clean and robust to every member run on its own" up to the
    randomness the members draw. A ``tqdm`` bar per member shows the remaining robust points.

    With several local devices each chunk is sharded over them (data parallel, see
    :func:`robustjax.evaluation.data_parallel`; bucket sizes rounded up to a multiple of the
    device count): the per-point result equals one device's with the same key, up to float
    effects of XLA's per-device kernels.

    Args:
      logits_fn: the model ``x [N, ...] -> logits [N, K]`` (e.g. ``jax.jit(partial(
        model.apply, variables))``), acting on examples independently. For
        ``version="rand"``: a randomized model ``logits_fn(key, x) -> logits`` (a key per call,
        e.g. RIDE's noise or a DefenseGAN's random restarts); clean accuracy and the success
        test then use one draw with a fresh key (``fold_in(key, 2**31 - 1)`` folded with the
        member and chunk), not the keys the attacks saw.
      key: PRNG key; member ``name`` on chunk ``c`` gets ``fold_in(fold_in(key,
        crc32(name)), c)``.
      x: clean images ``float32 [N, H, W, C]`` (or ``[N, D]``) inside ``box``.
      y: ``int32 [N]`` labels.
      eps: radius of the ℓ∞ / ℓ2 ball (``> 0``).
      norm: ``"linf"`` or ``"l2"``.
      version: ``"standard"``, ``"plus"`` or ``"rand"`` (see :func:`autoattack_members`).
      batch_size: largest chunk per call (default ``min(N, 500)``).
      progress: show a progress bar per member.
      attacks: optional override ``{name: attack(logits_fn, key, x, y) -> x_adv}`` (library
        signature with hyperparameters bound, e.g. ``partial(apgd, eps=0.3, steps=20)``);
        replaces the version's members (for ablations and tests).
      box: image domain (validated; members keep their outputs inside it).
      jit: compile each member (``jax.jit``) per bucket size.
      steps, n_queries: budgets of the version's members (APGD/FAB iterations, Square
        queries); the defaults are the paper's — lower them only for smoke runs and label
        the result as a deviation.
      devices: devices to shard each chunk over (needs ``jit=True``); default
        ``jax.local_devices()`` (one on a plain CPU host: unchanged);
        ``jax.local_devices()[:1]`` runs unsharded.

    Returns:
      :class:`AutoAttackResult`.

    Raises:
      ValueError: bad shapes/labels/pixels, ``eps <= 0``, unknown ``norm``/``version``, a
        member returning a point outside the ε-ball (tolerance ``1e-5·eps + 1e-6``).

    Cost: clean pass plus, per member, its own cost on the points still robust (standard,
    per point: APGD-CE 101 and APGD-T 9 × 101 forward+backward passes, FAB-T ≤ 9 × 100 steps
    of 2 forward + 1 backward, Square ≤ 5,000 forward passes); compile time once per member
    and bucket size.
    """
    V.check_choice(version, "version", AUTOATTACK_VERSIONS)
    V.check_choice(norm, "norm", ("linf", "l2"))
    V.check_positive(eps, "eps")
    V.check_key(key, "key")
    V.check_images(x, "x", rank=(2, 3, 4), box=box)
    V.check_labels(y, "y", batch_size=np.shape(x)[0])
    if not callable(logits_fn):
        raise ValueError(f"`logits_fn` must be callable, got {type(logits_fn).__name__}.")
    if batch_size is not None:
        V.check_positive_int(batch_size, "batch_size")
    mesh = _parallel.resolve_mesh(devices) if jit else None
    num_dev = 1 if mesh is None else mesh.devices.size
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    n = x.shape[0]
    if n == 0:
        raise ValueError("`x` must hold at least one example.")
    cap = min(n, 500) if batch_size is None else batch_size
    randomized = version == "rand"
    fresh = jax.random.fold_in(key, 0x7FFFFFFF)

    if randomized:
        probe = lambda v: logits_fn(fresh, v)  # noqa: E731
    else:
        probe = logits_fn
    out = jax.eval_shape(probe, jax.ShapeDtypeStruct((min(n, cap),) + x.shape[1:], jnp.float32))
    if len(out.shape) != 2:
        raise ValueError(f"`logits_fn` must return logits [N, K], got shape {out.shape}.")
    num_classes = int(out.shape[1])
    V.check_labels(y, "y", batch_size=n, num_classes=num_classes)
    members = dict(attacks) if attacks is not None else autoattack_members(
        version, eps=eps, norm=norm, num_classes=num_classes, steps=steps,
        n_queries=n_queries)
    for name, a in members.items():
        if not isinstance(name, str) or not callable(a):
            raise ValueError(f"`attacks` must map str -> callable, got {name!r} -> {a!r}.")
    mesh_id = None if mesh is None else tuple(d.id for d in mesh.devices.flat)
    eps_id = float(eps) if np.ndim(eps) == 0 else None

    def member_id(name):
        if attacks is not None:
            return ("attacks", name, attacks[name])
        return ("builtin", name, version, eps_id, norm, num_classes, steps, n_queries)

    def wrap(f, batch_argnums, num_args, cache_key):
        if not jit:
            return f
        make = lambda: _parallel.sharded_jit(f, mesh, batch_argnums, num_args)  # noqa: E731
        if eps_id is None and attacks is None:
            return make()
        return _cached((logits_fn, randomized, mesh_id) + cache_key, make)

    def predict(k, v):
        return jnp.argmax(logits_fn(k, v) if randomized else logits_fn(v), axis=-1)

    predict_c = wrap(predict, (1,), 2, ("predict",))

    def run_chunks(fn, idx, name, bar):
        """Apply ``fn(chunk, xb, yb) -> array`` to ``x[idx]`` in bucketed chunks."""
        outs = []
        for c, start in enumerate(range(0, len(idx), cap)):
            sel = idx[start:start + cap]
            b = _parallel.round_up(_bucket(len(sel), cap), num_dev)
            xb = jnp.asarray(_pad_to(x[sel], b))
            yb = jnp.asarray(_pad_to(y[sel], b))
            outs.append(fn(c, xb, yb, len(sel)))
            if bar is not None:
                bar.update(len(sel))
        return outs

    clean_pred = np.concatenate(run_chunks(
        lambda c, xb, yb, m: np.asarray(predict_c(_name_key(fresh, "clean", c), xb))[:m],
        np.arange(n), "clean", None))
    clean_correct = clean_pred == y
    robust = clean_correct.copy()
    broken_by = np.full((n,), -1, np.int32)
    x_adv = x.copy()
    per_attack: dict[str, float] = {}
    tol = 1e-5 * float(eps) + 1e-6

    for j, (name, attack) in enumerate(members.items()):
        def member(k, xb, yb, attack=attack, name=name):
            xa = jax.lax.stop_gradient(attack(logits_fn, k, xb, yb))
            if xa.shape != xb.shape:
                raise ValueError(
                    f"attack {name!r} returned shape {xa.shape} for input shape {xb.shape}.")
            return xa, per_example_norm(xa - xb, norm=norm)

        member_c = wrap(member, (1, 2), 3, member_id(name))
        idx = np.nonzero(robust)[0]
        bar = None
        if progress and len(idx):
            from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
            bar = tqdm(total=len(idx), desc=f"AutoAttack {name}", unit="pt")

        def step(c, xb, yb, m, name=name, member_c=member_c):
            xa, dist = member_c(_name_key(key, name, c), xb, yb)
            pred = predict_c(_name_key(fresh, name, c), xa)
            xa, dist, pred = np.asarray(xa)[:m], np.asarray(dist)[:m], np.asarray(pred)[:m]
            if np.any(dist > float(eps) + tol):
                raise ValueError(
                    f"attack {name!r} left the {norm} ball: distortion {dist.max():.6g} > "
                    f"eps={float(eps):g}.")
            return xa, pred

        try:
            results = run_chunks(step, idx, name, bar)
        finally:
            if bar is not None:
                bar.close()
        if len(idx):
            xa = np.concatenate([r[0] for r in results])
            pred = np.concatenate([r[1] for r in results])
            broken = pred != y[idx]
            hit = idx[broken]
            x_adv[hit] = xa[broken]
            robust[hit] = False
            broken_by[hit] = j
        per_attack[name] = float(np.mean(robust))
    return AutoAttackResult(
        x_adv=x_adv, robust=robust, broken_by=broken_by, attack_names=tuple(members),
        clean_correct=clean_correct, per_attack_robust_accuracy=per_attack)


def autoattack_fn(
    logits_fn: Callable[[Any], Any],
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    attacks: Mapping[str, Callable[..., Any]] | None = None,
    steps: int = 100,
    n_queries: int = 5000,
) -> Callable[[PRNGKey, Any, Any], Any]:
    """AutoAttack as one pure function ``(key, x, y) -> x_adv``: jit-, vmap-able, batch-wise.

    Runs every member of ``version`` (or ``attacks``) on the whole batch in order and keeps,
    per point, the first member output that is misclassified (the worst case over members, as
    :func:`autoattack`); points never broken come back as ``x``. No host-side gather: every
    member attacks every point (cost = the sum of the members' costs on the full batch, against
    :func:`autoattack`'s shrinking set), in exchange for a single compiled program — e.g. an
    AutoAttack column in :func:`robustjax.evaluation.robustness_report` or
    ``jax.jit(autoattack_fn(logits_fn, eps=0.3))(key, x, y)``. Member ``name`` gets key
    ``fold_in(key, crc32(name))``. Deterministic models only (``"rand"``: use
    :func:`autoattack`). Arguments as :func:`autoattack`.

    Cost: the sum of the members' costs on ``N`` points plus one forward pass per member.
    """
    V.check_choice(version, "version", AUTOATTACK_VERSIONS)
    if version == "rand":
        raise ValueError("`version`='rand' needs a randomized logits_fn(key, x) and fresh-key "
                         "scoring: use evaluation.autoattack.")
    V.check_choice(norm, "norm", ("linf", "l2"))
    V.check_positive(eps, "eps")
    if not callable(logits_fn):
        raise ValueError(f"`logits_fn` must be callable, got {type(logits_fn).__name__}.")

    def run(key, x, y):
        x = jnp.asarray(x)
        y = jnp.asarray(y)
        k = int(jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape[-1])
        members = dict(attacks) if attacks is not None else autoattack_members(
            version, eps=eps, norm=norm, num_classes=k, steps=steps, n_queries=n_queries)
        robust = jnp.argmax(logits_fn(x), axis=-1) == y
        x_adv = x
        for name, attack in members.items():
            xa = jax.lax.stop_gradient(attack(logits_fn, _name_key(key, name, 0), x, y))
            broken = robust & (jnp.argmax(logits_fn(xa), axis=-1) != y)
            x_adv = jnp.where(broken.reshape((-1,) + (1,) * (x.ndim - 1)), xa, x_adv)
            robust = robust & ~broken
        return jax.lax.stop_gradient(x_adv)

    return run
