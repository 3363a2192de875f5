"""Breaking DefenseGAN: the implicit / backtracking attack vs BPDA and NES, on embedded MNIST.

Reproduces the accuracy–distortion comparison of Chen, Xie, Zhu ("On Breaking Deep Generative
Model-based Defenses and Beyond", ICML 2020; supplementary §D–E) at CPU scale:

1. trains a generator ``G`` (decoder of a small MLP VAE) and a classifier ``F`` (MLP) on the MNIST
   digits embedded in the package;
2. builds DefenseGAN ``F(G(z*(x)))``, ``z* = argmin_z ‖G(z) - x‖²`` (momentum GD, R restarts), with
   fixed random starts so every attack faces the same deterministic defense;
3. attacks it with ``robustjax.attacks._generative``: the CW-style objective
   ``‖δ‖² + λ f(x+δ)`` with sign steps ``η_t = 0.04 t/T`` and a 5-step binary search over λ, the
   gradient going through ``z*`` by the implicit function theorem (``implicit``), Lemma 1
   (``neumann``) or backtracking ``Q(x')`` (``backtrack``); BPDA (Eqn 21); NES (Eqn 20); and CW ℓ2
   on the undefended classifier for reference.

Writes to ``--workdir``: ``results.json`` (config, per-attack success rate, median ℓ2, accuracy
at the budgets, the curves, timings), ``table.md`` (also printed), ``accuracy_vs_l2.png`` and
``reconstructions.png``.

Usage::

    python experiments/defensegan.py --workdir /tmp/defensegan
    python experiments/defensegan.py --workdir /tmp/dg \
        --config experiments/configs/defensegan.py:smoke
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
    """Define the command-line flags (only when run as a script, so that importing this module
    next to other experiments in one process does not redefine ``--workdir``/``--config``)."""
    flags.DEFINE_string("workdir", "/tmp/robustjax_defensegan", "Directory for outputs.")
    config_flags.DEFINE_config_file(
        "config", os.path.join(_HERE, "configs", "defensegan.py"), "Configuration file.",
        lock_config=True)


def _train_vae(config, images, key):
    """A small MLP VAE (BCE + KL, Adam); returns ``generator_fn(z [M, d]) -> [M, 28, 28, 1]``."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    d, h = config.latent_dim, config.vae_hidden

    class VAE(nn.Module):
        def setup(self):
            self.enc, self.mu, self.logvar = nn.Dense(h), nn.Dense(d), nn.Dense(d)
            self.dec, self.out = nn.Dense(h), nn.Dense(784)

        def __call__(self, x, eps):
            e = nn.relu(self.enc(x.reshape(x.shape[0], -1)))
            mu, logvar = self.mu(e), self.logvar(e)
            z = mu + jnp.exp(0.5 * logvar) * eps
            return self.decode(z), mu, logvar

        def decode(self, z):
            return self.out(nn.relu(self.dec(z)))  # logits of the pixel intensities

    vae = VAE()
    k_init, k_data = jax.random.split(key)
    params = vae.init(k_init, jnp.zeros((1, 28, 28, 1)), jnp.zeros((1, d)))["params"]
    tx = optax.adam(config.vae_learning_rate)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, key):
        def loss_fn(p):
            eps = jax.random.normal(key, (x.shape[0], d))
            logits, mu, logvar = vae.apply({"params": p}, x, eps)
            target = x.reshape(x.shape[0], -1)
            bce = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, target), -1)
            kl = 0.5 * jnp.sum(mu**2 + jnp.exp(logvar) - 1.0 - logvar, -1)
            return jnp.mean(bce + kl)
        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    n, bs = images.shape[0], config.vae_batch_size
    loss = float("nan")
    for epoch in range(config.vae_epochs):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(k_data, epoch), n))
        for i in range(n // bs):
            kb = jax.random.fold_in(jax.random.fold_in(k_data, epoch), i + 1)
            batch = images[perm[i * bs:(i + 1) * bs]]
            params, opt_state, loss = step(params, opt_state, batch, kb)

    def generator_fn(z):
        logits = vae.apply({"params": params}, z, method=VAE.decode)
        return jax.nn.sigmoid(logits).reshape(z.shape[0], 28, 28, 1)

    return generator_fn, float(loss)


def train_and_evaluate(config, workdir: str) -> dict:
    """Run the experiment; returns the results dictionary also written to ``results.json``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from robustjax import data, defenses, evaluation, models, training
    from robustjax.attacks import _generative as gattacks

    if config.generator != "mlp_vae":
        raise NotImplementedError(
            f"generator {config.generator!r}: only 'mlp_vae' is implemented in this script "
            "(the DCGAN/WGAN-GP path of the full config is future work).")
    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    k_vae, k_clf, k_def, k_att = jax.random.split(key, 4)
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.load_dataset(config.dataset, "test")
    timings = {}

    t0 = time.perf_counter()
    generator_fn, vae_loss = _train_vae(config, np.asarray(train.images), k_vae)
    timings["generator_training_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    clf_model = models.MLP(hidden=config.clf_hidden, num_classes=10)
    state, _ = training.fit(
        clf_model, training.standard_objective(), train, key=k_clf, num_epochs=config.clf_epochs,
        batch_size=config.clf_batch_size, optimizer="adam", learning_rate=config.clf_learning_rate,
        progress=config.progress, workdir=os.path.join(workdir, "classifier"))
    classifier_fn = models.make_logits_fn(clf_model, {"params": state.params})
    timings["classifier_training_s"] = time.perf_counter() - t0

    dkw = dict(config.defense.to_dict(), latent_dim=config.latent_dim)
    defense = defenses.make_defensegan_logits_fn(classifier_fn, generator_fn, k_def, mode="bpda",
                                                 **dkw)
    x = jnp.asarray(test.images[:config.num_attack])
    y = jnp.asarray(test.labels[:config.num_attack])
    x_rec = jax.jit(functools.partial(
        defenses.defensegan_reconstruct, generator_fn, k_def,
        **{k: v for k, v in dkw.items()}))(x)
    rec_mse = float(jnp.mean((x_rec - x) ** 2))
    print(f"generator {timings['generator_training_s']:.1f} s, classifier "
          f"{timings['classifier_training_s']:.1f} s, reconstruction MSE {rec_mse:.4f}",
          flush=True)
    clean_undef = np.asarray(jnp.argmax(classifier_fn(x), -1) == y)
    clean_def = np.asarray(jnp.argmax(jax.jit(defense)(x), -1) == y)

    common = dict(steps=config.attack_steps, max_step=config.max_step, schedule=config.schedule,
                  binary_search_steps=config.binary_search_steps,
                  initial_const=config.initial_const)
    results_attacks, curves, timings["attacks_s"] = {}, {}, {}
    budgets = tuple(config.budgets)
    runs = [(m, defense) for m in config.methods]
    if config.undefended_cw:
        runs.append(("cw (undefended F)", classifier_fn))
    for name, target in runs:
        if name.startswith("cw"):
            attack = functools.partial(gattacks.advt_cw_l2, classifier_fn, steps=config.cw_steps,
                                       binary_search_steps=config.binary_search_steps)
        else:
            akw = dict(common)
            if name == "nes":
                akw.update(num_samples=config.nes_samples, sigma=config.nes_sigma,
                           steps=config.nes_steps,
                           binary_search_steps=config.nes_binary_search_steps)
            attack = gattacks.make_defensegan_attack(classifier_fn, generator_fn, k_def,
                                                     method=name, defense_kwargs=dkw,
                                                     attack_kwargs=akw)
        t0 = time.perf_counter()
        x_adv = jax.block_until_ready(jax.jit(attack)(k_att, x, y))
        timings["attacks_s"][name] = time.perf_counter() - t0
        print(f"attack {name}: {timings['attacks_s'][name]:.1f} s", flush=True)
        clean = clean_undef if name.startswith("cw") else clean_def
        adv_correct = np.asarray(jnp.argmax(jax.jit(target)(x_adv), -1) == y)
        l2 = np.linalg.norm(np.asarray(x_adv - x).reshape(x.shape[0], -1), axis=1)
        fooled = clean & ~adv_correct
        curve = evaluation.accuracy_at_distortion(clean, adv_correct, l2)
        curves[name] = curve
        at = evaluation.accuracy_at_distortion(clean, adv_correct, l2, thresholds=budgets)
        results_attacks[name] = {
            "clean_accuracy": float(clean.mean()),
            "success_rate": float(fooled.sum() / max(clean.sum(), 1)),
            "median_l2_successful": float(np.median(l2[fooled])) if fooled.any() else None,
            "mean_l2_successful": float(np.mean(l2[fooled])) if fooled.any() else None,
            "accuracy_at_budget": {f"{b:g}": float(a) for b, a in zip(budgets, at.accuracy)},
            "curve": {"l2": [float(v) for v in curve.x],
                      "accuracy": [float(v) for v in curve.accuracy]},
        }

    evaluation.plot_accuracy_vs_distortion(
        {k: (c.x, c.accuracy) for k, c in curves.items()},
        os.path.join(workdir, "accuracy_vs_l2.png"),
        title=f"DefenseGAN on MNIST ({config.num_attack} test digits)")
    k_show = min(8, config.num_attack)
    evaluation.plot_examples(
        np.asarray(x[:k_show]), np.asarray(x_rec[:k_show]), np.asarray(y[:k_show]),
        np.asarray(jnp.argmax(classifier_fn(x[:k_show]), -1)),
        np.asarray(jnp.argmax(classifier_fn(x_rec[:k_show]), -1)),
        os.path.join(workdir, "reconstructions.png"),
        title="test digits (top) and DefenseGAN reconstructions G(z*) (bottom)")

    header = ("| attack | clean acc | success | median ℓ2 | "
              + " | ".join(f"acc@ℓ2≤{b:g}" for b in budgets) + " | time (s) |")
    lines = [header, "|" + "---|" * (5 + len(budgets))]
    for name, r in results_attacks.items():
        med = r["median_l2_successful"]
        lines.append(
            f"| {name} | {r['clean_accuracy']:.2f} | {r['success_rate']:.2f} | "
            + (f"{med:.3f}" if med is not None else "—") + " | "
            + " | ".join(f"{v:.2f}" for v in r["accuracy_at_budget"].values())
            + f" | {timings['attacks_s'][name]:.1f} |")
    table = "\n".join(lines)
    results = {
        "config": config.to_dict(),
        "vae_final_loss": vae_loss,
        "reconstruction_mse": rec_mse,
        "clean_accuracy_undefended": float(clean_undef.mean()),
        "clean_accuracy_defensegan": float(clean_def.mean()),
        "attacks": results_attacks,
        "timings_s": timings,
        "devices": [str(d) for d in jax.devices()],
    }
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=float)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(table + "\n")
    print(f"reconstruction MSE {rec_mse:.4f}; clean accuracy: F {clean_undef.mean():.2f}, "
          f"DefenseGAN {clean_def.mean():.2f}")
    print(table)
    print(f"outputs written to {workdir}")
    return results


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
