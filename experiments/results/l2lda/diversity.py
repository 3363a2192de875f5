"""Diversity check for the L2L-DA reproduction (issue 14): λ = 0.02 vs λ = 0 in min-max training.

Retrains the ``repro`` config's Plain model (same key and weights as the measured run), then runs
L2L-DA min-max training from it twice with the repro's recipe and the repro's L2L-DA key — same
initialisation, data order and step keys — once with λ = ``lambda_div`` (0.02) and once with
λ = 0, for ``--updates`` updates. For each final generator it reports, on the first
``--n_images`` test digits against its own classifier, the mean pairwise ℓ2 distance between the
perturbations of the same digit for ``--num_z`` codes (and relative to the mean ℓ2 norm of a
perturbation), the accuracy per code and the accuracy under the worst code. Writes
``diversity.json``.

Usage (from the repository root)::

    python experiments/results/l2lda/diversity.py --workdir /tmp/l2lda_diversity --updates 156
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/l2lda_diversity")
    p.add_argument("--updates", type=int, default=156)
    p.add_argument("--num_z", type=int, default=8)
    p.add_argument("--n_images", type=int, default=100)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from _repro_plain import retrain_repro_plain
    from robustjax import data
    from robustjax.models._l2l import L2LGenerator
    from robustjax.training._l2lda import create_l2lda_state, make_l2lda_step

    os.makedirs(args.workdir, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    repro = retrain_repro_plain(args.workdir, args.n_images)
    exp, config, repro_rows = repro.exp, repro.config, repro.repro_rows
    k_train = repro.k_train
    train, model, plain = repro.train, repro.model, repro.plain
    x, y = jnp.asarray(repro.test.images), jnp.asarray(repro.test.labels)
    k = jax.random.fold_in(k_train, repro_rows.index("L2L-DA"))   # the repro's L2L-DA key
    ramp = optax.linear_schedule(0.0, config.eps, config.eps_rampup_steps)
    gen = L2LGenerator(num_classes=config.num_classes, latent_dim=config.latent_dim,
                       features=tuple(config.gen_features))
    # One compile for both runs: λ is the step's traced 4th argument.
    step = jax.jit(make_l2lda_step(
        eps=config.eps, lambda_div=config.lambda_div, steps=config.l2l_steps,
        step_fraction=config.l2l_step_fraction, latent_dim=config.latent_dim,
        eps_schedule=ramp))
    out = {"updates": args.updates, "num_z": args.num_z, "n_images": args.n_images,
           "key": "repro L2L-DA row", "runs": {}}
    for lam in (config.lambda_div, 0.0):
        c0 = time.process_time()
        state = create_l2lda_state(
            model, gen, k, (config.batch_size, 28, 28, 1),
            clf_tx=optax.adam(config.learning_rate), gen_tx=optax.adam(config.gen_learning_rate),
            clf_variables=plain)
        i, epoch, div_curve = 0, 0, []
        while i < args.updates:
            kd = jax.random.fold_in(k, epoch)
            for batch in data.batches(kd, train, batch_size=config.batch_size):
                state, m = step(state, batch, jax.random.fold_in(kd, 10_000 + i),
                                jnp.float32(lam))
                i += 1
                if i % 12 == 0:
                    div_curve.append({"update": i, **{kk: float(v) for kk, v in
                                                      jax.device_get(m).items()}})
                if i >= args.updates:
                    break
            epoch += 1
        clf = {"params": state.clf_params}
        gvars = {"params": state.gen_params, "batch_stats": state.gen_batch_stats}
        logits_fn = lambda v, clf=clf: model.apply(clf, v, train=False)  # noqa: E731
        deltas = exp.perturbations_over_z(
            gen, gvars, logits_fn, x, y, eps=config.eps, num_z=args.num_z,
            latent_dim=config.latent_dim, steps=config.l2l_steps,
            step_fraction=config.l2l_step_fraction, key=jax.random.key(123))
        s = exp.diversity_stats(deltas)
        preds = np.stack([np.asarray(logits_fn(x + jnp.asarray(d))).argmax(-1) for d in deltas])
        s["accuracy_per_z_mean"] = float(np.mean(preds == np.asarray(y)[None]))
        s["accuracy_worst_over_z"] = float(np.mean(np.all(preds == np.asarray(y)[None], 0)))
        s["clean_accuracy"] = float(np.mean(np.asarray(logits_fn(x)).argmax(-1) == np.asarray(y)))
        s["training_metrics"] = div_curve
        s["cpu_s"] = time.process_time() - c0
        out["runs"][f"lambda={lam:g}"] = s
        print(f"lambda={lam:g}", {kk: v for kk, v in s.items() if kk != "training_metrics"},
              flush=True)
    out["total_wall_s"] = time.perf_counter() - t_start
    out["total_cpu_s"] = time.process_time() - c_start
    with open(os.path.join(args.workdir, "diversity.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
