"""LLR experiment (Qin et al., *Adversarial Robustness through Local Linearization*, 2019).

Trains one classifier per method — LLR (Eqn 8 / Algorithm 1), TRADES and ADV-k (PGD-k
adversarial training) — plus ADV-1, ADV-2, LLR-1, LLR-2 for the gradient-obfuscation study
(appendix F.4, Table F4), evaluates them with the F.1 protocol
(:func:`robustjax.evaluation._protocols.llr_evaluation_attacks`) and writes to ``--workdir``:

* ``table.md`` — the paper's table (Nominal / Untargeted / Multi-Targeted, plus the
  Random-Targeted *success rate* — lower is better, Table F3 — when ``eval_attacks`` asks for
  it) for LLR, TRADES and ADV-k, and the Table F4 study (FGSM, FGSM-k, PGD-m vs the strong
  Untargeted / Multi-Targeted attacks and, with ``eval_autoattack``, AutoAttack; the FGSM −
  Multi-Targeted gap and √γ) for ADV-1/2 and LLR-1/2 (and the optional TRADES-k and
  reference ADV-k rows, ``obfuscation_trades_steps`` / ``reference_adv``); accuracies with
  Wilson 95 % intervals (also printed);
* ``results.json`` — every accuracy and interval, γ statistics, training curves and timings
  (wall and process CPU);
* ``gamma_histogram.png`` — histogram of √γ(ε, x) on the test set for every model (Fig. F3);
* ``loss_surface_<model>.png`` — ℓ(x) on the plane spanned by the adversarial (Untargeted)
  direction and a random sign direction around one test example (Fig. A1), for
  ``surface_models`` (default all);
* ``training_curves.png`` — training metrics per model (loss, nominal loss, linear term, γ,
  accuracies);
* ``<model>/`` — training metrics (JSON lines) and checkpoints (a rerun resumes from them).

Accuracies are fractions in ``results.json``; an example counts as robust only if it is also
correct clean. The measured ``obfuscation`` (``repro``) run is in
``experiments/results/llr/``.

Usage::

    python experiments/llr.py --workdir /tmp/robustjax_llr
    python experiments/llr.py --workdir /tmp/llr --config experiments/configs/llr.py:smoke
    python experiments/llr.py --workdir /tmp/llr_f4 --config experiments/configs/llr.py:obfuscation
"""

from __future__ import annotations

import json
import math
import os
import time

import _common


MAIN_COLUMNS = ("Untargeted", "Multi-Targeted")


def _model(config):
    from robustjax import models

    def norm(v):
        return None if v is None else tuple(float(a) for a in v)

    mean, std = norm(config.input_mean), norm(config.input_std)
    if config.model == "cnn":
        return models.MnistCNN(features=tuple(config.features), kernel_size=config.kernel_size,
                               hidden=config.hidden, activation=config.activation,
                               mean=mean, std=std)
    if config.model == "mlp":
        return models.MLP(hidden=config.hidden, activation=config.activation, mean=mean,
                          std=std)
    if config.model == "wrn":
        return models.WideResNet(depth=config.wrn_depth, width=config.wrn_width,
                                 activation=config.activation, mean=mean, std=std)
    if config.model == "resnet152":
        raise NotImplementedError(
            "The ImageNet configuration needs a bottleneck ResNet-152 and ImageNet data; "
            "neither is available in robustjax yet.")
    raise ValueError(f"unknown model {config.model!r} (cnn, mlp, wrn, resnet152)")


def _runs(config) -> dict[str, tuple[str, int, float | None]]:
    """``{row name: (method, inner steps, inner step size)}``: the main table first, then the
    F4 models (ADV-k, LLR-k), then the optional F4 rows (TRADES-k, reference ADV-k rows with
    their own step size). A step size of ``None`` is the config's (``inner_step_size``;
    ``trades_step_size`` for TRADES). The order fixes each row's training key
    (``fold_in(key, index)``), so optional rows come last and leave the others unchanged."""
    runs = {}
    if config.get("main_table", True):
        runs = {
            f"LLR-{config.llr_steps}": ("llr", config.llr_steps, None),
            f"TRADES-{config.trades_steps}": ("trades", config.trades_steps, None),
            f"ADV-{config.adv_steps}": ("adv", config.adv_steps, None),
        }
    for k in config.obfuscation_steps:
        runs.setdefault(f"ADV-{k}", ("adv", k, None))
    for k in config.obfuscation_steps:
        runs.setdefault(f"LLR-{k}", ("llr", k, None))
    for k in config.get("obfuscation_trades_steps", ()):
        runs.setdefault(f"TRADES-{k}", ("trades", k, None))
    for k, step in config.get("reference_adv", ()):
        runs.setdefault(f"ADV-{k}@{step:g}", ("adv", int(k), float(step)))
    return runs


def _row_label(config, name: str, run: tuple) -> str:
    """The table's name of a row: a reference ADV-k row says its step size."""
    method, k, step = run
    if method == "adv" and step is not None:
        return f"ADV-{k}, steps of {step:g} (reference)"
    return config.get("row_labels", {}).get(name, name)


def _objective(config, method: str, steps: int, steps_per_epoch: int,
               step_size: float | None = None):
    """The objective of one row; ``step_size`` overrides the config's inner step size. Weight
    decay is not part of it: it is set once, in the optimizer
    (``training.make_optimizer(weight_decay=config.weight_decay)``)."""
    import optax

    from robustjax.training import _llr

    ramp = int(round(config.eps_ramp_epochs * steps_per_epoch))
    eps = optax.linear_schedule(0.0, config.eps, ramp) if ramp > 0 else config.eps
    if method == "llr":
        return _llr.llr_objective(
            eps=eps, lambda_=config.llr_lambda, mu=config.llr_mu, steps=steps,
            step_size=step_size or config.inner_step_size,
            nominal_weight=config.llr_nominal_weight)
    if method == "trades":
        return _llr.trades_objective(
            beta=config.trades_beta, eps=eps, steps=steps,
            step_size=step_size or config.trades_step_size)
    if method == "adv":
        return _llr.adv_k_objective(
            steps=steps, eps=eps, step_size=step_size or config.inner_step_size,
            step_rule="adam")
    raise ValueError(f"unknown method {method!r}")


def _markdown(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _gamma(logits_fn, key, x, y, config):
    """γ(ε, x) per example (F.4: maximise g by ``gamma_steps`` Adam steps of 0.1)."""
    import jax

    import numpy as np

    from robustjax import linearity, losses

    @jax.jit
    def run(key, x, y):
        def loss_fn(z):
            return losses.cross_entropy(logits_fn(z), y)
        return linearity.local_linearity(
            loss_fn, key, x, eps=config.eps, steps=config.gamma_steps,
            step_size=config.gamma_step_size, norm="linf", step_rule="adam", box=(0.0, 1.0),
            restarts=config.gamma_restarts, unroll=config.get("eval_unroll")).gamma

    out = []
    bs = config.eval_batch_size
    for i in range(0, len(y), bs):
        out.append(np.asarray(run(jax.random.fold_in(key, i), x[i:i + bs], y[i:i + bs])))
    return np.concatenate(out)


def _plot_histograms(gammas: dict, path: str, eps: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    roots = {k: np.sqrt(np.maximum(v, 0.0)) for k, v in gammas.items()}
    hi = max(float(np.max(v)) for v in roots.values())
    bins = np.linspace(0.0, max(hi, 1e-6), 40)
    for name, v in roots.items():
        ax.hist(v, bins=bins, alpha=0.5, label=name)
    ax.set_xlabel(f"√γ(ε={eps:g}, x)")
    ax.set_ylabel("test examples")
    ax.set_title("Local linearity on the test set (cf. Fig. F3)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _loss_surface(logits_fn, key, x, y, x_adv, config):
    """ℓ on the plane ``x + a·u + b·v`` (not clipped to the image box): ``u = ε·sign`` of the
    adversarial perturbation, ``v`` a random sign direction of the same norm; ``a, b`` in
    ``[-extent, extent]``."""
    import jax
    import jax.numpy as jnp

    from robustjax import losses

    u = config.eps * jnp.sign(x_adv - x)
    u = jnp.where(jnp.all(u == 0), config.eps * jnp.ones_like(u), u)
    v = config.eps * jax.random.rademacher(key, x.shape, dtype=x.dtype)
    t = jnp.linspace(-config.surface_extent, config.surface_extent, config.surface_points)
    a, b = jnp.meshgrid(t, t, indexing="ij")
    pts = x + a.reshape(-1, 1, 1, 1) * u + b.reshape(-1, 1, 1, 1) * v
    loss = jax.jit(lambda p: losses.cross_entropy(logits_fn(p), jnp.broadcast_to(y, p.shape[:1])))
    return t, loss(pts).reshape(a.shape)


def _plot_surface(t, z, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    a, b = np.meshgrid(np.asarray(t), np.asarray(t), indexing="ij")
    fig = plt.figure(figsize=(5, 4))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(a, b, np.asarray(z), cmap="viridis")
    ax.set_xlabel("adversarial (× ε)")
    ax.set_ylabel("random (× ε)")
    ax.set_zlabel("loss")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_training(histories: dict, path: str) -> None:
    """Training curves: nominal loss, linear term, γ and adversarial accuracy per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("loss", "nominal_loss", "linear_term", "gamma", "accuracy", "adv_accuracy")
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    # One colour per model in every panel (panels hold different subsets of the models).
    colors = {name: f"C{i}" for i, name in enumerate(histories)}
    for ax, k in zip(axes.ravel(), keys):
        for name, recs in histories.items():
            pts = [(r["step"], r[k]) for r in recs if k in r and math.isfinite(r[k])]
            if pts:
                ax.plot(*zip(*pts), label=name, color=colors[name])
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _mt_on_survivors(logits_fn, report, suite, test, key, config, name):
    """Multi-Targeted on the digits still robust under Untargeted only (cost: MT runs 9
    targeted attacks per digit); the rest keep their Untargeted predictions and distortions,
    so the column is the worst case of the two attacks."""
    import numpy as np

    from robustjax import evaluation

    alive = np.flatnonzero(report.robust_correct["Untargeted"])
    pred = np.array(report.adv_predictions["Untargeted"])
    linf = np.array(report.linf["Untargeted"])
    l2 = np.array(report.l2["Untargeted"])
    if alive.size:
        sub = evaluation.robustness_report(
            logits_fn, test.images[alive], test.labels[alive],
            {"Multi-Targeted": suite["Multi-Targeted"]}, key=key,
            batch_size=config.eval_batch_size, progress=config.progress, desc=f"{name} MT")
        pred[alive] = sub.adv_predictions["Multi-Targeted"]
        linf[alive] = sub.linf["Multi-Targeted"]
        l2[alive] = sub.l2["Multi-Targeted"]
    return report.with_attack("Multi-Targeted", pred, linf, l2)


def _acc(report, column: str) -> tuple[int, int]:
    """``(robust-correct count, n)`` of ``column`` (``"Nominal"`` = clean)."""
    import numpy as np

    v = report.clean_correct if column == "Nominal" else report.robust_correct[column]
    return int(np.sum(v)), int(v.shape[0])


def _cell(report, column: str) -> str:
    from robustjax import evaluation

    k, n = _acc(report, column)
    return evaluation.format_accuracy(k, n)


def train_and_evaluate(config, workdir: str) -> dict:
    """Run the experiment; returns the results dictionary also written to ``results.json``."""
    import jax
    import numpy as np

    from robustjax import data, evaluation, models, training
    from robustjax.evaluation import _protocols

    t_start, c_start = time.perf_counter(), time.process_time()
    os.makedirs(workdir, exist_ok=True)
    model = _model(config)
    key = jax.random.key(config.seed)
    k_train, k_eval, k_gamma, k_surf = jax.random.split(key, 4)
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, config.num_test))
    steps_per_epoch = len(train.labels) // config.batch_size
    total_steps = steps_per_epoch * config.num_epochs
    runs = _runs(config)
    acc_attacks = tuple(a for a in config.eval_attacks if a != "Random-Targeted")
    want_rt = "Random-Targeted" in tuple(config.eval_attacks)
    unroll = config.get("eval_unroll")
    surface_models = tuple(config.get("surface_models") or runs)

    results: dict = {"config": config.to_dict(), "num_train": int(len(train.labels)),
                     "num_test": int(len(test.labels)), "models": {}, "timings_s": {}}
    reports, gammas, rts, histories, aa_reports = {}, {}, {}, {}, {}
    for i, (name, (method, steps, step_size)) in enumerate(runs.items()):
        tx = training.make_optimizer(
            config.optimizer, learning_rate=config.learning_rate, schedule=config.schedule,
            total_steps=total_steps, decay_boundaries=tuple(config.decay_boundaries),
            momentum=config.momentum, weight_decay=config.weight_decay)
        t0, c0 = time.perf_counter(), time.process_time()
        state, history = training.fit(
            model, _objective(config, method, steps, steps_per_epoch, step_size), train,
            key=jax.random.fold_in(k_train, i), epochs=config.num_epochs,
            batch_size=config.batch_size, tx=tx, eval_ds=None, progress=config.progress,
            log_every=config.get("log_every", 50), workdir=os.path.join(workdir, name))
        t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
        histories[name] = [{k: float(v) for k, v in r.items() if isinstance(v, (int, float))}
                           for r in history["train"]]
        variables = {"params": state.params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        logits_fn = models.make_logits_fn(model, variables)

        suite = _protocols.llr_evaluation_attacks(
            logits_fn, eps=config.eps, steps=config.eval_steps, restarts=config.eval_restarts,
            multi_targeted_steps=config.eval_mt_steps,
            multi_targeted_restarts=config.eval_mt_restarts,
            fgsm_steps=config.eval_fgsm_steps, monitor_steps=config.eval_monitor_steps,
            include=acc_attacks, unroll=unroll)
        t0, c0 = time.perf_counter(), time.process_time()
        mt_later = (config.get("eval_mt_on_survivors", False) and "Multi-Targeted" in suite
                    and "Untargeted" in suite)
        report = evaluation.robustness_report(
            logits_fn, test.images, test.labels,
            {k: v for k, v in suite.items() if not (mt_later and k == "Multi-Targeted")},
            key=k_eval, batch_size=config.eval_batch_size, progress=config.progress, desc=name)
        if mt_later:
            report = _mt_on_survivors(logits_fn, report, suite, test, k_eval, config, name)
        if want_rt:
            rts[name] = _protocols.random_targeted_success_rate(
                logits_fn, k_eval, test.images, test.labels, eps=config.eps,
                steps=config.eval_steps, restarts=config.eval_restarts, unroll=unroll,
                batch_size=config.eval_batch_size, progress=config.progress)
        aa_info = None
        if config.get("eval_autoattack", False):
            n_aa = min(config.get("autoattack_num_test") or len(test.labels), len(test.labels))
            res = evaluation.autoattack(
                logits_fn, jax.random.fold_in(k_eval, 1), test.images[:n_aa],
                test.labels[:n_aa], eps=config.eps, version="standard",
                batch_size=config.eval_batch_size, progress=config.progress)
            pred = np.asarray(logits_fn(jax.numpy.asarray(res.x_adv))).argmax(-1)
            d = (res.x_adv - np.asarray(test.images[:n_aa])).reshape(n_aa, -1)
            # With n_aa < N the AutoAttack column lives in its own report on the first n_aa
            # digits (its cells and interval are over n_aa); the other columns keep all N.
            aa_reports[name] = report.select(slice(0, n_aa)).with_attack(
                "AutoAttack", pred, np.abs(d).max(-1), np.linalg.norm(d, axis=-1))
            if n_aa == len(test.labels):
                report = aa_reports[name]
            aa_info = {"num_test": n_aa, "robust_accuracy": res.robust_accuracy,
                       "after_each_attack": res.per_attack_robust_accuracy,
                       "broken_by": {a: int((res.broken_by == j).sum())
                                     for j, a in enumerate(res.attack_names)}}
        t_eval, c_eval = time.perf_counter() - t0, time.process_time() - c0
        reports[name] = report

        t0, c0 = time.perf_counter(), time.process_time()
        n_g = min(config.num_gamma, len(test.labels))
        gammas[name] = _gamma(logits_fn, k_gamma, test.images[:n_g], test.labels[:n_g], config)
        surface = None
        if name in surface_models:
            j = config.surface_index
            x, y = test.images[j:j + 1], test.labels[j:j + 1]
            x_adv = suite["Untargeted"](k_surf, x, y) if "Untargeted" in suite else x
            t, z = _loss_surface(logits_fn, k_surf, x, y, x_adv, config)
            _plot_surface(t, z, os.path.join(workdir, f"loss_surface_{name}.png"),
                          f"{name}: loss around test image {j}")
            surface = [float(np.min(z)), float(np.max(z))]
        t_diag, c_diag = time.perf_counter() - t0, time.process_time() - c0

        g = gammas[name]
        train_last = histories[name][-1] if histories[name] else {}
        entry = {
            "method": method, "inner_steps": steps, "inner_step_size": step_size or (
                config.trades_step_size if method == "trades" else config.inner_step_size),
            "nominal": report.clean_accuracy,
            "robust_accuracy": dict(report.robust_accuracy),
            "wilson95": {c: [float(b) for b in evaluation.wilson_interval(*_acc(report, c))]
                         for c in ("Nominal", *report.attack_names)},
            "gamma_mean": float(np.mean(g)), "gamma_median": float(np.median(g)),
            "sqrt_gamma_mean": float(np.mean(np.sqrt(np.maximum(g, 0.0)))),
            "sqrt_gamma_median": float(np.median(np.sqrt(np.maximum(g, 0.0)))),
            "sqrt_gamma_quartiles": [float(q) for q in
                                     np.quantile(np.sqrt(np.maximum(g, 0.0)), [0.25, 0.75])],
            "loss_surface_range": surface,
            "train_last": {k: v for k, v in train_last.items() if math.isfinite(v)},
            "train_curve": histories[name],
        }
        if aa_info is not None:
            entry["autoattack"] = aa_info
            if "AutoAttack" not in entry["robust_accuracy"]:  # on the first n_aa digits only
                entry["robust_accuracy"]["AutoAttack"] = aa_reports[name].robust_accuracy[
                    "AutoAttack"]
                entry["wilson95"]["AutoAttack"] = [
                    float(b) for b in evaluation.wilson_interval(
                        *_acc(aa_reports[name], "AutoAttack"))]
        if want_rt:
            rt = rts[name]
            entry["random_targeted_success_rate"] = rt.success_rate
            entry["random_targeted_wilson95"] = list(rt.interval)
        results["models"][name] = entry
        results["timings_s"][name] = {"train": t_train, "eval": t_eval, "diagnostics": t_diag,
                                      "train_cpu": c_train, "eval_cpu": c_eval,
                                      "diagnostics_cpu": c_diag}
        with open(os.path.join(workdir, "results.json"), "w") as f:  # partial, per model
            json.dump(results, f, indent=2, default=float)

    _plot_histograms(gammas, os.path.join(workdir, "gamma_histogram.png"), config.eps)
    _plot_training(histories, os.path.join(workdir, "training_curves.png"))

    names = list(runs)
    fgsm_k, pgd_m = f"FGSM-{config.eval_fgsm_steps}", f"PGD-{config.eval_monitor_steps}"
    rt_col = [_protocols.RANDOM_TARGETED_NAME + " (↓)"] if want_rt else []

    def rt_cell(n):
        return [evaluation.format_accuracy(rts[n].successes, rts[n].n)] if want_rt else []

    main_table = config.get("main_table", True)
    main_cols = tuple(c for c in MAIN_COLUMNS if c in acc_attacks)
    main_rows = [[n, str(runs[n][1]), _cell(reports[n], "Nominal")]
                 + [_cell(reports[n], c) for c in main_cols] + rt_cell(n)
                 for n in (names[:3] if main_table else [])]
    trades_k = tuple(config.get("obfuscation_trades_steps", ()))
    obf_names = [n for n in names
                 if (runs[n][0] in ("adv", "llr") and runs[n][1] in tuple(config.obfuscation_steps)
                     and runs[n][2] is None)
                 or (runs[n][0] == "trades" and runs[n][1] in trades_k)
                 or (runs[n][0] == "adv" and runs[n][2] is not None)]
    # ADV-k, LLR-k, TRADES-k by k; the reference rows last.
    order = {"adv": 0, "llr": 1, "trades": 2}
    obf_names.sort(key=lambda n: (runs[n][2] is not None, order[runs[n][0]], runs[n][1]))
    obf_cols = tuple(c for c in ("FGSM", fgsm_k, pgd_m, "Untargeted", "Multi-Targeted",
                                 "AutoAttack")
                     if c in reports[names[0]].robust_accuracy
                     or (c == "AutoAttack" and names[0] in aa_reports))

    def col_report(n, c):
        return aa_reports[n] if c == "AutoAttack" else reports[n]
    has_gap = "FGSM" in obf_cols and "Multi-Targeted" in obf_cols

    def gap(n):
        r = reports[n].robust_accuracy
        return [f"{100 * (r['FGSM'] - r['Multi-Targeted']):+.1f}"] if has_gap else []

    def sqrt_gamma(n):
        m = results["models"][n]
        return [f"{m['sqrt_gamma_mean']:.3f} / {m['sqrt_gamma_median']:.3f}"]

    obf_rows = [[_row_label(config, n, runs[n]), str(runs[n][1]),
                 _cell(reports[n], "Nominal")]
                + [_cell(col_report(n, c), c) for c in obf_cols] + gap(n) + sqrt_gamma(n)
                for n in obf_names]
    data_name = f"{config.dataset}, {len(test.labels)} test examples, ℓ∞ ε = {config.eps:g}"
    n_aa = {int(aa_reports[n].num_examples) for n in aa_reports}
    aa_scope = (f", on the first {min(n_aa)} test digits only (its interval is over those)"
                if n_aa and min(n_aa) < len(test.labels) else "")
    mt_scope = (" Multi-Targeted is run on the digits that survive Untargeted; a digit broken "
                "by Untargeted counts as broken (the column is the worst case of the two)."
                if config.get("eval_mt_on_survivors", False) else "")
    protocol = (
        f"Accuracies in % with Wilson 95 % intervals; an example counts as robust only if it "
        f"is also correct clean. Untargeted = Adam PGD, {config.eval_steps} steps, step "
        f"schedule 0.1/0.01/0.001 (F.1), {config.eval_restarts} restart(s); Multi-Targeted = "
        f"{config.eval_mt_steps} Adam steps of 0.1 per target (9 targets), "
        f"{config.eval_mt_restarts} restart(s), margin loss; {fgsm_k} = sign steps of ε/10 "
        f"from a random start; FGSM = one sign step of ε; AutoAttack = "
        f"robustjax.evaluation.autoattack, standard version (APGD-CE, APGD-T, FAB-T, Square; "
        f"paper budgets), where run{aa_scope}.{mt_scope} √γ = √γ(ε, x) on the first "
        f"{min(config.num_gamma, len(test.labels))} test digits ({config.gamma_steps} Adam "
        f"steps of {config.gamma_step_size:g}, best of {config.gamma_restarts} restarts), mean "
        f"/ median.")
    if config.get("table_note"):
        protocol += " " + config.table_note
    table = "\n\n".join(([
        _markdown(f"LLR vs baselines ({data_name})",
                  ["Methods", "PGD steps", "Nominal", *main_cols, *rt_col], main_rows)]
        if main_table else []) + [
        _markdown(f"Gradient obfuscation, cf. Table F4 ({data_name})",
                  ["Methods", "PGD steps", "Nominal", *obf_cols]
                  + (["FGSM − MT (pts)"] if has_gap else []) + ["√γ mean / median"],
                  obf_rows),
        protocol,
    ])
    results["tables_markdown"] = table
    results["devices"] = [str(d) for d in jax.devices()]
    results["total_wall_s"] = time.perf_counter() - t_start
    results["total_cpu_s"] = time.process_time() - c_start
    _common.write_outputs(workdir, results, table, timings=json.dumps(
        {k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in results["timings_s"].items()}
        | {"total_wall": round(results["total_wall_s"], 1),
           "total_cpu": round(results["total_cpu_s"], 1)}))
    return results


if __name__ == "__main__":
    _common.run("llr", train_and_evaluate)
