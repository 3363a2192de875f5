"""L2L-DA (Jang et al., ICCV 2019): Table A and Figure B of the supplement.

Trains one classifier per row — ``Plain`` (standard), ``PGD10`` / ``PGD40`` (Madry PGD-k
adversarial training), ``L2L*`` (min-max with a one-step generator, no recurrence, no diversity)
and ``L2L-DA`` (recurrent generator of diverse attacks, min-max) — then attacks each with the
columns of ``config.columns``: FGSM, PGD-k, C&W-loss PGD-k (ℓ∞, Table A's "CW100 / CW1000"),
generators **trained against that row's classifier** (AdvGAN, GAP, and an L2L-DA generator
with T steps and λ) and AutoAttack (:func:`robustjax.evaluation.autoattack`, the standard
members or a labelled subset). ``Min`` is the paper's: the minimum over the columns'
accuracies (in Table A each row's Min equals one of its columns); ``Worst case`` is the
per-example one (correct clean and under every column). Every accuracy is printed with its
Wilson 95 % interval, and every deviation from the paper is listed under the table. Writes to
``--workdir``:

* ``table.md`` / ``results.json`` — the table (also printed) and raw numbers (per-column
  accuracies, intervals, mean ℓ∞ / ℓ2 of each column's perturbations, training curves,
  timings, the diversity check);
* ``figure_b.png`` — Figure B: one test digit per class (rows) attacked by the min-max L2L-DA
  generator with several codes ``z`` (columns); left half the adversarial image, right half
  the perturbation rescaled as in the supplement (ε-ball → [0, 1], 0 → 1/2);
* ``training_curves.png`` — adversarial training accuracy (and ε) of the robust rows per update;
* with ``config.diversity_steps > 0``, the diversity check: L2L-DA min-max training from
  Plain with λ = ``config.lambda_div`` and with λ = 0, same initialisation and keys, compared by
  the mean pairwise ℓ2 distance of the final generators' perturbations over codes ``z``.

Usage::

    python experiments/l2lda.py --workdir /tmp/l2lda --config experiments/configs/l2lda.py:repro
    python experiments/l2lda.py --workdir /tmp/l2lda --config experiments/configs/l2lda.py:smoke

Classifier checkpoints are not written (the small run takes minutes); ``fit`` logs the
Plain / PGD rows under ``workdir/<row>/``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time

import _common

ROWS = ("Plain", "PGD10", "PGD40", "L2L*", "L2L-DA")
GENERATOR_COLUMNS = ("AdvGAN", "GAP", "L2L-DA")
AUTOATTACK_MEMBERS = ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard version, in order
_STEPS_COLUMN = re.compile(r"^(PGD|CW)([0-9]+)$")


def _classifier(config):
    from robustjax import models

    if config.model == "lenet5":
        return models.LeNet5(num_classes=config.num_classes)
    if config.model == "cnn":  # the quickstart's MnistCNN (2 conv + 2 fc)
        return models.MnistCNN(features=tuple(config.cnn_features),
                               kernel_size=config.cnn_kernel_size, hidden=config.cnn_hidden,
                               num_classes=config.num_classes)
    if config.model == "resnet20":
        return models.ResNet20(num_classes=config.num_classes)
    if config.model == "resnet18":
        return models.ResNet18(num_classes=config.num_classes)
    raise ValueError(f"config.model: unknown model {config.model!r}")


def _variables(params, batch_stats):
    v = {"params": params}
    if batch_stats:
        v["batch_stats"] = batch_stats
    return v


def _row_epochs(config, row):
    return config.plain_epochs if row == "Plain" else config.epochs


def _fit_minmax(step, state, train, *, key, epochs, batch_size, progress, name, log_every):
    """Run a jitted L2L min-max step over ``epochs`` shuffled epochs; returns ``(state,
    last_metrics, curve)`` with ``curve`` the metrics averaged over every ``log_every``
    updates."""
    import jax
    import numpy as np

    from robustjax import data

    step = jax.jit(step)
    metrics, curve, window = {}, [], []
    i = 0
    for epoch in range(epochs):
        kd = jax.random.fold_in(key, epoch)
        for batch in data.batches(kd, train, batch_size=batch_size):
            state, metrics = step(state, batch, jax.random.fold_in(kd, 10_000 + i))
            i += 1
            window.append(metrics)
            if len(window) == log_every:
                host = jax.device_get(window)
                rec = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                curve.append({"step": i, **rec})
                window = []
                if progress:
                    print(f"[{name}] update {i}: " + ", ".join(
                        f"{k}={v:.3f}" for k, v in rec.items()), flush=True)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    return state, metrics, curve


def train_rows(config, train, test, key, workdir):
    """Train the classifier of every row; returns ``(model, {row: info}, timings)``.

    Table A's caption: "Each classifier is pretrained". ``Plain`` is trained first (standard
    training); with ``config.warm_start`` every robust row starts from Plain's weights (fresh
    optimiser state), and ε is ramped linearly from 0 to ``config.eps`` over the first
    ``config.eps_rampup_steps`` updates of each robust row (PGD rows through
    ``adversarial_objective(eps_schedule=...)``, the min-max rows through
    ``make_l2lda_step(eps_schedule=...)``), one compile per row. ``info`` holds the classifier's
    ``variables``, the training ``curve`` and, for the min-max rows, the ``generator``.
    """
    import jax
    import optax

    from robustjax import attacks, objectives, training
    from robustjax.models._l2l import L2LGenerator
    from robustjax.training._l2l_baselines import make_l2l_star_step
    from robustjax.training._l2lda import create_l2lda_state, make_l2lda_step

    del test
    model = _classifier(config)
    shape = (config.batch_size,) + tuple(train.images.shape[1:])
    out, timings = {}, {}
    ramp = (optax.linear_schedule(0.0, config.eps, config.eps_rampup_steps)
            if config.eps_rampup_steps > 0 else None)
    rows = list(config.rows)
    if config.warm_start and "Plain" in rows:  # Plain first: the others start from it
        rows.remove("Plain")
        rows.insert(0, "Plain")
    pretrained = None
    for row in rows:
        k = jax.random.fold_in(key, config.rows.index(row))
        t0, c0 = time.perf_counter(), time.process_time()
        warm = pretrained if (config.warm_start and row != "Plain") else None
        if row == "Plain" or row.startswith("PGD"):
            if row == "Plain":
                objective = training.standard_objective()
            else:
                steps = int(row[3:])
                attack = functools.partial(attacks.pgd, steps=steps, random_start=True)
                if ramp is None:
                    attack = functools.partial(
                        attack, eps=config.eps,
                        step_size=config.pgd_step_factor * config.eps / steps)
                # With a ramp the attack gets eps from the schedule and, by default, the step
                # 2.5 eps / steps (pgd's default), i.e. pgd_step_factor = 2.5.
                objective = objectives.adversarial_objective(attack, eps_schedule=ramp)
            model_or_state = model
            if warm is not None:
                tx = training.make_optimizer("adam", learning_rate=config.learning_rate)
                model_or_state = training.create_train_state(
                    model, k, (1,) + tuple(train.images.shape[1:]), tx)
                model_or_state = model_or_state.replace(
                    params=warm["params"], batch_stats=warm.get("batch_stats", {}),
                    opt_state=tx.init(warm["params"]))
            state, history = training.fit(
                model_or_state, objective, train, key=k, epochs=_row_epochs(config, row),
                batch_size=config.batch_size, optimizer="adam",
                learning_rate=config.learning_rate, progress=config.progress,
                log_every=config.log_every, workdir=os.path.join(workdir, row.lower()))
            curve = []
            for rec in history.get("train", []):
                c = {"step": int(rec["step"])}
                for name in ("loss", "accuracy"):
                    if name in rec:
                        c["adv_accuracy" if name == "accuracy" else "clf_loss"] = float(rec[name])
                if ramp is not None and row != "Plain":
                    c["eps"] = float(ramp(int(rec["step"])))
                curve.append(c)
            out[row] = {"variables": _variables(state.params, state.batch_stats),
                        "curve": curve}
            if row == "Plain":
                pretrained = out[row]["variables"]
        elif row in ("L2L*", "L2L-DA"):
            gen = L2LGenerator(num_classes=config.num_classes, latent_dim=config.latent_dim,
                               features=tuple(config.gen_features))
            state = create_l2lda_state(
                model, gen, k, shape, clf_tx=optax.adam(config.learning_rate),
                gen_tx=optax.adam(config.gen_learning_rate), clf_variables=warm)
            if row == "L2L*":
                step = make_l2l_star_step(eps=config.eps, latent_dim=config.latent_dim,
                                          clean_weight=config.clean_weight, eps_schedule=ramp)
            else:
                step = make_l2lda_step(
                    eps=config.eps, lambda_div=config.lambda_div, steps=config.l2l_steps,
                    step_fraction=config.l2l_step_fraction, latent_dim=config.latent_dim,
                    clean_weight=config.clean_weight, eps_schedule=ramp,
                    backprop_steps=config.get("backprop_steps"))
            state, metrics, curve = _fit_minmax(
                step, state, train, key=k, epochs=_row_epochs(config, row),
                batch_size=config.batch_size, progress=config.progress, name=row,
                log_every=config.log_every)
            out[row] = {
                "variables": _variables(state.clf_params, state.clf_batch_stats),
                "generator": (gen, {"params": state.gen_params,
                                    "batch_stats": state.gen_batch_stats}),
                "final_metrics": metrics,
                "curve": curve,
            }
        else:
            raise ValueError(f"config.rows: unknown row {row!r}")
        timings[f"train_{row}_s"] = time.perf_counter() - t0
        timings[f"train_{row}_cpu_s"] = time.process_time() - c0
    return model, out, timings


def column_names(config):
    """The Table A columns of ``config`` in order (``config.columns``)."""
    return tuple(config.columns)


def validate_config(config):
    """Fail at start-up, before any training, on a config that cannot run: unknown rows or
    columns, ε ≤ 0, a dataset this machine does not have, an unknown model or AutoAttack
    member. Raises ``ValueError`` naming the field."""
    from robustjax import data

    for row in config.rows:
        if row not in ROWS and not (row.startswith("PGD") and row[3:].isdigit()
                                    and int(row[3:]) >= 1):
            raise ValueError(f"config.rows: unknown row {row!r}; known: {ROWS} or PGD<k>.")
    if len(set(config.rows)) != len(config.rows):
        raise ValueError(f"config.rows: duplicate rows in {tuple(config.rows)}.")
    known = ("FGSM", "PGD<k>", "CW<k>", *GENERATOR_COLUMNS, "AutoAttack")
    for col in config.columns:
        m = _STEPS_COLUMN.match(col)
        if m is not None:
            if int(m.group(2)) < 1:
                raise ValueError(f"config.columns: {col!r} needs at least one step.")
        elif col not in ("FGSM", *GENERATOR_COLUMNS, "AutoAttack"):
            raise ValueError(f"config.columns: unknown column {col!r}; known: {known}.")
    if len(set(config.columns)) != len(config.columns):
        raise ValueError(f"config.columns: duplicate columns in {tuple(config.columns)}.")
    if not config.eps > 0:
        raise ValueError(f"config.eps must be > 0, got {config.eps!r}.")
    if config.eps_rampup_steps < 0:
        raise ValueError(f"config.eps_rampup_steps must be >= 0, got {config.eps_rampup_steps}.")
    if config.model not in ("lenet5", "cnn", "resnet20", "resnet18"):
        raise ValueError(f"config.model: unknown model {config.model!r} "
                         "(lenet5, cnn, resnet20, resnet18).")
    for m in config.autoattack_members:
        if m not in AUTOATTACK_MEMBERS:
            raise ValueError(f"config.autoattack_members: unknown member {m!r}; known: "
                             f"{AUTOATTACK_MEMBERS}.")
    if "AutoAttack" in config.columns and not config.autoattack_members:
        raise ValueError("config.autoattack_members: empty, but the AutoAttack column is on.")
    if config.attack_gen_init not in ("scratch", "minmax"):
        raise ValueError(f"config.attack_gen_init must be 'scratch' or 'minmax', got "
                         f"{config.attack_gen_init!r}.")
    if config.attack_gen_init == "minmax" and "L2L-DA" not in config.rows:
        raise ValueError("config.attack_gen_init: 'minmax' needs the L2L-DA row.")
    for field in ("num_train", "num_test", "batch_size", "l2l_steps", "log_every"):
        if not (isinstance(config[field], int) and config[field] >= 1):
            raise ValueError(f"config.{field} must be an integer >= 1, got {config[field]!r}.")
    try:
        data.load_dataset(config.dataset, "test")
    except Exception as e:  # noqa: BLE001 - re-raised with the field named
        raise ValueError(f"config.dataset: {config.dataset!r} is not available on this "
                         f"machine ({type(e).__name__}: {e})") from e


def train_attack_generators(config, model, clf_variables, train, key, *, l2l_init=None):
    """The generator columns (AdvGAN, GAP, L2L-DA, as far as ``config.columns`` has them)
    trained against one fixed classifier; returns
    ``({column: generator_variables}, {column: last_metrics})``.

    ``l2l_init``: variables to start the L2L-DA generator from (``config.attack_gen_init ==
    "minmax"``: the L2L-DA row's min-max generator); ``None`` starts from the random
    initialisation of ``key``."""
    import jax

    from robustjax.training import _l2l_baselines as B

    columns = column_names(config)
    steps = _attack_gen_steps(config, model)
    nets, txs = steps["nets"], steps["txs"]
    shape = (config.attack_gen_batch_size,) + tuple(train.images.shape[1:])
    common = dict(steps=config.attack_gen_steps, batch_size=config.attack_gen_batch_size,
                  jit=False)
    gvars, last = {}, {}
    k_adv, k_gap, k_l2l = jax.random.split(key, 3)

    if "AdvGAN" in columns:
        st = B.create_generator_state(nets["advgan"], k_adv, shape, tx=txs["advgan"],
                                      discriminator=nets["disc"], disc_tx=txs["disc"])
        st, last["AdvGAN"] = B.train_attack_generator(steps["advgan"], st, clf_variables,
                                                      train.images, train.labels, key=k_adv,
                                                      **common)
        gvars["AdvGAN"] = {"params": st.params}
    if "GAP" in columns:
        st = B.create_generator_state(nets["gap"], k_gap, shape, tx=txs["gap"])
        st, last["GAP"] = B.train_attack_generator(steps["gap"], st, clf_variables,
                                                   train.images, train.labels, key=k_gap,
                                                   **common)
        gvars["GAP"] = {"params": st.params}
    if "L2L-DA" in columns:
        st = B.create_generator_state(nets["l2l"], k_l2l, shape, tx=txs["l2l"])
        if l2l_init is not None:
            st = st.replace(params=l2l_init["params"], batch_stats=l2l_init["batch_stats"],
                            opt_state=st.tx.init(l2l_init["params"]))
        st, last["L2L-DA"] = B.train_attack_generator(steps["l2l"], st, clf_variables, train.images,
                                                      train.labels, key=k_l2l, **common)
        gvars["L2L-DA"] = {"params": st.params, "batch_stats": st.batch_stats}
    last = {c: {k: float(v) for k, v in m.items()} for c, m in last.items()}
    return gvars, last


_STEP_CACHE: dict = {}


def _attack_gen_steps(config, model):
    """Jitted generator steps, networks and optimisers, created once per (config, classifier)
    so that the generators of every row share one compile (static pytree fields — apply
    functions, optimisers — must be the same objects for the jit cache to hit)."""
    import jax
    import optax

    from robustjax.models._attack_generators import (AdvGANDiscriminator, AdvGANGenerator,
                                                     GAPGenerator)
    from robustjax.models._l2l import L2LGenerator
    from robustjax.training import _l2l_baselines as B

    key = (id(config), id(model))
    if key not in _STEP_CACHE:
        _STEP_CACHE.clear()
        _STEP_CACHE[key] = {
            "advgan": jax.jit(B.make_advgan_step(model.apply, eps=config.eps)),
            "gap": jax.jit(B.make_gap_step(model.apply, eps=config.eps)),
            "l2l": jax.jit(B.make_l2l_generator_step(
                model.apply, eps=config.eps, lambda_div=config.lambda_div,
                steps=config.l2l_steps, step_fraction=config.l2l_step_fraction,
                latent_dim=config.latent_dim)),
            "nets": {
                "advgan": AdvGANGenerator(config.advgan_features, config.advgan_blocks),
                "disc": AdvGANDiscriminator(config.advgan_features),
                "gap": GAPGenerator(config.gap_features, config.gap_blocks),
                "l2l": L2LGenerator(num_classes=config.num_classes,
                                    latent_dim=config.latent_dim,
                                    features=tuple(config.gen_features)),
            },
            "txs": {"advgan": optax.adam(1e-3), "disc": optax.adam(1e-3),
                    "gap": optax.adam(1e-3), "l2l": optax.adam(config.gen_learning_rate)},
        }
    return _STEP_CACHE[key]


def attack_suite(config, logits_fn, gen_fns):
    """The Table A columns bound to ``logits_fn`` (all but AutoAttack, which
    :func:`autoattack_column` runs): ``{name: (key, x, y) -> x_adv}``."""
    from robustjax import attacks, evaluation
    from robustjax.attacks._generators import advgan_attack, gap_attack
    from robustjax.attacks._l2l import l2l_attack

    eps, bind = config.eps, evaluation.bind_attack
    suite = {}
    for col in column_names(config):
        m = _STEPS_COLUMN.match(col)
        if col == "FGSM":
            suite[col] = bind(attacks.fgsm, logits_fn, eps=eps)
        elif m is not None:
            k = int(m.group(2))
            loss = {"PGD": "ce", "CW": "cw"}[m.group(1)]
            suite[col] = bind(attacks.pgd, logits_fn, eps=eps, steps=k, loss=loss,
                              step_size=config.pgd_step_factor * eps / k, random_start=True)
        elif col == "AdvGAN":
            suite[col] = bind(advgan_attack, logits_fn, generator_fn=gen_fns["AdvGAN"], eps=eps)
        elif col == "GAP":
            suite[col] = bind(gap_attack, logits_fn, generator_fn=gen_fns["GAP"], eps=eps)
        elif col == "L2L-DA":
            suite[col] = bind(l2l_attack, logits_fn, generator_fn=gen_fns["L2L-DA"], eps=eps,
                              latent_dim=config.latent_dim, steps=config.l2l_steps,
                              step_fraction=config.l2l_step_fraction)
    return suite


_EVAL_CACHE: dict = {}


def _eval_fns(config, model):
    """Jitted ``(clf_variables, gen_variables, key, x, y) -> (pred, linf, l2)`` per column and
    ``(clf_variables, x) -> pred``, with every network's variables as *arguments*: the rows
    (same architecture) share one compile per column instead of one per row."""
    import jax
    import jax.numpy as jnp

    from robustjax.projections import per_example_norm
    from robustjax.training._l2lda import l2lda_generator_fn

    cache_key = (id(config), id(model))
    if cache_key in _EVAL_CACHE:
        return _EVAL_CACHE[cache_key]
    _EVAL_CACHE.clear()
    nets = _attack_gen_steps(config, model)["nets"]

    def logits_of(clf_vars):
        return lambda v: model.apply(clf_vars, v, train=False)

    def suite(clf_vars, gen_vars):
        gen_fns = {}
        if "AdvGAN" in gen_vars:
            gen_fns["AdvGAN"] = functools.partial(nets["advgan"].apply, gen_vars["AdvGAN"])
        if "GAP" in gen_vars:
            gen_fns["GAP"] = functools.partial(nets["gap"].apply, gen_vars["GAP"])
        if "L2L-DA" in gen_vars:
            gen_fns["L2L-DA"] = l2lda_generator_fn(nets["l2l"].apply, gen_vars["L2L-DA"])
        return attack_suite(config, logits_of(clf_vars), gen_fns)

    def make(name):
        def f(clf_vars, gen_vars, k, x, y):
            x_adv = jax.lax.stop_gradient(suite(clf_vars, gen_vars)[name](k, x, y))
            pred = jnp.argmax(logits_of(clf_vars)(x_adv), -1).astype(jnp.int32)
            d = x_adv - x
            return pred, per_example_norm(d, norm="linf"), per_example_norm(d, norm="l2")
        return jax.jit(f)

    names = [c for c in column_names(config) if c != "AutoAttack"]
    clean = jax.jit(lambda cv, x: jnp.argmax(logits_of(cv)(x), -1).astype(jnp.int32))
    _EVAL_CACHE[cache_key] = (clean, {name: make(name) for name in names})
    return _EVAL_CACHE[cache_key]


def evaluate_row(config, model, clf_variables, gen_variables, test, key):
    """Table A row without AutoAttack: the same per-example protocol as
    :func:`robustjax.evaluation.robustness_report` (keys ``attack_key(key, column, batch)``, a
    last partial batch padded by repeating its last example), with compiled functions shared
    across rows. Returns ``(report, {column: cpu_seconds})``."""
    import jax.numpy as jnp
    import numpy as np

    from robustjax import evaluation

    clean_fn, fns = _eval_fns(config, model)
    images, labels = np.asarray(test.images), np.asarray(test.labels)
    n = len(labels)
    bs = min(config.eval_batch_size, n)
    clean = np.zeros((n,), np.int32)
    adv = {k: np.zeros((n,), np.int32) for k in fns}
    linf = {k: np.zeros((n,), np.float32) for k in fns}
    l2 = {k: np.zeros((n,), np.float32) for k in fns}
    cpu = {k: 0.0 for k in fns}
    for b, start in enumerate(range(0, n, bs)):
        stop = min(n, start + bs)
        idx = np.minimum(np.arange(start, start + bs), stop - 1)
        xb, yb = jnp.asarray(images[idx]), jnp.asarray(labels[idx])
        m = stop - start
        clean[start:stop] = np.asarray(clean_fn(clf_variables, xb))[:m]
        for name, fn in fns.items():
            c0 = time.process_time()
            p, di, d2 = fn(clf_variables, gen_variables, evaluation.attack_key(key, name, b),
                           xb, yb)
            adv[name][start:stop] = np.asarray(p)[:m]
            linf[name][start:stop] = np.asarray(di)[:m]
            l2[name][start:stop] = np.asarray(d2)[:m]
            cpu[name] += time.process_time() - c0
    report = evaluation.RobustnessReport(labels=labels, clean_predictions=clean,
                                         adv_predictions=adv, linf=linf, l2=l2)
    return report, cpu


def autoattack_column(config, model, clf_variables, test, key):
    """AutoAttack (``config.autoattack_members`` of the standard version, in its order, each on
    the points still robust) at ``config.eps``; returns ``(pred, linf, l2, info)``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from robustjax import evaluation

    members = evaluation.autoattack_members(
        "standard", eps=config.eps, norm="linf", num_classes=config.num_classes,
        steps=config.autoattack_steps, n_queries=config.autoattack_n_queries)
    chosen = {m: members[m] for m in AUTOATTACK_MEMBERS if m in config.autoattack_members}
    if config.autoattack_target_classes:  # fewer targets for APGD-T / FAB-T (labelled)
        for m in ("apgd-t", "fab-t"):
            if m in chosen:
                chosen[m] = functools.partial(
                    chosen[m], n_target_classes=config.autoattack_target_classes)
    logits_fn = jax.jit(lambda v: model.apply(clf_variables, v, train=False))
    res = evaluation.autoattack(logits_fn, key, test.images, test.labels, eps=config.eps,
                                attacks=chosen, batch_size=config.autoattack_batch_size,
                                progress=config.progress)
    pred = np.asarray(logits_fn(jnp.asarray(res.x_adv))).argmax(-1)
    d = (np.asarray(res.x_adv) - np.asarray(test.images)).reshape(len(test.labels), -1)
    info = {"members": list(res.attack_names), "robust_accuracy": res.robust_accuracy,
            "after_each_member": res.per_attack_robust_accuracy,
            "broken_by": {a: int((res.broken_by == j).sum())
                          for j, a in enumerate(res.attack_names)}}
    return pred, np.abs(d).max(-1), np.linalg.norm(d, axis=-1), info


def perturbations_over_z(generator, gen_variables, logits_fn, x, y, *, eps, num_z, latent_dim,
                         steps, step_fraction, key):
    """``δ [Z, N, H, W, C]``: the L2L-DA perturbations of the batch ``x`` for ``Z`` codes (one
    code per image per draw; per-step batch statistics over the batch, as in training)."""
    import jax
    import numpy as np

    from robustjax.attacks._l2l import l2l_perturbation
    from robustjax.training._l2lda import l2lda_generator_fn

    gfn = l2lda_generator_fn(generator.apply, gen_variables)
    z = jax.random.normal(key, (num_z, x.shape[0], latent_dim))
    run = jax.jit(jax.vmap(lambda zz: l2l_perturbation(
        gfn, logits_fn, x, y, zz, eps=eps, steps=steps, step_fraction=step_fraction)))
    return np.asarray(run(z))


def diversity_stats(deltas, x_shape=None):
    """Mean pairwise ℓ2 distance between the perturbations of the same image for different
    codes (``deltas [Z, N, ...]``), the mean ℓ2 norm of a perturbation, and their ratio."""
    import numpy as np

    del x_shape
    d = deltas.reshape(deltas.shape[0], deltas.shape[1], -1).astype(np.float64)
    zc = d.shape[0]
    dists = [np.linalg.norm(d[i] - d[j], axis=-1) for i in range(zc) for j in range(i + 1, zc)]
    pairwise = float(np.mean(dists))
    norm = float(np.mean(np.linalg.norm(d, axis=-1)))
    return {"mean_pairwise_l2": pairwise, "mean_l2_norm": norm,
            "relative": pairwise / max(norm, 1e-12),
            "mean_linf": float(np.mean(np.abs(d).max(-1)))}


def minmax_diversity(config, model, plain_variables, train, test, key, *, lambdas, updates,
                     num_z, num_images, progress=False, trained=None):
    """Diversity with and without the diversity term, measured where it acts: L2L-DA min-max
    training from Plain's weights, once per λ in ``lambdas``, each with the same key ``key``
    (same initialisation, data order and step keys; with the L2L-DA row's key the runs are
    prefixes of that row's training), for ``updates`` updates. λ is a traced argument of one
    compiled step. Each final generator is measured against its own classifier on the first
    ``num_images`` test digits over ``num_z`` codes: mean pairwise ℓ2 distance between the
    perturbations of the same digit (and relative to their mean ℓ2 norm), accuracy per code and
    under the worst code. ``trained``: ``{λ: (classifier_variables, generator_variables)}`` of
    runs already done with exactly this recipe (the L2L-DA row itself, when ``updates`` is its
    length), measured without re-training. Returns ``{"lambda=<λ>": stats}``."""
    import jax
    import jax.numpy as jnp
    import optax

    from robustjax import data
    from robustjax.models._l2l import L2LGenerator
    from robustjax.training._l2lda import create_l2lda_state, make_l2lda_step

    ramp = (optax.linear_schedule(0.0, config.eps, config.eps_rampup_steps)
            if config.eps_rampup_steps > 0 else None)
    gen = L2LGenerator(num_classes=config.num_classes, latent_dim=config.latent_dim,
                       features=tuple(config.gen_features))
    step = jax.jit(make_l2lda_step(
        eps=config.eps, lambda_div=config.lambda_div, steps=config.l2l_steps,
        step_fraction=config.l2l_step_fraction, latent_dim=config.latent_dim,
        clean_weight=config.clean_weight, eps_schedule=ramp,
        backprop_steps=config.get("backprop_steps")))
    n = min(num_images, len(test.labels))
    x, y = jnp.asarray(test.images[:n]), jnp.asarray(test.labels[:n])
    shape = (config.batch_size,) + tuple(train.images.shape[1:])
    out = {}
    trained = trained or {}
    for lam in lambdas:
        c0 = time.process_time()
        if lam in trained:
            st = measure_generator(config, model, trained[lam][0], gen, trained[lam][1], x, y,
                                   num_z)
            st["training_metrics"], st["cpu_s"] = "the L2L-DA row's", time.process_time() - c0
            out[f"lambda={lam:g}"] = st
            continue
        state = create_l2lda_state(
            model, gen, key, shape, clf_tx=optax.adam(config.learning_rate),
            gen_tx=optax.adam(config.gen_learning_rate), clf_variables=plain_variables)
        i, epoch, curve = 0, 0, []
        while i < updates:  # _fit_minmax's key derivation
            kd = jax.random.fold_in(key, epoch)
            for batch in data.batches(kd, train, batch_size=config.batch_size):
                state, m = step(state, batch, jax.random.fold_in(kd, 10_000 + i),
                                jnp.float32(lam))
                i += 1
                if i % max(1, updates // 8) == 0:
                    curve.append({"update": i, **{k: float(v) for k, v in
                                                  jax.device_get(m).items()}})
                if i >= updates:
                    break
            epoch += 1
        st = measure_generator(
            config, model, _variables(state.clf_params, state.clf_batch_stats), gen,
            {"params": state.gen_params, "batch_stats": state.gen_batch_stats}, x, y, num_z)
        st["training_metrics"] = curve
        st["cpu_s"] = time.process_time() - c0
        out[f"lambda={lam:g}"] = st
        if progress:
            print(f"[diversity] lambda={lam:g}: " + ", ".join(
                f"{k}={v:.4g}" for k, v in st.items() if not isinstance(v, list)), flush=True)
    return out


def diversity_check(config, model, plain_variables, train, test, key, minmax_generator=None):
    """The in-run diversity check: :func:`minmax_diversity` with λ = ``config.lambda_div`` and
    λ = 0 for ``config.diversity_steps`` updates from Plain with ``key`` (the L2L-DA row's key),
    on ``config.diversity_num_images`` digits and ``config.diversity_num_z`` codes; plus the
    same statistics for the L2L-DA row's own min-max generator (``minmax_generator``)."""
    import jax.numpy as jnp

    row_updates = config.epochs * (len(train.labels) // config.batch_size)
    trained = None
    if minmax_generator is not None and config.diversity_steps == row_updates:
        # The λ = lambda_div run would repeat the L2L-DA row update for update: reuse it.
        _, gvars, clf = minmax_generator
        trained = {config.lambda_div: (clf, gvars)}
    out = {"classifier": "own (min-max from Plain)", "num_z": config.diversity_num_z,
           "num_images": min(config.diversity_num_images, len(test.labels)),
           "updates": config.diversity_steps, "row_updates": row_updates,
           **minmax_diversity(config, model, plain_variables, train, test, key,
                              lambdas=(config.lambda_div, 0.0), updates=config.diversity_steps,
                              num_z=config.diversity_num_z,
                              num_images=config.diversity_num_images,
                              progress=config.progress, trained=trained)}
    if minmax_generator is not None and trained is None:
        # (generator, its variables, its classifier's variables): the row's own generator.
        gen, gvars, clf = minmax_generator
        n = out["num_images"]
        out["minmax_generator"] = measure_generator(
            config, model, clf, gen, gvars, jnp.asarray(test.images[:n]),
            jnp.asarray(test.labels[:n]), config.diversity_num_z)
    return out


def measure_generator(config, model, clf_variables, gen, gen_variables, x, y, num_z):
    """:func:`diversity_stats` of an L2L-DA generator's perturbations of ``x`` over ``num_z``
    codes (fixed code key), plus the classifier's accuracy clean, per code, under the worst
    code and under PGD-10 (the table's PGD10 column)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from robustjax import attacks

    logits_fn = lambda v: model.apply(clf_variables, v, train=False)  # noqa: E731
    deltas = perturbations_over_z(
        gen, gen_variables, logits_fn, x, y, eps=config.eps, num_z=num_z,
        latent_dim=config.latent_dim, steps=config.l2l_steps,
        step_fraction=config.l2l_step_fraction, key=jax.random.key(123))
    st = diversity_stats(deltas)
    yy = np.asarray(y)[None]
    x_pgd = attacks.pgd(logits_fn, jax.random.key(321), x, y, eps=config.eps, steps=10,
                        step_size=config.pgd_step_factor * config.eps / 10, random_start=True)
    st["pgd10_accuracy"] = float(np.mean(np.asarray(logits_fn(x_pgd)).argmax(-1) == yy[0]))
    preds = np.stack([np.asarray(logits_fn(x + jnp.asarray(d))).argmax(-1) for d in deltas])
    st["accuracy_per_z_mean"] = float(np.mean(preds == yy))
    st["accuracy_worst_over_z"] = float(np.mean(np.all(preds == yy, 0)))
    st["clean_accuracy"] = float(np.mean(np.asarray(logits_fn(x)).argmax(-1) == yy[0]))
    return st


def figure_b(path, generator, gen_variables, logits_fn, test, *, eps, num_z, latent_dim,
             steps, step_fraction, key, num_classes=10):
    """Figure B: rows = classes (first test example of each), columns = codes ``z``; each cell
    is ``[x + δ | δ/(2ε) + 1/2]`` side by side; a cell's title marks a misclassified
    adversarial image with ✗. Returns ``(path, diversity_stats of the shown perturbations)``."""
    import jax.numpy as jnp
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = np.asarray(test.labels)
    classes = [c for c in range(num_classes) if np.any(labels == c)]
    idx = np.array([int(np.argmax(labels == c)) for c in classes])
    x = jnp.asarray(test.images[idx])
    y = jnp.asarray(labels[idx])
    deltas = perturbations_over_z(generator, gen_variables, logits_fn, x, y, eps=eps,
                                  num_z=num_z, latent_dim=latent_dim, steps=steps,
                                  step_fraction=step_fraction, key=key)   # [Z, R, H, W, C]
    adv = np.clip(np.asarray(x)[None] + deltas, 0, 1)
    pred = np.stack([np.asarray(logits_fn(jnp.asarray(a))).argmax(-1) for a in adv])
    noise = np.clip(deltas / (2 * eps) + 0.5, 0, 1)
    cells = np.concatenate([adv, noise], axis=3)                  # [Z, R, H, 2W, C]
    r = len(idx)
    fig = Figure(figsize=(1.3 * num_z * 2, 1.3 * r + 0.6))
    FigureCanvasAgg(fig)
    for i in range(r):
        for j in range(num_z):
            ax = fig.add_subplot(r, num_z, i * num_z + j + 1)
            img = cells[j, i]
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(str(classes[i]))
            wrong = int(pred[j, i]) != int(classes[i])
            ax.set_title(f"z{j}: {int(pred[j, i])}" + (" ✗" if wrong else ""), fontsize=7)
    fig.suptitle("L2L-DA generator: adversarial image | perturbation (ε-ball → [0, 1]); "
                 "title: z, prediction (✗ fooled)", fontsize=9)
    fig.savefig(path, dpi=80)
    return path, diversity_stats(deltas)


def plot_training_curves(path, curves):
    """Adversarial training accuracy (left) and the ε schedule (right) per update, per row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.5))
    FigureCanvasAgg(fig)
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for row, curve in curves.items():
        pts = [(c["step"], c["adv_accuracy"]) for c in curve if "adv_accuracy" in c]
        if pts:
            ax.plot(*zip(*pts), label=row)
        pts = [(c["step"], c["eps"]) for c in curve if "eps" in c]
        if pts:
            ax2.plot(*zip(*pts), label=row)
    ax.set_xlabel("update")
    ax.set_ylabel("training accuracy on the row's adversarial batch")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax2.set_xlabel("update")
    ax2.set_ylabel("ε (ramp)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path


def column_labels(config):
    """Header label per column: the name plus the budget where it deviates from the paper."""
    labels = {}
    for col in column_names(config):
        if col == "AutoAttack":
            members = [m for m in AUTOATTACK_MEMBERS if m in config.autoattack_members]
            tag = ("standard" if tuple(members) == AUTOATTACK_MEMBERS
                   else "+".join(m.upper() for m in members))
            if config.autoattack_target_classes:
                tag += f", {config.autoattack_target_classes} targets"
            labels[col] = f"AutoAttack ({tag})"
        elif col == "L2L-DA":
            labels[col] = f"L2L-DA attack (T={config.l2l_steps})"
        else:
            labels[col] = col
    return labels


def deviation_notes(config, num_train, num_test):
    """The deviations of this config from the paper's MNIST setting, one line each."""
    notes = []
    model = {"cnn": (f"the quickstart CNN (conv {tuple(config.cnn_features)} "
                     f"{config.cnn_kernel_size}×{config.cnn_kernel_size}, fc {config.cnn_hidden})"
                     " instead of LeNet-5"),
             "lenet5": "LeNet-5 (as the paper)"}.get(config.model, config.model)
    notes.append(f"Model: {model}.")
    notes.append(
        f"Data: {num_train:,} training digits (paper: 60,000), the first {num_test:,} test "
        f"digits (paper: 10,000); ε = {config.eps:g} (as the paper).")
    notes.append(
        f"Training: Plain {config.plain_epochs} epoch(s); every robust row "
        f"{config.epochs} epoch(s) at batch {config.batch_size} from Plain's weights, ε ramped "
        f"0 → {config.eps:g} over {config.eps_rampup_steps} updates (paper: fine-tuned from a "
        f"pretrained model for many more epochs; no ramp stated).")
    if "PGD40" not in config.rows:
        notes.append("PGD40 row omitted (a PGD-40 training step costs 5× PGD-10's; over the "
                     "CPU budget).")
    bp = config.get("backprop_steps")
    notes.append(
        f"L2L-DA: generator channels {tuple(config.gen_features)} (paper: (64, 64, 128)), "
        f"T = {config.l2l_steps} steps of {config.l2l_step_fraction:g}·ε (paper: T not "
        f"stated), λ = {config.lambda_div:g} on the ℓ1-norm diversity ratio, d = "
        f"{config.latent_dim}, generator Adam learning rate {config.gen_learning_rate:g} "
        f"(paper: not stated)"
        + (f", back-propagation through the last {bp} step(s) only" if bp else "") + ".")
    gen_cols = [c for c in column_names(config) if c in GENERATOR_COLUMNS]
    if gen_cols:
        init = ("fine-tuned from the L2L-DA row's min-max generator"
                if config.attack_gen_init == "minmax" else "trained from scratch")
        notes.append(
            f"Generator columns ({', '.join(gen_cols)}): {config.attack_gen_steps} generator "
            f"updates at batch {config.attack_gen_batch_size} against each row's fixed "
            f"classifier, {init} (paper: trained to convergence); at attack time the L2L-DA "
            f"generator normalises each recurrence step with its own batch statistics, as in "
            f"training.")
    missing = [c for c in ("AdvGAN", "GAP", "CW1000") if c not in column_names(config)]
    if missing:
        notes.append(f"Columns omitted for the CPU budget: {', '.join(missing)}.")
    if "AutoAttack" in column_names(config):
        members = [m for m in AUTOATTACK_MEMBERS if m in config.autoattack_members]
        full = tuple(members) == AUTOATTACK_MEMBERS
        budget = (f"{config.autoattack_steps} iterations" +
                  (f", {config.autoattack_target_classes} target classes for "
                   "APGD-T / FAB-T (standard: 9)" if config.autoattack_target_classes else "") +
                  (f", Square {config.autoattack_n_queries} queries" if "square" in members
                   else ""))
        notes.append(
            "AutoAttack (not in the paper's Table A): " +
            ("the standard version" if full else
             f"a reduced member set {', '.join(members)} of the standard version "
             f"(omitted: {', '.join(m for m in AUTOATTACK_MEMBERS if m not in members)})")
            + f", {budget}, each member on the points still robust.")
    notes.append("Evaluation PGD / CW columns: sign steps of "
                 f"{config.pgd_step_factor:g}·ε/k from a random start, 1 restart; CW = PGD on "
                 "the C&W margin loss.")
    for extra in config.get("table_notes", ()):
        notes.append(extra)
    return notes


def format_interval_table(reports, config, row_labels, notes):
    """Markdown Table A with a Wilson 95 % interval beside every accuracy."""
    from robustjax import evaluation

    cols = list(column_names(config))
    labels = column_labels(config)
    header = ["Defense", "Natural", *[labels[c] for c in cols], "Min (paper's)",
              "Worst case (per example)"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row, r in reports.items():
        n = r.num_examples
        acc = r.robust_accuracy

        def cell(p):
            return evaluation.format_accuracy(int(round(p * n)), n)

        cells = [row_labels.get(row, row), cell(r.clean_accuracy)]
        cells += [cell(acc[c]) for c in cols]
        mn = min(cols, key=lambda c: acc[c])
        cells.append(cell(r.min_accuracy(cols)) + f" ({labels[mn]})")
        cells.append(cell(r.worst_case_accuracy(cols)))
        lines.append("| " + " | ".join(cells) + " |")
    n = next(iter(reports.values())).num_examples
    lines.append("")
    lines.append(f"Accuracy in % on {n:,} test digits with Wilson 95 % intervals; an example "
                 "counts under an attack only if it is also correct clean. Min = the paper's "
                 "Min (lowest column, named in brackets); worst case = correct clean and under "
                 "every column.")
    lines.append("")
    lines.append("Deviations from the paper (Table A, MNIST):")
    lines += [f"- {x}" for x in notes]
    extra = [f"- {row}: {note}" for row, r in reports.items() for note in r.notes]
    if extra:
        lines += ["", "Checks:"] + extra
    return "\n".join(lines)


def train_and_evaluate(config, workdir: str) -> dict:
    """Run the experiment; returns the results dictionary also written to ``results.json``."""
    import jax
    import numpy as np

    from robustjax import data, evaluation, models

    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    key = jax.random.key(config.seed)
    k_train, k_gen, k_eval, k_fig = jax.random.split(key, 4)
    k_aa, _ = jax.random.split(jax.random.fold_in(key, 7))
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, config.num_test))

    model, rows, timings = train_rows(config, train, test, k_train, workdir)
    minmax_gen = rows["L2L-DA"]["generator"] if "L2L-DA" in rows else None
    l2l_init = (minmax_gen[1] if config.attack_gen_init == "minmax" and minmax_gen else None)
    reports, gen_metrics, aa_info, eval_cpu = {}, {}, {}, {}
    for r, row in enumerate(config.rows):
        info = rows[row]
        t0, c0 = time.perf_counter(), time.process_time()
        gen_vars, gen_metrics[row] = train_attack_generators(
            config, model, info["variables"], train, jax.random.fold_in(k_gen, r),
            l2l_init=l2l_init)
        timings[f"attack_generators_{row}_s"] = time.perf_counter() - t0
        timings[f"attack_generators_{row}_cpu_s"] = time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        report, eval_cpu[row] = evaluate_row(config, model, info["variables"], gen_vars, test,
                                             k_eval)
        timings[f"evaluate_{row}_s"] = time.perf_counter() - t0
        timings[f"evaluate_{row}_cpu_s"] = time.process_time() - c0
        if "AutoAttack" in column_names(config):
            t0, c0 = time.perf_counter(), time.process_time()
            pred, li, l2, aa_info[row] = autoattack_column(config, model, info["variables"],
                                                           test, k_aa)
            report = report.with_attack("AutoAttack", pred, li, l2)
            timings[f"autoattack_{row}_s"] = time.perf_counter() - t0
            timings[f"autoattack_{row}_cpu_s"] = time.process_time() - c0
        reports[row] = report
        if config.progress:
            print(f"[{row}] clean {report.clean_accuracy:.3f}, " + ", ".join(
                f"{k} {v:.3f}" for k, v in report.robust_accuracy.items())
                + f"; min {report.min_accuracy():.3f}, worst case "
                f"{report.worst_case_accuracy():.3f}", flush=True)

    fig_path, fig_div = None, None
    if minmax_gen is not None:
        gen, gvars = minmax_gen
        fig_path, fig_div = figure_b(
            os.path.join(workdir, "figure_b.png"), gen, gvars,
            models.make_logits_fn(model, rows["L2L-DA"]["variables"]), test, eps=config.eps,
            num_z=config.figure_num_z, latent_dim=config.latent_dim,
            steps=config.l2l_steps, step_fraction=config.l2l_step_fraction, key=k_fig,
            num_classes=config.num_classes)
    curves = {row: info["curve"] for row, info in rows.items() if row != "Plain"}
    curves_path = plot_training_curves(os.path.join(workdir, "training_curves.png"), curves)

    diversity = None
    if config.diversity_steps > 0 and "L2L-DA" in rows:
        t0, c0 = time.perf_counter(), time.process_time()
        # From Plain's weights with the L2L-DA row's key: the λ = config.lambda_div run is the
        # first diversity_steps updates of the L2L-DA row itself.
        k_row = jax.random.fold_in(k_train, list(config.rows).index("L2L-DA"))
        diversity = diversity_check(
            config, model,
            rows["Plain"]["variables"] if config.warm_start and "Plain" in rows else None,
            train, test,
            k_row, minmax_generator=(*minmax_gen, rows["L2L-DA"]["variables"]))
        timings["diversity_check_s"] = time.perf_counter() - t0
        timings["diversity_check_cpu_s"] = time.process_time() - c0

    row_labels = {row: (f"{row} ({_row_epochs(config, row)} ep.)") for row in config.rows}
    notes = deviation_notes(config, len(train.labels), len(test.labels))
    table = format_interval_table(reports, config, row_labels, notes)
    cols = list(column_names(config))

    def interval(p, n):
        lo, hi = evaluation.wilson_interval(int(round(p * n)), n)
        return [lo, hi]

    n = len(test.labels)
    timings["total_s"] = time.perf_counter() - t_start
    timings["total_cpu_s"] = time.process_time() - c_start
    results = {
        "config": config.to_dict(),
        "num_train": int(len(train.labels)),
        "num_test": int(n),
        "columns": cols,
        "column_labels": column_labels(config),
        "clean_accuracy": {k: r.clean_accuracy for k, r in reports.items()},
        "robust_accuracy": {k: dict(r.robust_accuracy) for k, r in reports.items()},
        # Min: the paper's (minimum over the columns); worst case: per example.
        "min_accuracy": {k: r.min_accuracy(cols) for k, r in reports.items()},
        "min_column": {k: min(cols, key=lambda c, r=r: r.robust_accuracy[c])
                       for k, r in reports.items()},
        "worst_case_accuracy": {k: r.worst_case_accuracy(cols) for k, r in reports.items()},
        "wilson95": {k: {"Natural": interval(r.clean_accuracy, n),
                         **{c: interval(r.robust_accuracy[c], n) for c in cols},
                         "Min": interval(r.min_accuracy(cols), n),
                         "Worst case": interval(r.worst_case_accuracy(cols), n)}
                     for k, r in reports.items()},
        "mean_linf": {k: {c: float(np.mean(r.linf[c])) for c in cols}
                      for k, r in reports.items()},
        "mean_l2": {k: {c: float(np.mean(r.l2[c])) for c in cols} for k, r in reports.items()},
        "autoattack": aa_info,
        "attack_generator_last_metrics": gen_metrics,
        "l2l_final_metrics": {k: v.get("final_metrics") for k, v in rows.items()
                              if "final_metrics" in v},
        "training_curves": curves,
        "diversity_check": diversity,
        "figure_b_diversity": fig_div,
        "eval_cpu_s_per_column": eval_cpu,
        "deviations": notes,
        "timings_s": timings,
        "figure_b": fig_path,
        "training_curves_png": curves_path,
        "devices": [str(d) for d in jax.devices()],
    }
    _common.write_outputs(workdir, results, table,
                          timings=json.dumps({k: round(v, 1) for k, v in timings.items()}))
    return results


if __name__ == "__main__":
    _common.run("l2lda", train_and_evaluate)
