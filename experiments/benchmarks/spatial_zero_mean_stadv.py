"""stAdv with and without translations, on the models of the regulariser sweep (issue 16).

Xiao et al.'s flow loss charges nothing for a constant flow (a sub-pixel translation), and no
certificate of the spatial-robustness paper covers one (M is singular on constant flows: every
bound is for zero-mean flows). This script re-attacks the models saved by
``spatial_sdp_sweep.py --save-params DIR`` with

* ``full``: the repro's stAdv (L-BFGS, 30 iterations, τ = 0.05, Xiao's per-pair flow loss,
  keep-best), as a check against the sweep's own number;
* ``zero-mean``: the same attack with the flow restricted to zero-mean flows (the attack
  optimises f and applies f - mean(f); the flow loss is unchanged by the projection), i.e. on
  the set the certificates and the SDP regulariser are about;

each on the correctly classified among the first 500 test digits (Wilson 95 %). Appends one
JSON line per model to ``--out`` and writes ``--out`` with ``.md`` as a Markdown table.

Example::

  cd experiments && python benchmarks/spatial_zero_mean_stadv.py --params /tmp/sweep_params \\
      --out results/spatial/sweep/zero_mean.jsonl
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _unflatten(npz):
    """``{"['Dense_0']['kernel']": a}`` -> nested dict."""
    out = {}
    for k in npz.files:
        parts = [p.strip("'[]") for p in k.split("][")]
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = npz[k]
    return out


def attack(logits_fn, x, y, *, zero_mean, tau=0.05, steps=30):
    """The library's per-example L-BFGS stAdv (keep-best), optionally on zero-mean flows.
    Returns success ``[n]``."""
    import jax
    import jax.numpy as jnp

    from robustjax.attacks import _stadv as S
    from robustjax.spatial import warp

    def proj(f):  # [1, H, W, 2] or [H, W, 2]
        return f - f.mean(axis=(-3, -2), keepdims=True) if zero_mean else f

    def one(xi, yi):
        obj = S._objective(logits_fn, xi[None], yi[None], jnp.asarray(tau), 0.0, False, 0.1,
                           "stadv")
        sc = S._best_tracker(logits_fn, xi[None], yi[None], False, "stadv")
        score_one = lambda ff: tuple(a[0] for a in sc(proj(ff)[None]))  # noqa: E731
        f = S._run_lbfgs(lambda ff: obj(proj(ff)[None])[0], jnp.zeros(xi.shape[:2] + (2,)),
                         steps, 10, "backtracking", score_one)
        return jnp.argmax(logits_fn(warp(xi[None], proj(f)[None]))[0]) != yi

    return jax.jit(jax.vmap(one))(x, y)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", default=None, help="file stems to evaluate")
    a = ap.parse_args()

    import jax
    import numpy as np

    import spatial as sx
    from configs.spatial import get_config
    from robustjax import data, models

    c = get_config("repro")
    s, n = c.image_size, c.stadv_num
    test = data.subset(data.load_dataset(c.dataset, "test"), slice(0, c.num_test))
    x_all, y_all = sx._resize(test.images, s), np.asarray(test.labels)
    x, y = x_all[:n], y_all[:n]
    model = models.MLP(hidden=c.hidden)
    done = set()
    rows = []
    if os.path.exists(a.out):
        with open(a.out) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        done = {r["model"] for r in rows}
    for path in sorted(glob.glob(os.path.join(a.params, "*.npz"))):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in done or (a.only and stem not in a.only):
            continue
        params = _unflatten(np.load(path))
        logits_fn = jax.jit(lambda z: model.apply({"params": params}, z))
        z = np.asarray(logits_fn(x_all))
        correct = z.argmax(-1) == y_all
        corr = correct[:n]
        zy = z[np.arange(len(y_all)), y_all]
        margin = zy - np.where(np.eye(z.shape[1], dtype=bool)[y_all], -np.inf, z).max(-1)
        r = {"model": stem, "clean_counts": [int(correct.sum()), len(y_all)],
             "median_margin_correct": float(np.median(margin[correct]))}
        for name, zm in (("full", False), ("zero_mean", True)):
            ok = np.asarray(attack(logits_fn, x, y, zero_mean=zm))
            k = [int((ok & corr).sum()), int(corr.sum())]
            r[name] = {"counts": k, "rate": sx._ci(*k)}
        rows.append(r)
        with open(a.out, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(stem, {k: r[k]["rate"][0] for k in ("full", "zero_mean")}, flush=True)
        fmt = lambda p: f"{100 * p[0]:.1f} [{100 * p[1]:.1f}, {100 * p[2]:.1f}]"  # noqa: E731
        lines = ["stAdv success at τ = 0.05 (L-BFGS 30 it., Xiao's flow loss, keep-best; "
                 "correctly classified among the first 500 test digits; Wilson 95 %), with all "
                 "flows and restricted to zero-mean flows (no translation: the set every "
                 "certificate covers). Model = variant_weight_seed_epochs.", "",
                 "| model | clean acc % | stAdv success, all flows % | stAdv success, "
                 "zero-mean flows % | median clean logit margin (correct digits) |",
                 "|---|---|---|---|---|"]
        for q in rows:
            ca = q["clean_counts"]
            lines.append(f"| {q['model']} | {100 * ca[0] / ca[1]:.1f} | "
                         f"{fmt(q['full']['rate'])} | {fmt(q['zero_mean']['rate'])} | "
                         f"{q['median_margin_correct']:.2f} |")
        with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
