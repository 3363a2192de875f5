"""Sweep of the regularisers of the spatial reproduction (issue 16, Fig. 6 target).

For each ``variant:weight`` given, trains that variant exactly as the ``repro`` config of
``experiments/spatial.py`` does (same data, 14x14 digits, 100 hidden units, Adam, same PRNG
keys per (variant, seed)), with the regulariser weight replaced (``sdp_weight`` for f_sdp,
``fro_weight`` / ``spe_weight`` for f_fro / f_spe; ``--epochs`` / ``--sdp-eps`` also
overridable), then reports per run

* clean accuracy on the 2,000 test digits (Wilson 95 %);
* stAdv success at τ = 0.05 (L-BFGS, 30 iterations, Xiao's per-pair flow loss, keep-best) on the
  correctly classified among the first 500 test digits (Wilson 95 %) -- the repro's Fig. 6 row;
* the mean certified per-pair SDP bound q/2 (Burer-Monteiro multipliers + Cholesky
  certificate, 100 steps), i.e. ``mean_pair_bound["sdp"]`` of ``results.json``: the spatial
  Lipschitz-type constant of the model;
* training and evaluation CPU seconds of this process.

f_sdp's regulariser is ``weight * (κ/2) * ε * max_i q^{iy}`` (``sdp_regularizer``), so its
weight and its ε enter **only through their product**; the sweep varies the weight at the
repro's ε = 0.01 and reports ``weight * ε``.

Appends one JSON line per run to ``--out`` (resumable: runs already there are skipped) and
rewrites ``--out`` with ``.md`` as a Markdown table after each run.

Example (the sweep of ``experiments/results/spatial/README.md``)::

  cd experiments && python benchmarks/spatial_sdp_sweep.py --seeds 0 \\
      --runs sdp:0.5 sdp:2 sdp:8 fro:0.08 \\
      --out results/spatial/sweep/sweep.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # experiments/ (spatial.py, configs, _common)

SHIFT_RADII = (0.25, 0.5, 1.0)
WEIGHT_FIELD = {"sdp": "sdp_weight", "fro": "fro_weight", "spe": "spe_weight",
                "at": "at_reg_weight", "nt": None}


def _config(variant, weight, epochs, sdp_eps):
    from configs.spatial import get_config

    c = get_config("repro")
    c.stadv_taus = (0.05,)
    if WEIGHT_FIELD[variant] is not None and weight is not None:
        setattr(c, WEIGHT_FIELD[variant], float(weight))
    if epochs is not None:
        c.num_epochs = int(epochs)
    if sdp_eps is not None:
        c.sdp_train_eps = float(sdp_eps)
    return c


def run_one(variant, weight, seed, data, *, epochs=None, sdp_eps=None, save_dir=None):
    import jax
    import numpy as np

    import spatial as sx
    from robustjax import spatial, training
    from robustjax.training import _spatial as sp

    train, test, lam, rho = data
    c = _config(variant, weight, epochs, sdp_eps)
    s = c.image_size
    vi = tuple(c.variants).index(variant)  # the repro's key for this (variant, seed)
    k_init, k_fit, k_att = jax.random.split(jax.random.fold_in(jax.random.key(seed), vi), 3)
    cpu0 = time.process_time()
    model, obj, state, prefix = sx._build(variant, c, lam, k_init, (1, s, s, 1))
    state, _ = training.fit(state, obj, train, key=k_fit, epochs=c.num_epochs,
                            batch_size=c.batch_size, progress=False)
    cpu_train = time.process_time() - cpu0
    params = {k: v for k, v in state.params.items() if k != sp.DUAL_KEY}
    fns = sx._eval_fns(model, c, s)
    y = np.asarray(test.labels)
    correct = np.asarray(fns["logits"](params, test.images)).argmax(-1) == y
    w, _, v = sp.mlp_weights(params, prefix=prefix)
    bounds, _ = sx._FNS["pair_bounds"](w, v, lam, rho, dual_steps=c.dual_steps)
    off = ~np.eye(v.shape[0], dtype=bool)
    n_att = c.stadv_num
    sweep = fns["stadv"](params, k_att, test.images[:n_att], test.labels[:n_att])
    ok = np.asarray(sweep.success)[0]
    corr = correct[:n_att]
    succ = [int((ok & corr).sum()), int(corr.sum())]
    # Where the successful stAdv flows go: their constant (translation) part, which Xiao's flow
    # loss does not charge and no certificate covers (M is singular on constant flows), and
    # the zero-mean rest (px).
    flow = np.asarray(sweep.flow)[0]  # [n, H, W, 2]
    mflow = flow.mean((1, 2))
    rest = np.sqrt(((flow - mflow[:, None, None, :]) ** 2).sum(-1).mean((1, 2)))
    sel = ok & corr
    # Pure translations (constant flows): success among the correctly classified of the same
    # digits under the worst of 8 shifts (axis and diagonal directions, max-norm radius R px).
    xs, ys = test.images[:n_att], y[:n_att]
    trans = {}
    for rad in SHIFT_RADII:
        fooled = np.zeros(n_att, bool)
        for a, b in [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]:
            fl = np.broadcast_to(np.asarray([a * rad, b * rad], np.float32), xs.shape[:3] + (2,))
            xt = np.clip(np.asarray(spatial.warp(xs, fl)), 0.0, 1.0)
            fooled |= np.asarray(fns["logits"](params, xt)).argmax(-1) != ys
        trans[f"{rad:g}"] = [int((fooled & corr).sum()), int(corr.sum())]
    if save_dir:
        np.savez(os.path.join(save_dir, f"{variant}_{weight:g}_s{seed}_e{c.num_epochs}.npz"),
                 **{jax.tree_util.keystr(kp): np.asarray(a)
                    for kp, a in jax.tree_util.tree_flatten_with_path(params)[0]})
    return {
        "variant": variant, "weight": weight, "seed": seed, "epochs": c.num_epochs,
        "sdp_eps": c.sdp_train_eps if variant == "sdp" else None,
        "clean_counts": [int(correct.sum()), len(y)],
        "clean_accuracy": sx._ci(int(correct.sum()), len(y)),
        "stadv_success_counts_tau0.05": succ,
        "stadv_success_tau0.05": sx._ci(*succ),
        "mean_pair_bound": {k: float(np.asarray(a)[off].mean()) for k, a in bounds.items()},
        "stadv_translation_px": float(np.linalg.norm(mflow, axis=-1)[sel].mean()),
        "stadv_zero_mean_rms_px": float(rest[sel].mean()),
        "translation_success_counts": trans,
        "translation_success": {k: sx._ci(*t) for k, t in trans.items()},
        "norm_W_fro": float(np.linalg.norm(np.asarray(w))),
        "norm_V_fro": float(np.linalg.norm(np.asarray(v))),
        "cpu_train_s": cpu_train, "cpu_total_s": time.process_time() - cpu0,
    }


def _fmt(p):
    return f"{100 * p[0]:.1f} [{100 * p[1]:.1f}, {100 * p[2]:.1f}]"


def write_table(rows, path):
    lines = [
        "Regulariser sweep (experiments/benchmarks/spatial_sdp_sweep.py): repro setting (14x14 "
        "digits, 100 hidden units, Adam lr 1e-3, 10,000 training digits, keys of the repro); "
        "stAdv: L-BFGS 30 it., τ = 0.05 (Xiao's per-pair flow loss), correctly classified "
        "among the first 500 test digits; clean accuracy on 2,000 test digits; Wilson 95 %. "
        "SDP bound: mean certified per-pair q/2 (library ε units, per unit ε, κ not applied). "
        "For f_sdp, weight × ε is what enters the loss.", "",
        "| variant | weight | ε (f_sdp) | weight × ε | epochs | seed | clean acc % | "
        "stAdv success τ=0.05 % | stAdv flow: translation / zero-mean RMS px | "
        "translation-only success % (R = 0.25 / 0.5 / 1 px) | mean SDP pair bound | "
        "‖W‖_F | ‖V‖_F | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e = r["sdp_eps"]
        prod = f"{r['weight'] * e:g}" if e is not None else "–"
        fl = (f"{r['stadv_translation_px']:.2f} / {r['stadv_zero_mean_rms_px']:.2f}"
              if "stadv_translation_px" in r else "–")
        tr = (" / ".join(f"{100 * p[0]:.0f}" for p in r["translation_success"].values())
              if "translation_success" in r else "–")
        lines.append(
            f"| f_{r['variant']} | {r['weight']:g} | {e if e is not None else '–'} | {prod} | "
            f"{r['epochs']} | {r['seed']} | {_fmt(r['clean_accuracy'])} | "
            f"{_fmt(r['stadv_success_tau0.05'])} | {fl} | {tr} | "
            f"{r['mean_pair_bound']['sdp']:.2f} | "
            f"{r['norm_W_fro']:.2f} | {r['norm_V_fro']:.2f} | {r['cpu_total_s']:.0f} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", required=True,
                    help="variant:weight (e.g. sdp:2 fro:0.08 nt:0)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--sdp-eps", type=float, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--save-params", default=None,
                    help="directory for the trained parameters (.npz), not committed")
    a = ap.parse_args()

    import jax  # noqa: F401

    import spatial as sx
    from robustjax import data, spatial

    c = _config("nt", None, None, None)
    s = c.image_size
    train = data.subset(data.load_dataset(c.dataset, "train"), slice(0, c.num_train))
    test = data.subset(data.load_dataset(c.dataset, "test"), slice(0, c.num_test))
    train = data.Dataset(sx._resize(train.images, s), train.labels)
    test = data.Dataset(sx._resize(test.images, s), test.labels)
    d = (train, test, spatial.aabb_radii(s, s), spatial.ellipsoid_radius(s, s))

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    rows = []
    if a.save_params:
        os.makedirs(a.save_params, exist_ok=True)
    if os.path.exists(a.out):
        with open(a.out) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    for seed in a.seeds:
        for spec in a.runs:
            variant, weight = spec.split(":")
            weight = float(weight)
            ep = a.epochs if a.epochs is not None else _config(variant, None, None, None).num_epochs
            eps = None
            if variant == "sdp":
                eps = a.sdp_eps if a.sdp_eps is not None else _config(
                    "sdp", None, None, None).sdp_train_eps
            done = [r for r in rows if (r["variant"], r["weight"], r["seed"], r["epochs"],
                                        r["sdp_eps"]) == (variant, weight, seed, ep, eps)]
            if done:
                continue
            r = run_one(variant, weight, seed, d, epochs=a.epochs, sdp_eps=a.sdp_eps,
                        save_dir=a.save_params)
            rows.append(r)
            with open(a.out, "a") as f:
                f.write(json.dumps(r) + "\n")
            write_table(rows, os.path.splitext(a.out)[0] + ".md")
            print(f"f_{variant} w={weight:g} seed {seed}: clean {r['clean_accuracy'][0]:.3f}, "
                  f"stAdv {r['stadv_success_tau0.05'][0]:.3f} "
                  f"(n={r['stadv_success_counts_tau0.05'][1]}), "
                  f"SDP bound {r['mean_pair_bound']['sdp']:.2f}, CPU {r['cpu_total_s']:.0f}s",
                  flush=True)


if __name__ == "__main__":
    main()
