r"""Convergence of the γ(ε, x) estimate: steps × restarts, against random deltas.

γ(ε, x) = max_{δ ∈ B(ε)} g(δ; x) is estimated by projected Adam ascent (F.4: 50 steps of 0.1)
from uniform starts, keeping the best iterate and the best restart. The estimate is a lower
bound; this script measures how far it is from converged on a trained MNIST model, to choose the
number of restarts of the experiment's √γ histogram (Fig. F3):

* trains the ``--variant`` model of ``experiments/llr.py`` briefly with each of ``--models``
  (default: standard training and ADV-1, i.e. a smooth and a gradient-obfuscated loss surface;
  ``adv:K`` / ``llr:K`` / ``trades:K`` train the experiment's rows, with its (λ, μ, w), inner
  step and ε ramp),
* estimates γ on ``--num`` test digits for every (steps, restarts) pair, with the accurate
  float32 cross-entropy (``robustjax.losses.cross_entropy``) and, for comparison, the naive
  ``logsumexp(z) − z_y`` (exactly 0 on confidently classified digits in float32),
* reports per (steps × restarts) pair: mean γ, its ratio to the best estimate over all pairs (per example), the
  number of digits whose estimate is below 0.95 × the best, and the number below the best of
  ``--random`` uniform random deltas of the ball (the trivial baseline).

One JSON object is printed.

    python experiments/benchmarks/llr_gamma_convergence.py --num 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import _common  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="obfuscation")
    ap.add_argument("--num", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--grid", nargs="+",
                    default=["2x1", "10x4", "20x4", "50x1", "50x2", "50x4", "50x8", "100x4"],
                    help="STEPSxRESTARTS pairs")
    ap.add_argument("--random", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["standard", "adv:1"],
                    help="standard | adv:K | llr:K | trades:K (the experiment's rows)")
    args = ap.parse_args(argv)
    runs = []
    for spec in args.models:
        if spec == "standard":
            runs.append(("standard", "standard", 1))
            continue
        method, _, k = spec.partition(":")
        if method not in ("adv", "llr", "trades") or not k.isdigit():
            ap.error(f"--models: {spec!r} is not standard, adv:K, llr:K or trades:K")
        runs.append((f"{method.upper()}-{k}", method, int(k)))

    import jax
    import jax.numpy as jnp
    import numpy as np

    grid = [tuple(int(v) for v in g.split("x")) for g in args.grid]

    from robustjax import data, linearity, losses, models, training
    from robustjax.projections import random_in_ball

    llr = _common.load_experiment("llr")
    config = _common.load_config("llr", args.variant)
    config.num_epochs = args.epochs
    model = llr._model(config)
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, args.num))
    x, y = jnp.asarray(test.images), jnp.asarray(test.labels)
    eps = config.eps
    spe = len(train.labels) // config.batch_size
    out = {"eps": eps, "num": args.num, "model": config.model, "models": {}}

    def naive_ce(logits, labels):
        return jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]

    for name, method, k in runs:
        if method == "standard":  # LLR's objective with λ = μ = 0: the nominal loss alone
            std = config.copy_and_resolve_references()
            std.llr_lambda, std.llr_mu = 0.0, 0.0
            objective = llr._objective(std, "llr", 1, spe)
        else:
            objective = llr._objective(config, method, k, spe)
        state, _ = training.fit(model, objective, train, key=jax.random.key(0),
                                epochs=config.num_epochs, batch_size=config.batch_size,
                                tx=training.make_optimizer("adam", learning_rate=1e-3),
                                progress=False)
        f = models.make_logits_fn(model, {"params": state.params})
        res = {"clean_accuracy": float(jnp.mean(jnp.argmax(f(x), -1) == y))}
        for ce_name, ce in (("accurate", losses.cross_entropy), ("naive", naive_ce)):
            def make_loss(xx, yy, ce=ce):
                return lambda z: ce(f(z), yy)

            res[f"loss_zero_fraction_{ce_name}"] = float(jnp.mean(make_loss(x, y)(x) == 0.0))

            @jax.jit
            def rand_gaps(keys, xx, yy, make_loss=make_loss):
                lf = make_loss(xx, yy)
                return jax.vmap(lambda kk: linearity.linearity_gap(
                    lf, xx, jnp.clip(xx + random_in_ball(kk, xx.shape, eps=eps, norm="linf"),
                                     0, 1) - xx))(keys)

            # trivial baseline: best of R random deltas of the ball
            best_random = np.asarray(jnp.max(
                rand_gaps(jax.random.split(jax.random.key(7), args.random), x, y), 0))
            table = {}
            for steps, r in (grid if ce_name == "accurate" else [(50, 1)]):
                gfn = jax.jit(lambda key, xx, yy, steps=steps, r=r, make_loss=make_loss:
                              linearity.local_linearity(
                                  make_loss(xx, yy), key, xx, eps=eps, steps=steps,
                                  step_size=0.1, box=(0.0, 1.0), restarts=r,
                                  unroll=1).gamma)
                t0 = time.perf_counter()
                g = np.asarray(gfn(jax.random.key(3), x, y))
                table[(steps, r)] = (g, time.perf_counter() - t0)
            if ce_name == "accurate":  # the reference: best over all pairs and random deltas
                best = np.maximum(np.max(np.stack([v[0] for v in table.values()]), 0),
                                  best_random)
            rows = []
            for (steps, r), (g, dt) in table.items():
                ratio = g / np.maximum(best, 1e-12)
                rows.append({"steps": steps, "restarts": r, "gamma_mean": float(np.mean(g)),
                             "mean_ratio_to_best": round(float(np.mean(ratio)), 4),
                             "min_ratio_to_best": round(float(np.min(ratio)), 4),
                             "below_0.95_best": int(np.sum(ratio < 0.95)),
                             "below_best_random": int(np.sum(g < best_random)),
                             "seconds": round(dt, 2)})
            res[ce_name] = {"best_gamma_mean": float(np.mean(best)),
                            "best_random_mean": float(np.mean(best_random)),
                            "rows": rows}
        out["models"][name] = res
        print(json.dumps({name: res}), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
