"""RIDE (seed 002): gray-box and white-box (BPDA + EOT) evaluation of per-input defenders.

Trains a classifier, attacks held-out test images, and defends them with median filtering,
total-variation minimization (TVM) and the self-supervised defenders of the paper (DIP, I-DIP,
DAE, RIDE; ``robustjax.defenses``). Reproduces, at the configured scale:

* **Table 1** (gray-box: the attack sees the classifier only): top-1 accuracy of the classifier
  on FGSM / PGD images, undefended and defended by median / TVM / RIDE. As in the paper, the
  Median and TVM columns report the best of the swept settings per attack (all settings are in
  ``results.json``: Tables 4–6). The extra row ``Clean`` shows every defender on clean images
  (median / TVM at the setting chosen for FGSM).
* **Table 2** (white-box): BPDA with the identity backward pass around each defender, inner
  ℓ∞ PGD (no random start) at ``bpda_eps`` / ``bpda_step_size``; the randomized RIDE (dropout
  stays on) is attacked through EOT, the mean logits over ``eot_samples`` draws at every PGD
  step. The attack's final images are then defended once more with a fresh key and classified.
* **Fig. 7**: per-image distances adv→gt, defended→gt, defended→adv (mean ℓ2 and mean absolute
  difference in [0, 255]) and the accuracy on adversarial and defended images.
* **Fig. 5a**: accuracy on the FGSM images against the number of self-supervised iterations for
  DIP / I-DIP / DAE / RIDE (``fig5a_accuracy_vs_iteration.png``).
* **Fig. 6**: the reconstruction at every checkpoint with p(true class), dist2gt and dist2adv
  (``fig6_reconstruction.png``).

Outputs in ``--workdir``: ``results.json``, ``tables.md`` (also printed), the PNG figures,
``examples_bpda.png`` and ``classifier/`` (metrics and checkpoints of the classifier; a rerun
resumes from them).

Accuracies are plain top-1 accuracies on the (defended) images, as in the paper (not "robust
accuracy" conditioned on a correct clean prediction).

Usage::

    python experiments/ride.py --workdir /tmp/ride
    python experiments/ride.py --workdir /tmp/ride_smoke --config experiments/configs/ride.py:smoke
    python experiments/ride.py --workdir /tmp/ride_mnist --config experiments/configs/ride.py:mnist
"""

from __future__ import annotations

import os
import time

import _common


GRAY_ATTACKS = ("FGSM", "PGD")


def _log(config, msg: str) -> None:
    if config.progress:
        print(f"[ride] {msg}", flush=True)


def noise_augmented_objective(*, noise_std: float, fraction: float):
    """Cross-entropy objective where a random ``fraction`` of the batch gets Gaussian noise.

    Noisy images are ``clip(x + noise_std · N(0, I), 0, 1)``. Returns an objective
    ``(params, state, batch, key) -> (loss, (batch_stats, metrics))``.
    """
    import jax
    import jax.numpy as jnp

    from robustjax import training

    base = training.standard_objective()
    if noise_std <= 0 or fraction <= 0:
        return base

    def objective(params, state, batch, key):
        k_sel, k_noise, k_base = jax.random.split(key, 3)
        x = batch["image"]
        sel = jax.random.bernoulli(k_sel, fraction, (x.shape[0],) + (1,) * (x.ndim - 1))
        noisy = jnp.clip(x + noise_std * jax.random.normal(k_noise, x.shape, x.dtype), 0.0, 1.0)
        return base(params, state, {**batch, "image": jnp.where(sel, noisy, x)}, k_base)

    return objective


def batched(fn, key, arrays, batch_size: int):
    """Apply ``fn(key_b, *arrays_b)`` batch by batch; returns the outputs as NumPy arrays.

    Batch ``b`` uses ``fold_in(key, b)``. A last partial batch is padded (repeating its last row)
    so ``fn`` compiles once; outputs (a pytree of arrays with a leading batch axis) are cut back
    and concatenated.
    """
    import jax
    import numpy as np

    n = len(arrays[0])
    size = min(batch_size, n)
    outs = []
    for b, start in enumerate(range(0, n, size)):
        parts = [np.asarray(a[start:start + size]) for a in arrays]
        m = len(parts[0])
        if m < size:
            parts = [np.concatenate([p, np.repeat(p[-1:], size - m, axis=0)]) for p in parts]
        out = fn(jax.random.fold_in(key, b), *parts)
        outs.append(jax.tree.map(lambda o, m=m: np.asarray(o)[:m], out))
    return jax.tree.map(lambda *o: np.concatenate(o, axis=0), *outs)


def compiled(fn, compiler_options=None):
    """``jax.jit(fn)``, compiled with XLA ``compiler_options`` (once per input signature).

    ``{"xla_backend_optimization_level": 0}`` compiles the vmapped per-image training loops
    about 4× faster on CPU and runs them about 4× slower: the right trade for smoke runs.
    """
    import jax

    jitted = jax.jit(fn)
    if not compiler_options:
        return jitted
    cache = {}

    def call(*args):
        sig = tuple(jax.tree.leaves(jax.tree.map(lambda a: (a.shape, str(a.dtype)), args)))
        if sig not in cache:
            cache[sig] = jitted.lower(*args).compile(compiler_options=dict(compiler_options))
        return cache[sig](*args)

    return call


def defense_trace(net, key, x, *, method: str, config, vectorize: str = "vmap"):
    """``robustjax.defenses.self_supervised_trace`` with a choice of batching.

    ``"vmap"`` is the library function (one vectorized program: best on accelerators);
    ``"map"`` runs the same per-image computation (image ``i`` with
    ``jax.random.split(key, N)[i]``, hence the same result) sequentially with ``lax.map``,
    which on CPU compiles ~2.5× faster and runs slightly faster (no per-image-weight batched
    convolutions).
    """
    import jax

    from robustjax import defenses

    if vectorize == "vmap":
        return defenses.self_supervised_trace(net, key, x, method=method, config=config)
    if vectorize != "map":
        raise ValueError(f"`vectorize` must be 'vmap' or 'map', got {vectorize!r}.")
    keys = jax.random.split(key, x.shape[0])
    return jax.lax.map(lambda a: defenses.self_supervised_single(
        net, a[0], a[1], method=method, config=config), (keys, x))


def _distances(x, x_adv, x_def):
    """Per-image ℓ2 and mean-|·|·255 (Fig. 6's Manhattan distance) for Fig. 7's three pairs."""
    import numpy as np

    def pair(a, b):
        d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)).reshape(len(a), -1)
        return np.sqrt(np.sum(d ** 2, axis=1)), 255.0 * np.mean(np.abs(d), axis=1)

    out = {}
    for name, (a, b) in (("adv2gt", (x_adv, x)), ("defense2gt", (x_def, x)),
                         ("defense2adv", (x_def, x_adv))):
        l2, l1 = pair(a, b)
        out[name] = {"l2": l2, "mean_abs_255": l1}
    return out


def _fmt3(v) -> str:
    return "" if v is None else f"{v:.3f}"


def table1(clean_acc: float, gray: dict, clean_row: dict | None) -> str:
    """Table 1 layout: rows = attacks, columns No Attack | No Defender | Median | TVM | RIDE."""
    cols = ("No Defender", "Median", "TVM", "RIDE")
    lines = ["| Attack | No Attack | " + " | ".join(cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for i, attack in enumerate(GRAY_ATTACKS):
        cells = [attack, _fmt3(clean_acc) if i == 0 else ""]
        cells += [_fmt3(gray[attack].get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    if clean_row is not None:
        cells = ["Clean", ""] + [_fmt3(clean_row.get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table2(rows: dict, dataset: str, eps: float) -> str:
    """Table 2 layout: Defense | Dataset | Distance | Accuracy (BPDA attack)."""
    lines = ["| Defense | Dataset | Distance | Accuracy |", "|---|---|---|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {dataset} | {eps:g} (ℓ∞) | {100 * r['accuracy_defended']:.1f}% |")
    return "\n".join(lines)


def table_fig7(rows: dict) -> str:
    """Fig. 7 numbers: mean ℓ2 distances and the accuracy on adversarial / defended images."""
    lines = ["| Defense | adv2gt ℓ2 | defense2gt ℓ2 | defense2adv ℓ2 | acc(adv) | acc(defended) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        d = r["distances_mean"]
        lines.append(f"| {name} | {d['adv2gt']['l2']:.3f} | {d['defense2gt']['l2']:.3f} | "
                     f"{d['defense2adv']['l2']:.3f} | {r['accuracy_adversarial']:.3f} | "
                     f"{r['accuracy_defended']:.3f} |")
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show(ax, img, title):
    import numpy as np

    img = np.clip(np.asarray(img), 0, 1)
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def plot_fig5a(curves: dict, path: str, title: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, (its, accs) in curves.items():
        ax.plot(its, accs, marker="o", label=name.upper() if name != "idip" else "I-DIP")
    ax.set_xlabel("iteration")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_fig6(x, x_adv, estimates, probs, iters, path: str) -> str:
    """Rows = images; columns clean, adversarial, estimate after each checkpoint.

    ``probs [R, 2 + T]``: p(true class) of each panel.
    """
    import numpy as np

    plt = _plt()
    rows, t = estimates.shape[0], estimates.shape[1]
    fig, axes = plt.subplots(rows, t + 2, figsize=(1.6 * (t + 2), 1.9 * rows), squeeze=False)
    for r in range(rows):
        _show(axes[r, 0], x[r], f"clean\np={probs[r, 0]:.2f}")
        _show(axes[r, 1], x_adv[r], f"adversarial\np={probs[r, 1]:.2f}")
        for j in range(t):
            est = estimates[r, j]
            gt = 255 * np.mean(np.abs(est - x[r]))
            adv = 255 * np.mean(np.abs(est - x_adv[r]))
            _show(axes[r, j + 2], est,
                  f"it {iters[j]}  p={probs[r, j + 2]:.2f}\ngt {gt:.1f} / adv {adv:.1f}")
    fig.suptitle("RIDE reconstruction (p: prob. of the true class; dist2gt / dist2adv in "
                 "[0,255])", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_fig7(rows: dict, path: str) -> str:
    plt = _plt()
    names = list(rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    kinds = ("adv2gt", "defense2gt", "defense2adv")
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        data = [rows[n]["distances"][kind]["l2"] for n in names]
        pos = [j + (i - 1) * width for j in range(len(names))]
        bp = ax1.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True)
        for patch in bp["boxes"]:
            patch.set_facecolor(f"C{i}")
        ax1.plot([], [], color=f"C{i}", lw=6, label=kind)
    ax1.set_xticks(range(len(names)))
    ax1.set_xticklabels(names, fontsize=8)
    ax1.set_ylabel("ℓ2 distance")
    ax1.legend(fontsize=7)
    ax1.set_title("(a) distances after the BPDA attack", fontsize=9)
    xs = range(len(names))
    ax2.bar([j - 0.2 for j in xs], [rows[n]["accuracy_adversarial"] for n in names], 0.4,
            label="adversarial")
    ax2.bar([j + 0.2 for j in xs], [rows[n]["accuracy_defended"] for n in names], 0.4,
            label="defended")
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels(names, fontsize=8)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("top-1 accuracy")
    ax2.legend(fontsize=7)
    ax2.set_title("(b) accuracy", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _classifier(config):
    from robustjax import models

    if config.classifier == "mnist_cnn":
        return models.MnistCNN(features=tuple(config.features), hidden=config.hidden)
    if config.classifier == "resnet18":
        return models.ResNet18(num_classes=10)
    raise NotImplementedError(
        f"classifier {config.classifier!r}: the paper's ImageNet setting needs a pretrained "
        "ResNet50 (PyTorch) and the 2,000-image validation subset, which robustjax does not "
        "ship; supply a logits function and the data to train_and_evaluate's building blocks.")


def _load(config):
    from robustjax import data

    if config.dataset == "imagenet":
        raise NotImplementedError(
            "dataset 'imagenet' is not available in robustjax.data (see the config's comment).")
    train = data.load_dataset(config.dataset, "train", limit=config.num_train)
    test = data.load_dataset(config.dataset, "test", limit=config.num_test)
    return train, test


def train_and_evaluate(config, workdir: str) -> dict:
    """Run the RIDE experiment; returns the results dictionary also written to ``results.json``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from robustjax import attacks, defenses, models, training

    os.makedirs(workdir, exist_ok=True)
    timings = {}
    key = jax.random.key(config.seed)
    k_train, k_gray, k_def, k_abl, k_bpda, k_bpda_def = jax.random.split(key, 6)
    train, test = _load(config)
    x, y = np.asarray(test.images), np.asarray(test.labels)
    n = len(y)

    # ---- classifier -----------------------------------------------------------------------
    t0 = time.perf_counter()
    model = _classifier(config)
    state, _ = training.fit(
        model,
        noise_augmented_objective(noise_std=config.train_noise_std,
                                  fraction=config.train_noise_fraction),
        train, key=k_train, num_epochs=config.epochs, batch_size=config.batch_size,
        optimizer=config.optimizer, learning_rate=config.learning_rate,
        schedule=config.schedule, weight_decay=config.weight_decay,
        workdir=os.path.join(workdir, "classifier"), progress=config.progress)
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    logits_fn = models.make_logits_fn(model, variables)
    timings["classifier_training_s"] = time.perf_counter() - t0

    bs = config.defense_batch_size
    opts = ({"xla_backend_optimization_level": config.xla_backend_optimization_level}
            if config.xla_backend_optimization_level >= 0 else None)
    probs_jit = jax.jit(lambda k, v: jax.nn.softmax(logits_fn(v), axis=-1))

    def probs(v):
        return batched(probs_jit, k_def, (v,), max(bs, 256))

    def accuracy(v):
        return float(np.mean(np.argmax(probs(v), -1) == y))

    clean_acc = accuracy(x)
    _log(config, f"classifier clean accuracy on {n} test images: {clean_acc:.3f}")

    # ---- gray-box attacks -----------------------------------------------------------------
    t0 = time.perf_counter()
    gray_fns = {
        "FGSM": jax.jit(lambda k, v, l: attacks.fgsm(logits_fn, k, v, l, eps=config.gray_eps)),
        "PGD": jax.jit(lambda k, v, l: attacks.pgd(
            logits_fn, k, v, l, eps=config.gray_eps, steps=config.gray_pgd_steps,
            step_size=config.gray_pgd_step_size, random_start=False)),
    }
    inputs = {}
    if config.defend_clean:
        inputs["Clean"] = x
    for name, fn in gray_fns.items():
        inputs[name] = batched(fn, jax.random.fold_in(k_gray, len(inputs)), (x, y), bs)
    timings["gray_attacks_s"] = time.perf_counter() - t0

    # ---- baselines: median and TV sweeps (Tables 4-6) -----------------------------------------
    t0 = time.perf_counter()
    median_fns = {f"median k={s}": jax.jit(lambda k, v, s=s: defenses.median_filter(v, size=s))
                  for s in config.median_sizes}
    tv_fns = {f"tv {m} w={w:g}": jax.jit(lambda k, v, m=m, w=w: jnp.clip(defenses.tv_denoise(
        v, weight=w, method=m, num_iters=config.tv_iters), 0.0, 1.0))
        for m in config.tv_methods for w in config.tv_weights}
    sweep = {name: {} for name in inputs}
    for inp, v in inputs.items():
        for dname, fn in {**median_fns, **tv_fns}.items():
            sweep[inp][dname] = accuracy(batched(fn, k_def, (v,), bs))
        sweep[inp]["none"] = accuracy(v)
    timings["baselines_s"] = time.perf_counter() - t0

    # ---- self-supervised defenders: traces (Table 1 RIDE, Fig. 5a, Fig. 6) -----------------
    t0 = time.perf_counter()
    net = models.make_reconstruction_net(
        models.ride_fcn(config.fcn, sigmoid=True, dropout=config.fcn_dropout))
    ride_cfg = defenses.RideConfig(**config.ride.to_dict())
    k_steps, t_ckpt = ride_cfg.num_steps, ride_cfg.num_checkpoints
    iters = [k_steps * (t + 1) for t in range(t_ckpt)]

    def trace_fn(method):
        return compiled(lambda k, v: defense_trace(
            net, k, v, method=method, config=ride_cfg, vectorize=config.vectorize).estimates,
            opts)

    traces = {}  # (method, input) -> estimates [N, T, H, W, C]
    ride_trace = trace_fn("ride")
    for inp, v in inputs.items():
        traces[("ride", inp)] = batched(ride_trace, jax.random.fold_in(k_def, 1), (v,), bs)
        _log(config, f"RIDE on {inp}: accuracy "
             f"{accuracy(traces[('ride', inp)][:, -1]):.3f}")
    for method in config.ablation_methods:
        if method != "ride":
            traces[(method, "FGSM")] = batched(trace_fn(method), jax.random.fold_in(k_abl, 1),
                                               (inputs["FGSM"],), bs)
    timings["self_supervised_s"] = time.perf_counter() - t0

    def best(inp, prefix):
        items = {k: v for k, v in sweep[inp].items() if k.startswith(prefix)}
        name = max(items, key=items.get)
        return name, items[name]

    gray, gray_settings = {}, {}
    for inp in inputs:
        ride_acc = accuracy(traces[("ride", inp)][:, -1])
        if inp == "Clean":
            continue
        m_name, m_acc = best(inp, "median")
        t_name, t_acc = best(inp, "tv")
        gray[inp] = {"No Defender": sweep[inp]["none"], "Median": m_acc, "TVM": t_acc,
                     "RIDE": ride_acc}
        gray_settings[inp] = {"Median": m_name, "TVM": t_name}
    clean_row = None
    if "Clean" in inputs:
        clean_row = {"No Defender": clean_acc,
                     "Median": sweep["Clean"][gray_settings["FGSM"]["Median"]],
                     "TVM": sweep["Clean"][gray_settings["FGSM"]["TVM"]],
                     "RIDE": accuracy(traces[("ride", "Clean")][:, -1])}

    # Fig. 5a: accuracy vs iteration on the FGSM images.
    fgsm_acc = sweep["FGSM"]["none"]
    curves = {}
    for method in config.ablation_methods:
        est = traces[(method, "FGSM")]
        curves[method] = ([0] + iters, [fgsm_acc] + [accuracy(est[:, t]) for t in range(t_ckpt)])
    plot_fig5a(curves, os.path.join(workdir, "fig5a_accuracy_vs_iteration.png"),
               f"{config.dataset}: FGSM ε={config.gray_eps:g}, {n} images")

    # Fig. 6: reconstructions of the first images along the RIDE run on FGSM inputs.
    rows = min(config.num_figure_images, n, 4)
    fooled = np.flatnonzero((np.argmax(probs(x), -1) == y)
                            & (np.argmax(probs(inputs["FGSM"]), -1) != y))
    order = list(fooled) + [i for i in range(n) if i not in set(fooled)]
    idx = np.asarray(order[:rows])
    est = traces[("ride", "FGSM")][idx]
    panel = np.concatenate([x[idx][:, None], inputs["FGSM"][idx][:, None], est], axis=1)
    p_all = probs(panel.reshape((-1,) + x.shape[1:]))
    p_gt = p_all.reshape(rows, t_ckpt + 2, -1)[np.arange(rows), :, y[idx]]
    plot_fig6(x[idx], inputs["FGSM"][idx], est, p_gt, iters,
              os.path.join(workdir, "fig6_reconstruction.png"))
    fig6 = {"indices": idx.tolist(), "iterations": iters, "p_true": p_gt.tolist(),
            "dist2gt_255": (255 * np.mean(np.abs(est - x[idx][:, None]), axis=(2, 3, 4))).tolist(),
            "dist2adv_255": (255 * np.mean(np.abs(est - inputs["FGSM"][idx][:, None]),
                                           axis=(2, 3, 4))).tolist()}

    # ---- white-box: BPDA (+ EOT for RIDE), Table 2 / Fig. 7 --------------------------------
    t0 = time.perf_counter()

    def ride_defense(k, v):
        return defense_trace(net, k, v, method="ride", config=ride_cfg,
                             vectorize=config.vectorize).estimate

    wb_defenses = {
        "No defense": (None, False),
        f"Median k={config.bpda_median_size}": (
            lambda k, v: defenses.median_filter(v, size=config.bpda_median_size), False),
        f"TVM w={config.bpda_tv_weight:g}": (
            lambda k, v: jnp.clip(defenses.tv_denoise(
                v, weight=config.bpda_tv_weight, method=config.bpda_tv_method,
                num_iters=config.tv_iters), 0.0, 1.0), False),
        "RIDE": (ride_defense, True),
    }

    def bpda_attack(defense, randomized):
        def attack(k, v, l):
            k_eot, k_pgd = jax.random.split(k)
            if defense is None:
                f = logits_fn
            else:
                def randomized_logits(kk, u):
                    return logits_fn(attacks.bpda(lambda w: defense(kk, w))(u))

                if randomized:
                    f = lambda u: attacks.eot(  # noqa: E731
                        randomized_logits, num_samples=config.eot_samples)(k_eot, u)
                else:
                    f = lambda u: randomized_logits(k_eot, u)  # noqa: E731
            return attacks.pgd(f, k_pgd, v, l, eps=config.bpda_eps, steps=config.bpda_steps,
                               step_size=config.bpda_step_size, random_start=False)
        return compiled(attack, opts if randomized else None)

    white, bpda_images = {}, {}
    for i, (name, (defense, randomized)) in enumerate(wb_defenses.items()):
        t1 = time.perf_counter()
        x_adv = batched(bpda_attack(defense, randomized), jax.random.fold_in(k_bpda, i),
                        (x, y), bs)
        if defense is None:
            x_def = x_adv
        elif name == "RIDE":
            x_def = batched(ride_trace, jax.random.fold_in(k_bpda_def, i), (x_adv,), bs)[:, -1]
        else:
            x_def = batched(jax.jit(defense), k_bpda_def, (x_adv,), bs)
        dist = _distances(x, x_adv, x_def)
        white[name] = {
            "accuracy_adversarial": accuracy(x_adv),
            "accuracy_defended": accuracy(x_def),
            "linf_max": float(np.max(np.abs(x_adv - x))),
            "distances": {k: {m: v.tolist() for m, v in d.items()} for k, d in dist.items()},
            "distances_mean": {k: {m: float(np.mean(v)) for m, v in d.items()}
                               for k, d in dist.items()},
            "seconds": time.perf_counter() - t1,
        }
        bpda_images[name] = (x_adv, x_def)
        _log(config, f"BPDA vs {name}: defended accuracy {white[name]['accuracy_defended']:.3f} "
             f"({white[name]['seconds']:.1f}s)")
    timings["white_box_s"] = time.perf_counter() - t0
    plot_fig7({k: v for k, v in white.items() if k != "No defense"},
              os.path.join(workdir, "fig7_bpda_distances.png"))
    _plot_bpda_examples(x, y, bpda_images, probs, rows,
                        os.path.join(workdir, "examples_bpda.png"))

    # ---- tables and results ---------------------------------------------------------------
    dataset_label = {"mnist_embedded": "MNIST", "mnist": "MNIST", "cifar10": "CIFAR"}.get(
        config.dataset, config.dataset)
    t1 = table1(clean_acc, gray, clean_row)
    t2 = table2(white, dataset_label, config.bpda_eps)
    t7 = table_fig7(white)
    t5 = "| Method | " + " | ".join(f"it {i}" for i in [0] + iters) + " |\n"
    t5 += "|---|" + "---:|" * (len(iters) + 1) + "\n"
    t5 += "\n".join(f"| {m} | " + " | ".join(f"{a:.3f}" for a in c[1]) + " |"
                    for m, c in curves.items())
    text = (f"## Table 1 (gray-box, ε = {config.gray_eps:g}; {n} {dataset_label} test images; "
            f"best Median: {gray_settings['FGSM']['Median']} / {gray_settings['PGD']['Median']},"
            f" best TVM: {gray_settings['FGSM']['TVM']} / {gray_settings['PGD']['TVM']})\n\n"
            f"{t1}\n\n"
            f"## Table 2 (white-box BPDA, PGD-{config.bpda_steps} step "
            f"{config.bpda_step_size:g}, EOT {config.eot_samples} for RIDE)\n\n{t2}\n\n"
            f"## Fig. 7 (mean over images)\n\n{t7}\n\n"
            f"## Fig. 5a (accuracy on FGSM images vs iteration; K = {k_steps}, T = {t_ckpt})\n\n"
            f"{t5}")
    results = {
        "config": config.to_dict(),
        "num_test": n,
        "clean_accuracy": clean_acc,
        "table1": {"gray": gray, "clean_row": clean_row, "best_settings": gray_settings},
        "baseline_sweep": sweep,
        "fig5a": {m: {"iterations": c[0], "accuracy": c[1]} for m, c in curves.items()},
        "fig6": fig6,
        "table2": white,
        "timings_s": timings,
        "devices": [str(d) for d in jax.devices()],
    }
    _common.write_outputs(workdir, results, text, timings=timings, table_file="tables.md",
                          indent=1)
    return results


def _plot_bpda_examples(x, y, images, probs, rows, path):
    """Columns: clean, then adversarial / defended for each defender (BPDA), first ``rows``."""
    import numpy as np

    plt = _plt()
    names = [k for k in images if k != "No defense"]
    cols = 1 + 2 * len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.7 * rows), squeeze=False)
    preds = {k: (np.argmax(probs(a), -1), np.argmax(probs(d), -1)) for k, (a, d) in images.items()}
    for r in range(rows):
        _show(axes[r, 0], x[r], f"clean y={y[r]}")
        for j, name in enumerate(names):
            x_adv, x_def = images[name]
            pa, pd = preds[name][0][r], preds[name][1][r]
            _show(axes[r, 1 + 2 * j], x_adv[r], f"{name}\nadv → {pa}")
            _show(axes[r, 2 + 2 * j], x_def[r], f"defended → {pd}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    _common.run("ride", train_and_evaluate)
