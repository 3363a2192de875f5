"""robustjax quickstart: normal vs PGD adversarial training on real MNIST digits, offline.

Trains a small CNN (``robustjax.models.MnistCNN``) on the MNIST digits embedded in the package,
once normally and once with Madry PGD-7 adversarial training at ε = 0.3 (ε ramped up from 0),
then evaluates clean, FGSM and PGD-40 accuracy on held-out digits over several ε, and AutoAttack
(standard: APGD-CE, APGD-T, FAB-T, Square) at ε = 0.3 on the first ``autoattack_num_test``
digits (a second table beside PGD-40 on the same digits). Writes to ``--workdir``:

* ``results.json`` and ``table.md`` — the accuracy table (also printed);
* ``accuracy_vs_eps.png`` — robust accuracy against ε for both models and both attacks;
* ``examples_standard.png`` / ``examples_adversarial.png`` — clean and PGD images with predictions;
* ``standard/`` and ``adversarial/`` — metrics (JSON lines) and orbax checkpoints (a rerun
  resumes from them).

Usage::

    python experiments/quickstart.py --workdir /tmp/robustjax_quickstart
    python experiments/quickstart.py --workdir /tmp/qs --config experiments/configs/quickstart.py:smoke

Multi-host: add ``--coordinator_address host:port --num_processes P --process_id i``.
"""

from __future__ import annotations

import functools
import os
import time

import _common


def train_and_evaluate(config, workdir: str) -> dict:
    """Run the quickstart; returns the results dictionary also written to ``results.json``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from robustjax import attacks, data, evaluation, models, objectives, training

    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    k_std, k_adv, k_eval = jax.random.split(key, 3)
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, config.num_test))
    model = models.MnistCNN(features=tuple(config.features), kernel_size=config.kernel_size,
                            hidden=config.hidden)

    common = dict(batch_size=config.batch_size, optimizer="adam",
                  learning_rate=config.learning_rate, progress=config.progress,
                  eval_ds=test)
    timings = {}
    t0 = time.perf_counter()
    std_state, _ = training.fit(
        model, training.standard_objective(), train, key=k_std,
        epochs=config.standard_epochs, workdir=os.path.join(workdir, "standard"), **common)
    timings["standard_training_s"] = time.perf_counter() - t0

    # Madry PGD training with an eps ramp-up (the attack gets eps from the schedule at each
    # step; its step size 2.5·eps/steps follows).
    train_attack = functools.partial(attacks.pgd, steps=config.train_steps, random_start=True)
    eps_schedule = optax.linear_schedule(0.0, config.train_eps, config.train_eps_rampup_steps)
    objective = objectives.adversarial_objective(
        train_attack, mix=config.train_mix, eps_schedule=eps_schedule)
    adv_common = dict(common, batch_size=config.adversarial_batch_size,
                      learning_rate=config.adversarial_learning_rate,
                      schedule=config.adversarial_schedule)
    t0 = time.perf_counter()
    adv_state, _ = training.fit(
        model, objective, train, key=k_adv, epochs=config.adversarial_epochs,
        workdir=os.path.join(workdir, "adversarial"), **adv_common)
    timings["adversarial_training_s"] = time.perf_counter() - t0

    def apply(params, x):
        return model.apply({"params": params}, x)

    # One compiled program per attack for both models and every eps: parameters and eps are
    # arguments (not constants baked into a closure), so nothing recompiles.
    @jax.jit
    def fgsm_eval(params, key, x, y, eps):
        return attacks.fgsm(functools.partial(apply, params), key, x, y, eps=eps)

    @jax.jit
    def pgd_eval(params, key, x, y, eps):   # step size 2.5·eps/steps, random start
        return attacks.pgd(functools.partial(apply, params), key, x, y, eps=eps,
                           steps=config.eval_pgd_steps, random_start=True)

    rows, curves, autoattack_results, aa_rows = {}, {}, {}, {}
    t0 = time.perf_counter()
    for name, state in (("standard", std_state), ("adversarial", adv_state)):
        logits_fn = jax.jit(functools.partial(apply, state.params))
        suite = {}
        for eps in config.eval_eps:
            e = jnp.float32(eps)
            suite[f"FGSM ε={eps:g}"] = functools.partial(fgsm_eval, state.params, eps=e)
            suite[f"PGD-{config.eval_pgd_steps} ε={eps:g}"] = functools.partial(
                pgd_eval, state.params, eps=e)
        report = evaluation.robustness_report(
            logits_fn, test.images, test.labels, suite, key=k_eval,
            batch_size=config.eval_batch_size, progress=config.progress, desc=name, jit=False)
        rows[name] = report
        for attack_name in ("FGSM", f"PGD-{config.eval_pgd_steps}"):
            accs = [report.clean_accuracy] + [
                report.robust_accuracy[f"{attack_name} ε={eps:g}"] for eps in config.eval_eps]
            curves[f"{name} / {attack_name}"] = ([0.0] + list(config.eval_eps), accs)
        # Clean vs adversarial examples at the largest eps.
        eps = max(config.eval_eps)
        x, y = test.images[:8], test.labels[:8]
        x_adv = suite[f"PGD-{config.eval_pgd_steps} ε={eps:g}"](k_eval, x, y)
        evaluation.plot_examples(
            x, np.asarray(x_adv), y, np.asarray(logits_fn(x)).argmax(-1),
            np.asarray(logits_fn(x_adv)).argmax(-1),
            os.path.join(workdir, f"examples_{name}.png"),
            title=f"{name} model: clean (top) vs PGD ε={eps:g}")
        # AutoAttack (standard version) at the configured eps on the first
        # `autoattack_num_test` digits (its full cost on all digits does not fit the
        # quickstart's budget); a second table puts it beside PGD-40 on the same digits.
        aa = {}
        m = min(config.autoattack_num_test, len(test.labels))
        sub = report.select(slice(0, m))
        aa_cols = []
        for eps in config.eval_autoattack_eps:
            t1 = time.perf_counter()
            xs, ys = np.asarray(test.images[:m]), np.asarray(test.labels[:m])
            res = evaluation.autoattack(
                logits_fn, jax.random.fold_in(k_eval, 1), xs, ys, eps=eps,
                version=config.autoattack_version, batch_size=config.eval_batch_size * 2,
                progress=config.progress, steps=config.autoattack_steps,
                n_queries=config.autoattack_n_queries)
            col = f"AutoAttack ε={eps:g}" + config.autoattack_label
            pred = np.asarray(logits_fn(jnp.asarray(res.x_adv))).argmax(-1)
            d = (res.x_adv - xs).reshape(m, -1)
            sub = sub.with_attack(col, pred, np.abs(d).max(-1), np.linalg.norm(d, axis=-1))
            aa_cols += [f"PGD-{config.eval_pgd_steps} ε={eps:g}", col]
            aa[col] = {"robust_accuracy": res.robust_accuracy,
                       "after_each_attack": res.per_attack_robust_accuracy,
                       "broken_by": {n: int((res.broken_by == i).sum())
                                     for i, n in enumerate(res.attack_names)},
                       "seconds": time.perf_counter() - t1}
        rows[name] = report
        aa_rows[name] = sub
        autoattack_results[name] = aa
    timings["evaluation_s"] = time.perf_counter() - t0

    table = evaluation.format_table(rows, corner="Training")
    if aa_rows:
        m = min(config.autoattack_num_test, len(test.labels))
        table += (f"\n\nAutoAttack ({config.autoattack_version}) on the first {m} test digits, "
                  f"beside PGD-{config.eval_pgd_steps} on the same digits:\n\n"
                  + evaluation.format_table(aa_rows, columns=aa_cols, corner="Training",
                                            notes=False))
    evaluation.plot_accuracy_vs_eps(curves, os.path.join(workdir, "accuracy_vs_eps.png"),
                                    title="Held-out MNIST digits")
    results = {
        "config": config.to_dict(),
        "num_train": int(len(train.labels)),
        "num_test": int(len(test.labels)),
        "clean_accuracy": {k: r.clean_accuracy for k, r in rows.items()},
        "robust_accuracy": {k: dict(r.robust_accuracy) for k, r in rows.items()},
        "min_accuracy": {k: r.min_accuracy() for k, r in rows.items()},
        "worst_case_accuracy": {k: r.worst_case_accuracy() for k, r in rows.items()},
        "autoattack": autoattack_results,
        "autoattack_table": {k: {"num_test": r.num_examples, "clean_accuracy": r.clean_accuracy,
                                 "robust_accuracy": dict(r.robust_accuracy)}
                             for k, r in aa_rows.items()},
        "notes": {k: list(r.notes) for k, r in rows.items()},
        "timings_s": timings,
        "devices": [str(d) for d in jax.devices()],
    }
    _common.write_outputs(workdir, results, table, timings=timings)
    return results


if __name__ == "__main__":
    _common.run("quickstart", train_and_evaluate)
