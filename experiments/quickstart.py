"""robustjax quickstart: normal vs PGD adversarial training on real MNIST digits, offline.

Trains a small CNN (``robustjax.models.MnistCNN``) on the MNIST digits embedded in the package,
once normally and once with Madry PGD-7 adversarial training at ε = 0.3, then evaluates clean,
FGSM and PGD-40 accuracy on held-out digits over several ε. Writes to ``--workdir``:

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
import json
import os
import time

from absl import app, flags
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))

FLAGS = flags.FLAGS


def _define_flags():
    """Define the command-line flags (only when run as a script, so that several experiment
    modules can be imported into one process, e.g. by the test suite)."""
    flags.DEFINE_string("workdir", "/tmp/robustjax_quickstart", "Directory for outputs.")
    config_flags.DEFINE_config_file(
        "config", os.path.join(_HERE, "configs", "quickstart.py"), "Configuration file.",
        lock_config=True)


def _bound(attack, logits_fn, **kw):
    """Bind an attack to a model: ``(key, x, y) -> x_adv``."""
    def run(key, x, y):
        return attack(logits_fn, key, x, y, **kw)
    return run


def train_and_evaluate(config, workdir: str) -> dict:
    """Run the quickstart; returns the results dictionary also written to ``results.json``."""
    import jax
    import numpy as np

    from robustjax import attacks, data, evaluation, models, training

    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    k_std, k_adv, k_eval = jax.random.split(key, 3)
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, config.num_test))
    model = models.MnistCNN(features=tuple(config.features), hidden=config.hidden)

    common = dict(batch_size=config.batch_size, optimizer="adam",
                  learning_rate=config.learning_rate, progress=config.progress,
                  eval_ds=test)
    timings = {}
    t0 = time.perf_counter()
    std_state, _ = training.fit(
        model, training.standard_objective(), train, key=k_std,
        num_epochs=config.standard_epochs, workdir=os.path.join(workdir, "standard"), **common)
    timings["standard_training_s"] = time.perf_counter() - t0

    train_attack = functools.partial(
        attacks.pgd, eps=config.train_eps, steps=config.train_steps,
        step_size=config.train_step_size, random_start=True)
    # Pure PGD training (mix = 1) at eps = 0.3 with Adam 1e-3 collapsed to the uniform
    # prediction (loss log 10) within 100 steps here, from scratch and from the normally trained
    # weights alike, for this CNN and for the Madry CNN. Mixing clean and adversarial examples
    # (mix = 0.5, Goodfellow et al.) and starting from the normally trained weights (fresh
    # optimizer state) keeps it learning; both are config options.
    adv_init = model
    if config.adversarial_warm_start:
        adv_init = training.TrainState.create(
            apply_fn=model.apply, params=std_state.params, batch_stats=std_state.batch_stats,
            tx=training.make_optimizer("adam", learning_rate=config.learning_rate))
    t0 = time.perf_counter()
    adv_state, _ = training.fit(
        adv_init, training.adversarial_objective(train_attack, mix=config.train_mix), train, key=k_adv,
        num_epochs=config.adversarial_epochs, workdir=os.path.join(workdir, "adversarial"),
        **common)
    timings["adversarial_training_s"] = time.perf_counter() - t0

    def logits_fn_of(state):
        variables = {"params": state.params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        return models.make_logits_fn(model, variables)

    rows, curves = {}, {}
    t0 = time.perf_counter()
    for name, state in (("standard", std_state), ("adversarial", adv_state)):
        logits_fn = logits_fn_of(state)
        suite = {}
        for eps in config.eval_eps:
            suite[f"FGSM ε={eps:g}"] = _bound(attacks.fgsm, logits_fn, eps=eps)
            suite[f"PGD-{config.eval_pgd_steps} ε={eps:g}"] = _bound(
                attacks.pgd, logits_fn, eps=eps, steps=config.eval_pgd_steps,
                step_size=2.5 * eps / config.eval_pgd_steps, random_start=True)
        report = evaluation.robustness_report(
            logits_fn, test.images, test.labels, suite, key=k_eval,
            batch_size=config.eval_batch_size, progress=config.progress, desc=name)
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
    timings["evaluation_s"] = time.perf_counter() - t0

    table = evaluation.format_table(rows, corner="Training")
    evaluation.plot_accuracy_vs_eps(curves, os.path.join(workdir, "accuracy_vs_eps.png"),
                                    title="Held-out MNIST digits")
    results = {
        "config": config.to_dict(),
        "num_train": int(len(train.labels)),
        "num_test": int(len(test.labels)),
        "clean_accuracy": {k: r.clean_accuracy for k, r in rows.items()},
        "robust_accuracy": {k: dict(r.robust_accuracy) for k, r in rows.items()},
        "timings_s": timings,
        "devices": [str(d) for d in jax.devices()],
    }
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=float)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print("timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    print(f"outputs written to {workdir}")
    return results


def main(argv):
    del argv
    from absl import logging

    from robustjax import training

    logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out of the output

    training.initialize_from_args(FLAGS)
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    from robustjax import training as _training

    _define_flags()
    _training.define_distributed_flags()
    app.run(main)
