"""Breaking generative defenses: DefenseGAN, ABS and adversarial training under the paper's attack.

Reproduces at CPU scale the comparisons of Chen, Xie, Zhu ("On Breaking Deep Generative
Model-based Defenses and Beyond", ICML 2020; supplementary §D–E, Figure 1) on the MNIST digits
embedded in the package:

1. **DefenseGAN** ``F(G(z*(x)))``, ``z* = argmin_z ‖G(z) - x‖²`` (momentum GD, R restarts, fixed
   random starts so every attack faces the same deterministic defense). ``G`` is the decoder of a
   small MLP VAE (``generator="mlp_vae"``, CPU configs) or the WGAN-GP DCGAN generator of Table 2
   at 32×32 (``generator="dcgan"``, full config; MNIST zero-padded to 32×32 for training, ``G``'s
   output cropped back to 28×28). ``F`` is an MLP.
2. **ABS**: one VAE per class, latent ``d = 8`` (``robustjax.models.ClassConditionalVAE``, the
   Table 1/2 architecture at 32×32, in the full config; one-hidden-layer MLP VAEs per class on
   CPU), classified by per-class latent inference (``robustjax.defenses.abs_logits``).
3. **ADVT**: an MLP adversarially trained with PGD (Madry et al.; ℓ∞ ε = 0.1, 7 steps on CPU —
   ε = 0.3 collapses this MLP to chance in a few epochs; ε = 0.3, 40 steps in the full config).

Attacks (``robustjax.attacks._generative``), all minimum-distortion ℓ2 with the appendix-D sign
steps ``η_t = 0.04 t/T`` and a binary search over λ:

* the paper's attack: the CW objective with the gradient through ``z*`` — ``implicit`` (implicit
  function theorem, CG), ``backtrack`` (Lemma 2) — against DefenseGAN and ABS; against ADVT it is
  CW itself (§E: "our attack degenerates to the original CW attack");
* BPDA: Eqn 21 for DefenseGAN; ABS's "latent space attack" (Eqn 22, the BPDA variant the paper uses
  for ABS); for ADVT BPDA is the same as CW (no projection to skip), not run twice;
* NES (Eqn 20): n = 50 samples, σ = 0.5 for DefenseGAN, 0.1 for ABS (paper), 0.1 for ADVT
  (choice); on CPU with fewer steps and constants than the gradient attacks (``nes_steps``).

Also a **gradient-mode table** for DefenseGAN (the first ``table_examples`` test digits): the
attack gradient ``∇_x Σ f(F(G(z*)))`` with the gradient through ``z*`` taken by implicit
differentiation (the config's CG), Neumann with ``T'`` terms, backtracking with ``T'`` steps,
unrolling all ``L`` steps and BPDA; cosine similarity to the exact implicit gradient (CG run to
convergence) and the cost of one compiled gradient call.

Writes to ``--workdir``: ``results.json`` (config, per-defense/per-attack success rate, median ℓ2,
accuracy at the budgets, the full curves, gradient-mode table, timings), ``table.md`` (also
printed), ``accuracy_vs_l2.png`` (all curves, as supplementary Figure 1) and
``reconstructions.png``.

Usage::

    python experiments/generative.py --workdir /tmp/generative
    python experiments/generative.py --workdir /tmp/gen \
        --config experiments/configs/generative.py:smoke
"""

from __future__ import annotations

import functools
import os
import time

import _common


# ----------------------------------------------------------------------------------------------
# Generative models and classifiers
# ----------------------------------------------------------------------------------------------


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

    return generator_fn, {"vae_final_loss": float(loss)}


def _train_dcgan(config, images, key):
    """WGAN-GP DCGAN (Tables 1–2) on MNIST padded to 32×32; ``generator_fn`` crops to 28×28."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from robustjax.models._generative import DCGANCritic, DCGANGenerator, crop_to_28, pad_to_32
    from robustjax.training._generative import make_wgan_gp

    g = config.dcgan
    gen = DCGANGenerator(channels=1, widths=tuple(g.generator_widths))
    critic = DCGANCritic(widths=tuple(g.critic_widths))
    tx = optax.adam(g.learning_rate, b1=0.5, b2=0.9)
    init, step = make_wgan_gp(gen, critic, latent_dim=config.latent_dim, g_tx=tx, d_tx=tx,
                              n_critic=g.n_critic, gp_weight=g.gp_weight)
    k_init, k_data, k_step = jax.random.split(key, 3)
    state = init(k_init, (32, 32, 1))
    step = jax.jit(step)
    padded = np.asarray(pad_to_32(jnp.asarray(images)))
    n, bs = padded.shape[0], g.batch_size
    metrics = {}
    for i in range(g.steps):
        idx = np.asarray(jax.random.randint(jax.random.fold_in(k_data, i), (bs,), 0, n))
        state, metrics = step(state, {"image": padded[idx]}, jax.random.fold_in(k_step, i))
    variables = {"params": state.g_params, "batch_stats": state.g_batch_stats}

    def generator_fn(z):
        return crop_to_28(gen.apply(variables, z, train=False))

    return generator_fn, {k: float(v) for k, v in metrics.items()}


def _fit(model, objective, ds, key, *, epochs: int, batch_size: int, learning_rate: float):
    """Adam on ``objective`` (robustjax.training contract) with one compiled step, no I/O."""
    import jax
    import numpy as np
    import optax

    from robustjax import training

    k_init, k_data = jax.random.split(key)
    state = training.create_train_state(model, k_init, (1,) + ds.images.shape[1:],
                                        optax.adam(learning_rate))
    step = jax.jit(training.make_train_step(objective))
    n = ds.images.shape[0]
    for epoch in range(epochs):
        k_epoch = jax.random.fold_in(k_data, epoch)
        perm = np.asarray(jax.random.permutation(k_epoch, n))
        for i in range(n // batch_size):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            batch = {"image": ds.images[idx], "label": ds.labels[idx], "index": idx}
            state, _ = step(state, batch, k_epoch)
    return state


def _train_classifier(config, train, key, *, adversarial: bool):
    """MLP classifier, standard or PGD-adversarially trained (ADVT); returns ``logits_fn``."""
    from robustjax import attacks, models, training

    model = models.MLP(hidden=config.clf_hidden, num_classes=10)
    if adversarial:
        a = config.advt
        attack = functools.partial(attacks.pgd, eps=a.eps, norm=a.norm, steps=a.steps,
                                   step_size=a.step_size)
        objective = training.adversarial_objective(attack)
        epochs = a.epochs
    else:
        objective = training.standard_objective()
        epochs = config.clf_epochs
    state = _fit(model, objective, train, key, epochs=epochs, batch_size=config.clf_batch_size,
                 learning_rate=config.clf_learning_rate)
    return models.make_logits_fn(model, {"params": state.params})


def _mlp_class_conditional_vae(num_classes: int, latent_dim: int, hidden: int):
    """Class-conditional MLP VAEs with :class:`ClassConditionalVAE`'s interface, at 28×28.

    One ``784 → hidden → 2d`` encoder and ``d → hidden → 784`` (sigmoid) decoder per class, weights
    stacked on a leading class axis and applied with ``einsum`` (batched matrix products). For CPU
    runs: the vmapped convolutions of the Table 1/2 ``ClassConditionalVAE`` become grouped
    convolutions, which XLA:CPU runs (and compiles) slowly.
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    k, d = num_classes, latent_dim

    class MLPClassConditionalVAE(nn.Module):
        def setup(self):
            def init(key, shape):  # LeCun normal per class (fan-in = shape[-2])
                return jax.random.normal(key, shape) * shape[-2] ** -0.5

            zeros = nn.initializers.zeros
            shapes = {"enc": (784, hidden), "enc_out": (hidden, 2 * d), "dec": (d, hidden),
                      "dec_out": (hidden, 784)}
            self.w = {n: self.param(f"{n}_w", init, (k,) + sh) for n, sh in shapes.items()}
            self.b = {n: self.param(f"{n}_b", zeros, (k, 1, sh[1])) for n, sh in shapes.items()}

        def _dense(self, name, h):  # h [K, M, in] -> [K, M, out]
            return jnp.einsum("kmi,kio->kmo", h, self.w[name]) + self.b[name]

        def _encode(self, xk):  # xk [K, N, 784]
            h = self._dense("enc_out", nn.relu(self._dense("enc", xk)))
            return h[..., :d], h[..., d:]

        def encode(self, x):
            flat = x.reshape(1, x.shape[0], -1)
            return self._encode(jnp.broadcast_to(flat, (k,) + flat.shape[1:]))

        def decode(self, z):  # z [K, M, d] -> [K, M, 28, 28, 1]
            h = jax.nn.sigmoid(self._dense("dec_out", nn.relu(self._dense("dec", z))))
            return h.reshape(z.shape[:2] + (28, 28, 1))

        def __call__(self, x, eps=None, train: bool = False):
            del train
            mu, logvar = self.encode(x)
            if eps is None:
                eps = jnp.zeros_like(mu)
            return self.decode(mu + jnp.exp(0.5 * logvar) * eps), mu, logvar

    return MLPClassConditionalVAE()


def _train_abs(config, train, key):
    """ABS's class-conditional VAEs; returns ``decoder_fn(z [K, M, d]) -> [K, M, 28, 28, 1]``.

    ``abs.arch = "dcgan"``: ``robustjax.models.ClassConditionalVAE`` (Tables 1–2) at 32×32 on
    zero-padded MNIST, decoder output cropped to 28×28; ``"mlp"``: the MLP variant above.
    """
    import jax.numpy as jnp
    import numpy as np

    from robustjax import data
    from robustjax.models._generative import ClassConditionalVAE, crop_to_28, pad_to_32
    from robustjax.training._generative import class_conditional_vae_objective

    a = config.abs
    if a.arch == "dcgan":
        model = ClassConditionalVAE(num_classes=10, latent_dim=a.latent_dim, channels=1,
                                    encoder_widths=tuple(a.encoder_widths),
                                    decoder_widths=tuple(a.decoder_widths))
        ds = data.Dataset(np.asarray(pad_to_32(jnp.asarray(train.images))), train.labels)
        post = crop_to_28
    else:
        model = _mlp_class_conditional_vae(10, a.latent_dim, a.hidden)
        ds = train
        post = lambda img: img  # noqa: E731
    state = _fit(model, class_conditional_vae_objective(beta=a.train_beta), ds, key,
                 epochs=a.epochs, batch_size=a.batch_size, learning_rate=a.learning_rate)
    variables = {"params": state.params}

    def decoder_fn(z):
        return post(model.apply(variables, z, method="decode"))

    return decoder_fn


# ----------------------------------------------------------------------------------------------
# Evaluation helpers
# ----------------------------------------------------------------------------------------------


def _evaluate_attack(attack, target_fn, key, x, y, clean, budgets):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from robustjax import evaluation

    t0 = time.perf_counter()
    x_adv = jax.block_until_ready(jax.jit(attack)(key, x, y))
    seconds = time.perf_counter() - t0
    adv_correct = np.asarray(jnp.argmax(jax.jit(target_fn)(x_adv), -1) == y)
    l2 = np.linalg.norm(np.asarray(x_adv - x).reshape(x.shape[0], -1), axis=1)
    fooled = clean & ~adv_correct
    curve = evaluation.accuracy_at_distortion(clean, adv_correct, l2)
    at = evaluation.accuracy_at_distortion(clean, adv_correct, l2, thresholds=budgets)
    record = {
        "clean_accuracy": float(clean.mean()),
        "success_rate": float(fooled.sum() / max(clean.sum(), 1)),
        "robust_accuracy_unbounded": float((clean & adv_correct).mean()),
        "median_l2_successful": float(np.median(l2[fooled])) if fooled.any() else None,
        "mean_l2_successful": float(np.mean(l2[fooled])) if fooled.any() else None,
        "accuracy_at_budget": {f"{b:g}": float(v) for b, v in zip(budgets, at.accuracy)},
        "curve": {"l2": [float(v) for v in curve.x],
                  "accuracy": [float(v) for v in curve.accuracy]},
        "seconds": seconds,
    }
    return record, curve


def _gradient_mode_table(config, classifier_fn, generator_fn, key, x, y):
    """Cosine of each gradient mode to the exact implicit gradient, and its cost (DefenseGAN)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from robustjax import defenses, losses

    base = dict(config.defense.to_dict(), latent_dim=config.latent_dim)
    base.pop("backward_lr", None)
    # Convergence diagnostics of z* and the backward step eta' (auto: 1 / lambda_max).
    _, z_star, _ = jax.jit(functools.partial(
        defenses.defensegan_reconstruct, generator_fn, return_latent=True,
        **dict(base, mode="bpda")))(key, x)

    def single_loss(z, xi):
        return jnp.mean((generator_fn(z[None])[0] - xi) ** 2)

    grad_norm = jax.vmap(lambda z, xi: jnp.linalg.norm(jax.grad(single_loss)(z, xi)))(z_star, x)
    eig = jnp.linalg.eigvalsh(jax.vmap(jax.hessian(single_loss))(z_star, x))
    lam_max = float(jnp.max(eig))
    eta = config.defense.backward_lr if config.defense.backward_lr else 1.0 / lam_max

    def objective(kw, x):
        xr = defenses.defensegan_reconstruct(generator_fn, key, x, **kw)
        return jnp.sum(losses.cw_loss(classifier_fn(xr), y))

    rows = [("implicit (exact, CG to tol)", dict(base, mode="implicit", cg_maxiter=None)),
            (f"implicit (CG ≤ {base['cg_maxiter']})", dict(base, mode="implicit"))]
    for t in config.table_backward_steps:
        rows.append((f"neumann T'={t}", dict(base, mode="neumann", backward_steps=t,
                                               backward_lr=eta)))
    for t in config.table_backward_steps:
        rows.append((f"backtrack T'={t}", dict(base, mode="backtrack", backward_steps=t,
                                                 backward_lr=eta)))
    rows.append((f"unrolled L={base['steps']}", dict(base, mode="unrolled")))
    rows.append(("bpda", dict(base, mode="bpda")))
    grads, cost, compile_s = {}, {}, {}
    for name, kw in rows:
        t0 = time.perf_counter()
        fn = jax.jit(jax.grad(functools.partial(objective, kw))).lower(x).compile()
        compile_s[name] = time.perf_counter() - t0
        grads[name] = np.asarray(jax.block_until_ready(fn(x))).reshape(x.shape[0], -1)
        ts = []
        for _ in range(config.table_repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(x))
            ts.append(time.perf_counter() - t0)
        cost[name] = min(ts)
    ref = grads[rows[0][0]]
    unrolled = grads[rows[-2][0]]

    def cos(a, b):
        return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))

    def cos_ex(a, b):  # over the examples with a nonzero reference gradient
        keep = np.linalg.norm(b, axis=1) > 0
        if not keep.any():
            return float("nan")
        a, b = a[keep], b[keep]
        c = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
        return float(np.median(c))

    unrolled_s = cost[rows[-2][0]]
    table = {name: {"cosine_to_exact_implicit": cos(grads[name], ref),
                    "median_per_example_cosine": cos_ex(grads[name], ref),
                    "cosine_to_unrolled": cos(grads[name], unrolled),
                    "seconds": cost[name], "compile_s": compile_s[name],
                    "cost_relative_to_unrolled": cost[name] / unrolled_s}
             for name, _ in rows}
    diagnostics = {"num_examples": int(x.shape[0]), "eta_prime": eta,
                   "grad_norm_at_zstar_median": float(jnp.median(grad_norm)),
                   "hessian_eig_min": float(jnp.min(eig)), "hessian_eig_max": lam_max,
                   "hessian_condition_median": float(jnp.median(
                       eig[:, -1] / jnp.maximum(eig[:, 0], 1e-30)))}
    return table, diagnostics


# ----------------------------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------------------------


def train_and_evaluate(config, workdir: str) -> dict:
    """Run the experiment; returns the results dictionary also written to ``results.json``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from robustjax import data, defenses, evaluation
    from robustjax.attacks import _generative as gattacks

    if config.generator not in ("mlp_vae", "dcgan"):
        raise ValueError(f"`generator` must be 'mlp_vae' or 'dcgan', got {config.generator!r}.")
    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    (k_gen, k_clf, k_def, k_att, k_advt, k_abs, k_absdef,
     k_tab) = jax.random.split(key, 8)
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.load_dataset(config.dataset, "test")
    x = jnp.asarray(test.images[:config.num_attack])
    y = jnp.asarray(test.labels[:config.num_attack])
    budgets = tuple(config.budgets)
    timings, results, curves, info = {}, {}, {}, {}
    defenses_run = tuple(config.defenses)
    common = dict(steps=config.attack_steps, max_step=config.max_step, schedule=config.schedule,
                  binary_search_steps=config.binary_search_steps,
                  initial_const=config.initial_const)
    nes_common = dict(common, num_samples=config.nes_samples, steps=config.nes_steps,
                      binary_search_steps=config.nes_binary_search_steps)

    def run(defense_name, attack_name, attack, target_fn, clean):
        record, curve = _evaluate_attack(attack, target_fn, k_att, x, y, clean, budgets)
        results.setdefault(defense_name, {})[attack_name] = record
        curves[f"{defense_name} / {attack_name}"] = curve
        print(f"{defense_name} / {attack_name}: {record['seconds']:.1f} s, success "
              f"{record['success_rate']:.2f}", flush=True)

    # ---- DefenseGAN ---------------------------------------------------------------------------
    generator_fn = classifier_fn = x_rec = None
    if "defensegan" in defenses_run:
        t0 = time.perf_counter()
        trainer = _train_vae if config.generator == "mlp_vae" else _train_dcgan
        generator_fn, info["generator"] = trainer(config, np.asarray(train.images), k_gen)
        timings["generator_training_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        classifier_fn = _train_classifier(config, train, k_clf, adversarial=False)
        timings["classifier_training_s"] = time.perf_counter() - t0
        dkw = dict(config.defense.to_dict(), latent_dim=config.latent_dim)
        exact = defenses.make_defensegan_logits_fn(classifier_fn, generator_fn, k_def,
                                                   mode="bpda", **dkw)
        x_rec = jax.jit(functools.partial(
            defenses.defensegan_reconstruct, generator_fn, k_def, **dkw))(x)
        info["reconstruction_mse"] = float(jnp.mean((x_rec - x) ** 2))
        info["clean_accuracy_undefended_F"] = float(jnp.mean(jnp.argmax(classifier_fn(x), -1)
                                                             == y))
        clean = np.asarray(jnp.argmax(jax.jit(exact)(x), -1) == y)
        info["clean_accuracy_defensegan"] = float(clean.mean())
        print(f"DefenseGAN: generator {timings['generator_training_s']:.1f} s, reconstruction "
              f"MSE {info['reconstruction_mse']:.4f}, clean {clean.mean():.2f}", flush=True)
        for m in config.methods:
            akw = dict(nes_common, sigma=config.nes_sigma_defensegan) if m == "nes" else common
            attack = gattacks.make_defensegan_attack(classifier_fn, generator_fn, k_def,
                                                     method=m, defense_kwargs=dkw,
                                                     attack_kwargs=akw)
            run("DefenseGAN", m, attack, exact, clean)
        if config.table_examples > 0:
            t0 = time.perf_counter()
            n_tab = min(config.table_examples, config.num_attack)
            info["gradient_modes"], info["gradient_mode_diagnostics"] = _gradient_mode_table(
                config, classifier_fn, generator_fn, k_tab, x[:n_tab], y[:n_tab])
            timings["gradient_mode_table_s"] = time.perf_counter() - t0

    # ---- ABS ----------------------------------------------------------------------------------
    if "abs" in defenses_run:
        a = config.abs
        t0 = time.perf_counter()
        decoder_fn = _train_abs(config, train, k_abs)
        timings["abs_training_s"] = time.perf_counter() - t0
        akw_abs = dict(num_classes=10, latent_dim=a.latent_dim, num_samples=a.num_samples,
                       steps=a.steps, lr=a.lr, beta=a.beta, backward_steps=a.backward_steps,
                       cg_maxiter=a.cg_maxiter, ridge=a.ridge)
        exact = defenses.make_abs_logits_fn(decoder_fn, k_absdef, mode="bpda", **akw_abs)
        clean = np.asarray(jnp.argmax(jax.jit(exact)(x), -1) == y)
        info["clean_accuracy_abs"] = float(clean.mean())
        print(f"ABS: training {timings['abs_training_s']:.1f} s, clean {clean.mean():.2f}",
              flush=True)
        for m in config.abs_methods:
            if m == "latent":
                lkw = {k: v for k, v in akw_abs.items() if k not in ("num_classes", "latent_dim")}
                def attack(k, xx, yy, lkw=lkw):  # Eqn 22; k unused (deterministic)
                    del k
                    return gattacks.abs_latent_attack(
                        decoder_fn, k_absdef, xx, yy, num_classes=10, latent_dim=a.latent_dim,
                        steps=config.abs_latent_steps, abs_kwargs=lkw)
            elif m == "nes":
                attack = functools.partial(gattacks.generative_nes_l2, exact,
                                           sigma=config.nes_sigma_abs, **nes_common)
            else:  # the paper's attack, gradient through z*_c by mode m
                model = defenses.make_abs_logits_fn(decoder_fn, k_absdef, mode=m, **akw_abs)
                kw = dict(common, verify_fn=exact) if m == "backtrack" else common
                attack = functools.partial(gattacks.generative_cw_l2, model, **kw)
            run("ABS", m, attack, exact, clean)

    # ---- ADVT ---------------------------------------------------------------------------------
    if "advt" in defenses_run:
        t0 = time.perf_counter()
        advt_fn = _train_classifier(config, train, k_advt, adversarial=True)
        timings["advt_training_s"] = time.perf_counter() - t0
        clean = np.asarray(jnp.argmax(advt_fn(x), -1) == y)
        info["clean_accuracy_advt"] = float(clean.mean())
        print(f"ADVT: training {timings['advt_training_s']:.1f} s, clean {clean.mean():.2f}",
              flush=True)
        for m in config.advt_methods:
            if m == "nes":
                attack = functools.partial(gattacks.generative_nes_l2, advt_fn,
                                           sigma=config.nes_sigma_advt, **nes_common)
            else:  # "cw": the paper's attack on an undefended model = CW with its optimiser
                attack = functools.partial(gattacks.generative_cw_l2, advt_fn, **common)
            run("ADVT", m, attack, advt_fn, clean)

    # ---- outputs ------------------------------------------------------------------------------
    if curves:
        evaluation.plot_accuracy_vs_distortion(
            {k: (c.x, c.accuracy) for k, c in curves.items()},
            os.path.join(workdir, "accuracy_vs_l2.png"),
            title=f"MNIST, {config.num_attack} test digits (cf. supplementary Fig. 1)")
    if x_rec is not None:
        k_show = min(8, config.num_attack)
        evaluation.plot_examples(
            np.asarray(x[:k_show]), np.asarray(x_rec[:k_show]), np.asarray(y[:k_show]),
            np.asarray(jnp.argmax(classifier_fn(x[:k_show]), -1)),
            np.asarray(jnp.argmax(classifier_fn(x_rec[:k_show]), -1)),
            os.path.join(workdir, "reconstructions.png"),
            title="test digits (top) and DefenseGAN reconstructions G(z*) (bottom)")

    lines = ["| defense | attack | clean acc | success | median ℓ2 | "
             + " | ".join(f"acc@ℓ2≤{b:g}" for b in budgets) + " | time (s) |",
             "|" + "---|" * (6 + len(budgets))]
    for dname, per in results.items():
        for aname, r in per.items():
            med = r["median_l2_successful"]
            lines.append(
                f"| {dname} | {aname} | {r['clean_accuracy']:.2f} | {r['success_rate']:.2f} | "
                + (f"{med:.3f}" if med is not None else "—") + " | "
                + " | ".join(f"{v:.2f}" for v in r["accuracy_at_budget"].values())
                + f" | {r['seconds']:.1f} |")
    if "gradient_modes" in info:
        lines += ["", "Gradient through z* (DefenseGAN, "
                  f"{info['gradient_mode_diagnostics']['num_examples']} digits): cosine to the "
                  "exact implicit gradient and cost of one gradient call", "",
                  "| mode | cosine (all) | median per-example cosine | cosine to unrolled | "
                  "time (s) | / unrolled |", "|---|---|---|---|---|---|"]
        for name, r in info["gradient_modes"].items():
            lines.append(f"| {name} | {r['cosine_to_exact_implicit']:.4f} | "
                         f"{r['median_per_example_cosine']:.4f} | {r['cosine_to_unrolled']:.4f} "
                         f"| {r['seconds']:.3f} | {r['cost_relative_to_unrolled']:.3f} |")
    table = "\n".join(lines)
    out = {"config": config.to_dict(), **info, "attacks": results, "timings_s": timings,
           "devices": [str(d) for d in jax.devices()]}
    _common.write_outputs(workdir, out, table)
    return out


if __name__ == "__main__":
    _common.run("generative", train_and_evaluate, distributed=False)
