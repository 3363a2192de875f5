"""L2L-DA (Jang et al., ICCV 2019): Table A and Figure B of the supplement.

Trains one classifier per row — ``Plain`` (standard), ``PGD10`` / ``PGD40`` (Madry PGD-k
adversarial training), ``L2L*`` (min-max with a one-step generator, no recurrence, no diversity)
and ``L2L-DA`` (recurrent generator of diverse attacks, min-max) — then attacks each with the
columns of Table A: FGSM, PGD-k, C&W-loss PGD-k (ℓ∞, Table A's "CW100 / CW1000"), and three
generators **trained against that row's classifier** (fixed, eval mode): AdvGAN, GAP and an
L2L-DA generator (T steps, λ). ``Min`` is the paper's: the minimum over the columns'
accuracies (in Table A each row's Min equals one of its columns); ``Worst case`` is the
per-example one (correct clean and under every column). Writes to
``--workdir``:

* ``table.md`` / ``results.json`` — the table (also printed) and raw numbers;
* ``figure_b.png`` — Figure B: one test digit per class (rows) attacked by the min-max L2L-DA
  generator with several codes ``z`` (columns); left half the adversarial image, right half
  the perturbation rescaled as in the supplement (ε-ball → 1/2, shifted by 1/2).

Usage::

    python experiments/l2lda.py --workdir /tmp/l2lda
    python experiments/l2lda.py --workdir /tmp/l2lda --config experiments/configs/l2lda.py:smoke

Classifier checkpoints are not written (the small run takes minutes); ``fit`` logs the
Plain / PGD rows under ``workdir/<row>/``.
"""

from __future__ import annotations

import functools
import os
import time

import _common


def _classifier(config):
    from robustjax import models

    if config.model == "lenet5":
        return models.LeNet5(num_classes=config.num_classes)
    if config.model == "resnet20":
        return models.ResNet20(num_classes=config.num_classes)
    if config.model == "resnet18":
        return models.ResNet18(num_classes=config.num_classes)
    raise ValueError(f"unknown model {config.model!r}")


def _variables(params, batch_stats):
    v = {"params": params}
    if batch_stats:
        v["batch_stats"] = batch_stats
    return v


def _fit_minmax(step, state, train, *, key, epochs, batch_size, progress, name):
    """Run a jitted L2L min-max step over ``epochs`` shuffled epochs."""
    import jax

    from robustjax import data

    step = jax.jit(step)
    metrics = {}
    for epoch in range(epochs):
        kd = jax.random.fold_in(key, epoch)
        for i, batch in enumerate(data.batches(kd, train, batch_size=batch_size)):
            state, metrics = step(state, batch, jax.random.fold_in(kd, 10_000 + i))
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if progress:
            print(f"[{name}] epoch {epoch + 1}: " + ", ".join(
                f"{k}={v:.3f}" for k, v in metrics.items()))
    return state, metrics


def train_rows(config, train, test, key, workdir):
    """Train the classifier of every row; returns ``{row: (variables, extra)}``.

    Table A's caption: "Each classifier is pretrained". ``Plain`` is trained first (standard
    training); with ``config.warm_start`` every robust row starts from Plain's weights (fresh
    optimiser state), and ε is ramped linearly from 0 to ``config.eps`` over the first
    ``config.eps_rampup_steps`` updates of each robust row (PGD rows through
    ``adversarial_objective(eps_schedule=...)``, the min-max rows through
    ``make_l2lda_step(eps_schedule=...)``), one compile per row.
    """
    import jax
    import optax

    from robustjax import attacks, training
    from robustjax.models._l2l import L2LGenerator
    from robustjax.training._l2l_baselines import make_l2l_star_step
    from robustjax.training._l2lda import create_l2lda_state, make_l2lda_step

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
    for r, row in enumerate(rows):
        k = jax.random.fold_in(key, config.rows.index(row))
        t0 = time.perf_counter()
        warm = pretrained if (config.warm_start and row != "Plain") else None
        if row in ("Plain",) or row.startswith("PGD"):
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
                objective = training.adversarial_objective(attack, eps_schedule=ramp)
            model_or_state = model
            if warm is not None:
                tx = training.make_optimizer("adam", learning_rate=config.learning_rate)
                model_or_state = training.create_train_state(
                    model, k, (1,) + tuple(train.images.shape[1:]), tx)
                model_or_state = model_or_state.replace(
                    params=warm["params"], batch_stats=warm.get("batch_stats", {}),
                    opt_state=tx.init(warm["params"]))
            state, _ = training.fit(
                model_or_state, objective, train, key=k, num_epochs=config.epochs,
                batch_size=config.batch_size, optimizer="adam",
                learning_rate=config.learning_rate, progress=config.progress,
                workdir=os.path.join(workdir, row.lower()))
            out[row] = {"variables": _variables(state.params, state.batch_stats)}
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
                    eps=config.eps, lambda_div=config.lambda_div, num_steps=config.l2l_steps,
                    step_fraction=config.l2l_step_fraction, latent_dim=config.latent_dim,
                    clean_weight=config.clean_weight, eps_schedule=ramp)
            state, metrics = _fit_minmax(
                step, state, train, key=k, epochs=config.epochs,
                batch_size=config.batch_size, progress=config.progress, name=row)
            out[row] = {
                "variables": _variables(state.clf_params, state.clf_batch_stats),
                "generator": (gen, {"params": state.gen_params,
                                    "batch_stats": state.gen_batch_stats}),
                "final_metrics": metrics,
            }
        else:
            raise ValueError(f"unknown row {row!r}")
        timings[f"train_{row}_s"] = time.perf_counter() - t0
    return model, out, timings


ROWS = ("Plain", "PGD10", "PGD40", "L2L*", "L2L-DA")


def validate_config(config):
    """Fail at start-up, before any training, on a config that cannot run: unknown rows or
    columns, ε ≤ 0, a dataset this machine does not have. Raises ``ValueError`` naming the
    field."""
    from robustjax import data

    for row in config.rows:
        if row not in ROWS and not (row.startswith("PGD") and row[3:].isdigit()):
            raise ValueError(f"config.rows: unknown row {row!r}; known: {ROWS} or PGD<k>.")
    for field in ("eval_pgd_steps", "eval_cw_steps"):
        for k in config[field]:
            if not (isinstance(k, int) and k >= 1):
                raise ValueError(f"config.{field}: column step counts must be integers >= 1, "
                                 f"got {k!r}.")
    if not config.eps > 0:
        raise ValueError(f"config.eps must be > 0, got {config.eps!r}.")
    if config.eps_rampup_steps < 0:
        raise ValueError(f"config.eps_rampup_steps must be >= 0, got {config.eps_rampup_steps}.")
    try:
        data.load_dataset(config.dataset, "test")
    except Exception as e:  # noqa: BLE001 - re-raised with the field named
        raise ValueError(f"config.dataset: {config.dataset!r} is not available on this "
                         f"machine ({type(e).__name__}: {e})") from e


def train_attack_generators(config, model, clf_variables, train, key, *,
                            return_variables=False):
    """AdvGAN, GAP and L2L-DA generators trained against one fixed classifier; returns
    ``{column: generator_fn}`` with the closures the attacks take (and, with
    ``return_variables``, ``{column: variables}`` as well)."""
    import jax

    from robustjax.training import _l2l_baselines as B
    from robustjax.training._l2lda import l2lda_generator_fn

    steps = _attack_gen_steps(config, model)
    nets, txs = steps["nets"], steps["txs"]
    shape = (config.attack_gen_batch_size,) + tuple(train.images.shape[1:])
    common = dict(num_steps=config.attack_gen_steps, batch_size=config.attack_gen_batch_size,
                  jit=False)
    fns = {}
    k_adv, k_gap, k_l2l = jax.random.split(key, 3)

    g = nets["advgan"]
    st = B.create_generator_state(g, k_adv, shape, tx=txs["advgan"],
                                  discriminator=nets["disc"], disc_tx=txs["disc"])
    st, _ = B.train_attack_generator(steps["advgan"], st, clf_variables, train.images,
                                     train.labels, key=k_adv, **common)
    fns["AdvGAN"] = functools.partial(g.apply, {"params": st.params})

    g = nets["gap"]
    st = B.create_generator_state(g, k_gap, shape, tx=txs["gap"])
    st, _ = B.train_attack_generator(steps["gap"], st, clf_variables, train.images,
                                     train.labels, key=k_gap, **common)
    fns["GAP"] = functools.partial(g.apply, {"params": st.params})

    g = nets["l2l"]
    st = B.create_generator_state(g, k_l2l, shape, tx=txs["l2l"])
    st, _ = B.train_attack_generator(steps["l2l"], st, clf_variables, train.images,
                                     train.labels, key=k_l2l, **common)
    fns["L2L-DA"] = l2lda_generator_fn(g.apply, {"params": st.params,
                                                 "batch_stats": st.batch_stats})
    if return_variables:
        gvars = {"AdvGAN": fns["AdvGAN"].args[0], "GAP": fns["GAP"].args[0],
                 "L2L-DA": {"params": st.params, "batch_stats": st.batch_stats}}
        return fns, gvars
    return fns


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
                num_steps=config.l2l_steps, step_fraction=config.l2l_step_fraction,
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
    """The Table A columns bound to ``logits_fn``: ``{name: (key, x, y) -> x_adv}``."""
    from robustjax import attacks, evaluation
    from robustjax.attacks._generators import advgan_attack, gap_attack
    from robustjax.attacks._l2l import l2l_attack

    eps, bind = config.eps, evaluation.bind_attack
    suite = {"FGSM": bind(attacks.fgsm, logits_fn, eps=eps)}
    for k in config.eval_pgd_steps:
        suite[f"PGD{k}"] = bind(attacks.pgd, logits_fn, eps=eps, steps=k,
                                step_size=config.pgd_step_factor * eps / k, random_start=True)
    for k in config.eval_cw_steps:
        suite[f"CW{k}"] = bind(attacks.pgd, logits_fn, eps=eps, steps=k, loss="cw",
                               step_size=config.pgd_step_factor * eps / k, random_start=True)
    suite["AdvGAN"] = bind(advgan_attack, logits_fn, generator_fn=gen_fns["AdvGAN"], eps=eps)
    suite["GAP"] = bind(gap_attack, logits_fn, generator_fn=gen_fns["GAP"], eps=eps)
    suite["L2L-DA"] = bind(l2l_attack, logits_fn, generator_fn=gen_fns["L2L-DA"], eps=eps,
                           latent_dim=config.latent_dim, num_steps=config.l2l_steps,
                           step_fraction=config.l2l_step_fraction)
    return suite


_EVAL_CACHE: dict = {}


def _eval_fns(config, model):
    """Jitted ``(clf_variables, gen_variables, key, x, y) -> (pred, linf, l2)`` per Table A
    column and ``(clf_variables, x) -> pred``, with every network's variables as *arguments*:
    the rows (same architecture) share one compile per column instead of one per row."""
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
        gen_fns = {"AdvGAN": functools.partial(nets["advgan"].apply, gen_vars["AdvGAN"]),
                   "GAP": functools.partial(nets["gap"].apply, gen_vars["GAP"]),
                   "L2L-DA": l2lda_generator_fn(nets["l2l"].apply, gen_vars["L2L-DA"])}
        return attack_suite(config, logits_of(clf_vars), gen_fns)

    def make(name):
        def f(clf_vars, gen_vars, k, x, y):
            x_adv = jax.lax.stop_gradient(suite(clf_vars, gen_vars)[name](k, x, y))
            pred = jnp.argmax(logits_of(clf_vars)(x_adv), -1).astype(jnp.int32)
            d = x_adv - x
            return pred, per_example_norm(d, norm="linf"), per_example_norm(d, norm="l2")
        return jax.jit(f)

    names = (["FGSM"] + [f"PGD{k}" for k in config.eval_pgd_steps]
             + [f"CW{k}" for k in config.eval_cw_steps] + ["AdvGAN", "GAP", "L2L-DA"])
    clean = jax.jit(lambda cv, x: jnp.argmax(logits_of(cv)(x), -1).astype(jnp.int32))
    _EVAL_CACHE[cache_key] = (clean, {name: make(name) for name in names})
    return _EVAL_CACHE[cache_key]


def evaluate_row(config, model, clf_variables, gen_variables, test, key):
    """Table A row: the same per-example protocol as :func:`robustjax.evaluation.
    robustness_report` (keys ``attack_key(key, column, batch)``, a last partial batch padded
    by repeating its last example), with compiled functions shared across rows."""
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
    for b, start in enumerate(range(0, n, bs)):
        stop = min(n, start + bs)
        idx = np.minimum(np.arange(start, start + bs), stop - 1)
        xb, yb = jnp.asarray(images[idx]), jnp.asarray(labels[idx])
        m = stop - start
        clean[start:stop] = np.asarray(clean_fn(clf_variables, xb))[:m]
        for name, fn in fns.items():
            p, di, d2 = fn(clf_variables, gen_variables, evaluation.attack_key(key, name, b),
                           xb, yb)
            adv[name][start:stop] = np.asarray(p)[:m]
            linf[name][start:stop] = np.asarray(di)[:m]
            l2[name][start:stop] = np.asarray(d2)[:m]
    return evaluation.RobustnessReport(labels=labels, clean_predictions=clean,
                                       adv_predictions=adv, linf=linf, l2=l2)


def figure_b(path, generator, gen_variables, logits_fn, test, *, eps, num_z, latent_dim,
             num_steps, step_fraction, key, num_classes=10):
    """Figure B: rows = classes (first test example of each), columns = codes ``z``; each cell
    is ``[x + δ | δ/(2ε) + 1/2]`` side by side."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from robustjax.attacks._l2l import l2l_perturbation
    from robustjax.training._l2lda import l2lda_generator_fn

    labels = np.asarray(test.labels)
    classes = [c for c in range(num_classes) if np.any(labels == c)]
    idx = np.array([int(np.argmax(labels == c)) for c in classes])
    x = jnp.asarray(test.images[idx])
    y = jnp.asarray(labels[idx])
    gfn = l2lda_generator_fn(generator.apply, gen_variables)
    z = jax.random.normal(key, (num_z, len(idx), latent_dim))
    run = jax.jit(jax.vmap(lambda zz: l2l_perturbation(
        gfn, logits_fn, x, y, zz, eps=eps, num_steps=num_steps, step_fraction=step_fraction)))
    deltas = np.asarray(run(z))                                   # [Z, R, H, W, C]
    adv = np.clip(np.asarray(x)[None] + deltas, 0, 1)
    noise = np.clip(deltas / (2 * eps) + 0.5, 0, 1)
    cells = np.concatenate([adv, noise], axis=3)                  # [Z, R, H, 2W, C]
    r, h, w2 = len(idx), cells.shape[2], cells.shape[3]
    fig = Figure(figsize=(1.2 * num_z * 2, 1.2 * r))
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
            if i == 0:
                ax.set_title(f"z{j}", fontsize=8)
    del h, w2
    fig.suptitle("L2L-DA: adversarial image | perturbation (ε-ball → [0, 1])")
    fig.savefig(path, dpi=80)
    return path


def train_and_evaluate(config, workdir: str) -> dict:
    """Run the experiment; returns the results dictionary also written to ``results.json``."""
    import jax

    from robustjax import data, evaluation, models

    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    k_train, k_gen, k_eval, k_fig = jax.random.split(key, 4)
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, config.num_test))

    model, rows, timings = train_rows(config, train, test, k_train, workdir)
    reports = {}
    for r, row in enumerate(config.rows):
        info = rows[row]
        t0 = time.perf_counter()
        _, gen_vars = train_attack_generators(config, model, info["variables"], train,
                                              jax.random.fold_in(k_gen, r),
                                              return_variables=True)
        timings[f"attack_generators_{row}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        reports[row] = evaluate_row(config, model, info["variables"], gen_vars, test, k_eval)
        timings[f"evaluate_{row}_s"] = time.perf_counter() - t0
        if config.progress:
            print(f"[{row}] clean {reports[row].clean_accuracy:.3f}, min "
                  f"{reports[row].min_accuracy():.3f}", flush=True)

    table = evaluation.format_table(reports, corner="Defense")
    fig_path = None
    if "L2L-DA" in rows:
        gen, gvars = rows["L2L-DA"]["generator"]
        fig_path = figure_b(
            os.path.join(workdir, "figure_b.png"), gen, gvars,
            models.make_logits_fn(model, rows["L2L-DA"]["variables"]), test, eps=config.eps,
            num_z=config.figure_num_z, latent_dim=config.latent_dim,
            num_steps=config.l2l_steps, step_fraction=config.l2l_step_fraction, key=k_fig,
            num_classes=config.num_classes)
    results = {
        "config": config.to_dict(),
        "num_train": int(len(train.labels)),
        "num_test": int(len(test.labels)),
        "clean_accuracy": {k: r.clean_accuracy for k, r in reports.items()},
        "robust_accuracy": {k: dict(r.robust_accuracy) for k, r in reports.items()},
        # Min: the paper's (minimum over the columns); worst case: per example.
        "min_accuracy": {k: r.min_accuracy() for k, r in reports.items()},
        "worst_case_accuracy": {k: r.worst_case_accuracy() for k, r in reports.items()},
        "l2l_final_metrics": {k: v.get("final_metrics") for k, v in rows.items()
                              if "final_metrics" in v},
        "timings_s": timings,
        "figure_b": fig_path,
        "devices": [str(d) for d in jax.devices()],
    }
    _common.write_outputs(workdir, results, table, timings=timings)
    return results


if __name__ == "__main__":
    _common.run("l2lda", train_and_evaluate)
