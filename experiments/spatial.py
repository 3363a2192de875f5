"""Spatial robustness of one-hidden-layer networks: the six variants of Sec. 4.2 / appendix 6.8.

*Provable defenses against spatially transformed adversarial inputs*: trains f_nt (CE), f_fro
(hinge + Frobenius), f_spe (hinge + spectral), f_stn (hinge, affine STN in front), f_at (CE +
stAdv adversarial term) and f_sdp (hinge + SDP-dual certified bound) on embedded MNIST
(downsampled to ``image_size``), then reports per variant

* clean test accuracy;
* Algorithm 1 (:func:`robustjax.certify.one_hidden_lower_bound`) lower bounds on the adversarial
  loss over ε (Fig. 2 / 8), averaged over ``lb_labels``, next to the SDP-dual upper bound of the
  same quantity (κ = 4 for the attack's inputs in ``[-1, 1]``);
* stAdv success rate and adversarial accuracy over τ (Fig. 6);
* certified 0/1 adversarial loss over the flow budget ε from the Frobenius, spectral and SDP
  upper bounds (Fig. 5); κ = ``jacobian_bound`` (2, images in ``[0, 1]``).

Bounds (per class pair ``(i, y)``, :math:`A = \\mathrm{diag}(v_i - v_y) W \\mathrm{diag}(\\lambda)`,
all valid upper bounds on the logit-margin change :math:`\\ell_{adv}` under
:math:`\\|Mr\\| \\le \\epsilon`):
Frobenius :math:`\\kappa\\epsilon\\sqrt d\\,\\|W\\mathrm{diag}(\\lambda)\\|_F\\|v_i - v_y\\|_2`,
spectral the same with :math:`\\|\\cdot\\|_2` (the paper's naive bounds
:math:`\\epsilon\\|W\\|\\|v\\|` with the flow factors that make them valid), SDP
:math:`\\tfrac{\\kappa}{2}\\epsilon\\, q^{iy}` with the dual bound optimised per pair
(:func:`robustjax.certify.optimize_dual_bm`). An example is certified at ε when it is classified
correctly and :math:`z_y - z_i > \\text{bound}^{iy}` for every ``i != y``. For f_stn the bounds
and Algorithm 1 cover the classifier head only (the STN is not certified).

Writes ``results.json``, ``table.md`` and ``spatial.png`` to ``--workdir`` (per-variant
``metrics.jsonl`` and checkpoints in sub-folders when ``checkpoint`` is set).

Usage::

    python experiments/spatial.py --workdir /tmp/spatial
    python experiments/spatial.py --workdir /tmp/sp --config experiments/configs/spatial.py:smoke
"""

from __future__ import annotations

import json
import os
import time

import _common


NAMES = {"nt": "f_nt", "fro": "f_fro", "spe": "f_spe", "stn": "f_stn", "at": "f_at",
         "sdp": "f_sdp"}


def _resize(images, size: int):
    import jax
    import numpy as np

    if images.shape[1] == size:
        return images
    out = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]),
                           method="linear", antialias=True)
    return np.clip(np.asarray(out), 0.0, 1.0).astype(np.float32)


def _build(variant, config, lam, key, input_shape):
    """``(model, objective, state, prefix)`` for one variant."""
    import optax

    from robustjax import models, training
    from robustjax.models._stn import STNClassifier
    from robustjax.training import _spatial as sp

    tx = optax.adam(config.learning_rate)
    prefix = ()
    if variant == "stn":
        model = STNClassifier(hidden=config.hidden, stn_hidden=config.stn_hidden)
        prefix = ("classifier",)
    else:
        model = models.MLP(hidden=config.hidden)
    state = training.create_train_state(model, key, input_shape, tx)
    if variant == "nt":
        obj = training.standard_objective(loss="ce")
    elif variant == "fro":
        obj = sp.norm_regularized_objective(norm="fro", weight=config.fro_weight)
    elif variant == "spe":
        obj = sp.norm_regularized_objective(norm="spectral", weight=config.spe_weight,
                                            spectral_iters=config.get("spe_power_iters", 0))
    elif variant == "stn":
        obj = training.standard_objective(loss="hinge")
    elif variant == "at":
        obj = sp.spatial_adversarial_objective(
            tau=config.at_tau, reg_weight=config.at_reg_weight,
            attack_steps=config.at_attack_steps, attack_learning_rate=config.at_attack_lr)
    elif variant == "sdp":
        obj = sp.sdp_dual_objective(lam, eps=config.sdp_train_eps, weight=config.sdp_weight,
                                    jacobian_bound=config.jacobian_bound,
                                    lmax_iters=config.get("sdp_lmax_iters", 0))
        params = sp.init_sdp_dual(dict(state.params), lam,
                                  method=config.get("sdp_init_method", "adam"))
        state = state.replace(params=params, opt_state=tx.init(params))
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return model, obj, state, prefix


def pair_bounds(w, v, lam, c0, *, dual_steps: int):
    """Per-unit-ε bound matrices ``[K, K]`` (before κ): Frobenius, spectral and SDP-dual
    (``q^{ij}/2``), plus the dual variables. The SDP values are certified dual bounds with
    multipliers from :func:`robustjax.certify.optimize_dual_bm` (``dual_steps`` ascent steps and
    one ``eigvalsh`` per pair). See the module docstring."""
    import jax
    import jax.numpy as jnp

    from robustjax import certify
    from robustjax.training import _spatial as sp

    k, d = v.shape[0], w.shape[1]
    wl = w * lam[None, :]
    dv = v[:, None, :] - v[None, :, :]
    vn = jnp.linalg.norm(dv, axis=-1)
    fro = jnp.sqrt(d) * jnp.linalg.norm(wl) * vn
    spe = jnp.sqrt(d) * jnp.linalg.norm(wl, ord=2) * vn
    ii, jj = sp.pair_indices(k)
    p = jax.vmap(lambda u: certify.sdp_matrix(w, u, lam))(v[ii] - v[jj])
    del c0  # the Burer-Monteiro multipliers beat any warm start (tighter and far cheaper)
    key = jax.random.key(0)
    c, q = jax.lax.map(lambda pp: certify.optimize_dual_bm(pp, key, split=w.shape[0],
                                                           steps=dual_steps), p)
    sdp = jnp.zeros((k, k)).at[ii, jj].set(q)
    sdp = 0.5 * (sdp + sdp.T)
    return fro, spe, sdp, c, p


_FNS: dict = {}
_pair_bounds_jit = None


def _eval_fns(model, config, size):
    """Jitted evaluation functions taking ``params``, cached per model configuration so that
    variants sharing an architecture compile once."""
    import functools

    import jax

    from robustjax import certify
    from robustjax.attacks._stadv import stadv_tau_sweep

    global _pair_bounds_jit
    if _pair_bounds_jit is None:
        _pair_bounds_jit = jax.jit(pair_bounds, static_argnames="dual_steps")
    cache_key = (repr(model), size, tuple(config.stadv_taus), config.stadv_steps,
                 config.stadv_optimizer, config.lb_steps)
    if cache_key in _FNS:
        return _FNS[cache_key]

    def logits(params, x):
        return model.apply({"params": params}, x)

    lb_key = ("lower_bound", size, config.lb_steps)
    if lb_key not in _FNS:
        @functools.partial(jax.jit, static_argnums=(3, 4))
        def lower_bound(w, v, b, eps, label):
            return certify.one_hidden_lower_bound(w, v, shape=(size, size), eps=eps, b=b,
                                                  label=label, steps=config.lb_steps).loss

        _FNS[lb_key] = lower_bound
    lower_bound = _FNS[lb_key]

    @jax.jit
    def stadv(params, key, x, y):
        return stadv_tau_sweep(functools.partial(logits, params), key, x, y,
                               taus=tuple(config.stadv_taus), steps=config.stadv_steps,
                               optimizer=config.stadv_optimizer)

    _FNS[cache_key] = {"logits": jax.jit(logits), "lower_bound": lower_bound, "stadv": stadv}
    return _FNS[cache_key]


def certified_error(margins, correct, labels, bound, eps_list, kappa):
    """0/1 adversarial loss: ``1 - mean(correct & all_i margin_i > κ ε bound[i, y])``."""
    import numpy as np

    out = []
    b = bound[:, labels].T  # [N, K]
    k = b.shape[1]
    mask = np.eye(k, dtype=bool)[labels]
    for eps in eps_list:
        ok = np.where(mask, True, margins > kappa * eps * b).all(axis=1) & correct
        out.append(float(1.0 - ok.mean()))
    return out


def _plot(results, config, path):
    from robustjax.evaluation._plots import _figure, _save

    fig = _figure((15, 4.2))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    for name, r in results["variants"].items():
        axes[0].plot(config.cert_eps, r["certified_error"]["sdp"], marker="o", label=name)
        axes[0].plot(config.cert_eps, r["certified_error"]["spectral"], ls=":", color=axes[0]
                     .lines[-1].get_color())
        axes[1].plot(config.stadv_taus, r["stadv"]["success_rate"], marker="o", label=name)
        axes[2].plot(config.lb_eps, r["lower_bound"]["mean"], marker="o", label=name)
    axes[0].set(xscale="symlog", xlabel="flow budget ε", ylabel="certified 0/1 adversarial loss",
                title="Upper bounds (solid: SDP dual, dotted: spectral)")
    axes[0].set_xscale("symlog", linthresh=1e-3)
    axes[1].set(xscale="log", xlabel="τ", ylabel="stAdv success rate",
                title="stAdv attack success vs τ")
    axes[2].set(yscale="log", xlabel="ε", ylabel="ℓ_adv lower bound (Algorithm 1)",
                title="Algorithm 1 lower bound")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path, 100)


def _table(results, config) -> str:
    tau = 0.05 if 0.05 in config.stadv_taus else config.stadv_taus[-1]
    ti = list(config.stadv_taus).index(tau)
    ce = [e for e in config.cert_eps if e > 0]
    e_show = ce[min(2, len(ce) - 1)] if ce else config.cert_eps[0]
    ei = list(config.cert_eps).index(e_show)
    e_lb = config.lb_eps[len(config.lb_eps) // 2]
    li = list(config.lb_eps).index(e_lb)
    head = ("| Model | clean acc | Alg. 1 ℓ_adv (ε={:g}) | SDP upper (same, κ=4) | "
            "stAdv success (τ={:g}) | stAdv adv. acc (τ={:g}) | cert. 0/1 loss ε={:g}: "
            "Fro / spec / SDP | train s |").format(e_lb, tau, tau, e_show)
    lines = [head, "|" + "---|" * 8]
    for name, r in results["variants"].items():
        c = r["certified_error"]
        lines.append(
            f"| {name} | {r['clean_accuracy']:.3f} | {r['lower_bound']['mean'][li]:.3g} | "
            f"{r['lower_bound']['sdp_upper'][li]:.3g} | {r['stadv']['success_rate'][ti]:.3f} | "
            f"{r['stadv']['adv_accuracy'][ti]:.3f} | {c['frobenius'][ei]:.3f} / "
            f"{c['spectral'][ei]:.3f} / {c['sdp'][ei]:.3f} | {r['train_s']:.0f} |")
    lines += ["", "Certified 0/1 adversarial loss vs flow budget ε (Frobenius / spectral / SDP):",
              "", "| Model | " + " | ".join(f"ε={e:g}" for e in config.cert_eps) + " |",
              "|---|" + "---|" * len(config.cert_eps)]
    for name, r in results["variants"].items():
        c = r["certified_error"]
        cells = [f"{a:.2f}/{b:.2f}/{s:.2f}" for a, b, s in
                 zip(c["frobenius"], c["spectral"], c["sdp"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "stAdv success rate vs τ:", "",
              "| Model | " + " | ".join(f"τ={t:g}" for t in config.stadv_taus) + " |",
              "|---|" + "---|" * len(config.stadv_taus)]
    for name, r in results["variants"].items():
        lines.append(f"| {name} | " + " | ".join(f"{s:.3f}" for s in r["stadv"]["success_rate"])
                     + " |")
    return "\n".join(lines)


def train_and_evaluate(config, workdir: str) -> dict:
    """Train and evaluate the variants; returns the dict also written to ``results.json``."""
    import jax
    import numpy as np

    from robustjax import certify, data, spatial, training
    from robustjax.training import _spatial as sp

    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    s = config.image_size
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, config.num_test))
    train = data.Dataset(_resize(train.images, s), train.labels)
    test = data.Dataset(_resize(test.images, s), test.labels)
    lam = spatial.aabb_radii(s, s)
    kappa = float(config.jacobian_bound)
    results = {"config": config.to_dict(), "variants": {},
               "devices": [str(d) for d in jax.devices()]}

    for vi, variant in enumerate(config.variants):
        name = NAMES[variant]
        k_init, k_fit, k_att = jax.random.split(jax.random.fold_in(key, vi), 3)
        model, obj, state, prefix = _build(variant, config, lam, k_init, (1, s, s, 1))
        t0 = time.perf_counter()
        state, _ = training.fit(
            state, obj, train, key=k_fit, num_epochs=config.num_epochs,
            batch_size=config.batch_size, progress=config.progress,
            workdir=os.path.join(workdir, variant) if config.checkpoint else None)
        train_s = time.perf_counter() - t0
        params = {k: v for k, v in state.params.items() if k != sp.DUAL_KEY}

        fns = _eval_fns(model, config, s)

        t0 = time.perf_counter()
        logits = np.asarray(fns["logits"](params, test.images))
        y = np.asarray(test.labels)
        correct = logits.argmax(-1) == y
        # Upper bounds on the classifier head.
        w, b, v = sp.mlp_weights(params, prefix=prefix)
        c0 = np.zeros((v.shape[0] * (v.shape[0] - 1) // 2, w.shape[0] + w.shape[1]),
                      np.float32)  # unused: pair_bounds computes its own multipliers
        fro, spe, sdp, c_opt, p = _pair_bounds_jit(w, v, lam, c0, dual_steps=config.dual_steps)
        fro, spe, sdp = (np.asarray(a) for a in (fro, spe, sdp))
        head_logits = logits
        if prefix:  # certify the head on the STN-transformed images
            xt = model.apply({"params": params}, test.images, return_transformed=True)[1]
            head_logits = np.asarray(xt.reshape(len(y), -1) @ np.asarray(w).T
                                     + np.asarray(b))
            head_logits = np.maximum(head_logits, 0) @ np.asarray(v).T + np.asarray(
                params["classifier"]["Dense_1"]["bias"])
        margins = head_logits[np.arange(len(y)), y][:, None] - head_logits
        cert = {nm: certified_error(margins, correct, y, bd, config.cert_eps, kappa)
                for nm, bd in (("frobenius", fro), ("spectral", spe), ("sdp", sdp))}
        cvx = []
        ii, jj = sp.pair_indices(v.shape[0])
        for pi in range(min(config.cvxpy_pairs, len(ii))):
            val, info = certify.sdp_bound(np.asarray(p[pi]), eps_abs=1e-5, eps_rel=1e-5)
            cvx.append({"pair": [int(ii[pi]), int(jj[pi])], "cvxpy_sdp": val,
                        "dual_bound": float(2 * sdp[ii[pi], jj[pi]]), "status": info["status"],
                        "solve_s": info["solve_time"]})
        # Algorithm 1 lower bounds (and the SDP upper bound of the same quantity, kappa = 4).
        lb = np.zeros((len(config.lb_labels), len(config.lb_eps)))
        ub = np.zeros_like(lb)
        for a, label in enumerate(config.lb_labels):
            for e, eps in enumerate(config.lb_eps):
                lb[a, e] = float(fns["lower_bound"](w, v, b, float(eps), int(label)))
                others = np.delete(sdp[:, label], label)
                ub[a, e] = 4.0 * eps * float(others.max())
        # stAdv over tau.
        n_att = min(config.stadv_num, len(y))
        sweep = fns["stadv"](params, k_att, test.images[:n_att], test.labels[:n_att])
        ok = np.asarray(sweep.success)  # [T, n]
        corr = correct[:n_att]
        eval_s = time.perf_counter() - t0
        results["variants"][name] = {
            "clean_accuracy": float(correct.mean()),
            "train_s": train_s,
            "eval_s": eval_s,
            "certified_error": cert,
            "mean_pair_bound": {"frobenius": float(fro[~np.eye(len(fro), dtype=bool)].mean()),
                                "spectral": float(spe[~np.eye(len(spe), dtype=bool)].mean()),
                                "sdp": float(sdp[~np.eye(len(sdp), dtype=bool)].mean())},
            "cvxpy_check": cvx,
            "lower_bound": {"mean": lb.mean(0).tolist(), "per_label": lb.tolist(),
                            "sdp_upper": ub.mean(0).tolist()},
            "stadv": {
                "success_rate": [float((o & corr).sum() / max(corr.sum(), 1)) for o in ok],
                "adv_accuracy": [float((~o).mean()) for o in ok],
                "flow_loss": np.asarray(sweep.flow_loss).mean(1).tolist(),
            },
        }
        print(f"{name}: clean {correct.mean():.3f}, train {train_s:.1f}s, eval {eval_s:.1f}s",
              flush=True)
        with open(os.path.join(workdir, "results_partial.json"), "w") as f:
            json.dump(results, f, indent=2, default=float)

    table = _table(results, config)
    _plot(results, config, os.path.join(workdir, "spatial.png"))
    _common.write_outputs(workdir, results, table)
    return results


if __name__ == "__main__":
    _common.run("spatial", train_and_evaluate, distributed=False)
