"""Evidence for the L2L-DA reproduction (issue 14): robustness during training.

Retrains the ``repro`` config's Plain model (same key, same weights as the measured run) and then,
from it, the robust rows named by ``--rows`` with the ``repro`` recipe (batch 64, ε ramped over
the first ``eps_rampup_steps`` updates, Adam 1e-3), evaluating every ``--eval_every`` updates on
the first ``--n_eval`` test digits:

The min-max rows use the repro's keys (same initialisation, data order and step keys), so their
last point is the repro's classifier; the PGD10 row is a re-run of the same recipe with a
hand-written loop (its data order differs from ``training.fit``'s).

* clean accuracy and accuracy under PGD-10 (the table's PGD10 column: sign steps of 2.5·ε/10
  from a random start) — is the row still getting more robust, and how fast?
* for the min-max rows, accuracy under the row's **own** co-trained generator at that moment
  (the attack the classifier is trained on, run as at test time) and the mean ℓ2 norm of its
  perturbations beside PGD-10's — does the classifier beat its generator without becoming
  robust to PGD?

Variants (``--rows``): ``PGD10``, ``L2L-DA`` (the repro's), ``L2L*``, and ablations
``L2L-DA/lr3e-3`` (generator learning rate 3e-3), ``L2L-DA/T10`` (T = 10 steps of 0.25·ε
instead of 5 of 0.5·ε) and ``L2L-DA/paper_gen`` (the supplement's 64/64/128 generator channels
instead of the repro's 8/8/16). Writes ``evidence.json`` and ``evidence.png``.

Usage (from the repository root)::

    python experiments/results/l2lda/evidence.py --workdir /tmp/l2lda_evidence \
        --rows PGD10,L2L-DA --updates 468 --eval_every 39
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, EXPERIMENTS)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/l2lda_evidence")
    p.add_argument("--rows", default="PGD10,L2L-DA")
    p.add_argument("--updates", type=int, default=468)
    p.add_argument("--eval_every", type=int, default=39)
    p.add_argument("--n_eval", type=int, default=500)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from _repro_plain import retrain_repro_plain
    from robustjax import attacks, data, objectives, training
    from robustjax.attacks._l2l import l2l_attack
    from robustjax.models._l2l import L2LGenerator
    from robustjax.projections import per_example_norm
    from robustjax.training._l2l_baselines import make_l2l_star_step
    from robustjax.training._l2lda import (create_l2lda_state, l2lda_generator_fn,
                                           make_l2lda_step)

    os.makedirs(args.workdir, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    # The repro run's Plain model: same key derivation as train_and_evaluate / train_rows.
    repro = retrain_repro_plain(args.workdir, args.n_eval)
    config, repro_rows, k_train = repro.config, repro.repro_rows, repro.k_train
    train, model, plain = repro.train, repro.model, repro.plain
    xt, yt = jnp.asarray(repro.test.images), jnp.asarray(repro.test.labels)
    eps = config.eps
    ramp = optax.linear_schedule(0.0, eps, config.eps_rampup_steps)

    def logits(v, x):
        return model.apply(v, x, train=False)

    pgd10 = jax.jit(lambda v, k, x, y: attacks.pgd(
        functools.partial(logits, v), k, x, y, eps=eps, steps=10,
        step_size=config.pgd_step_factor * eps / 10, random_start=True))
    acc = jax.jit(lambda v, x, y: jnp.mean(jnp.argmax(logits(v, x), -1) == y))
    l2norm = jax.jit(lambda d: jnp.mean(per_example_norm(d, norm="l2")))

    def evaluate(v, k, gen=None, t_steps=None, frac=None):
        x_adv = pgd10(v, k, xt, yt)
        rec = {"clean": float(acc(v, xt, yt)), "pgd10": float(acc(v, x_adv, yt)),
               "pgd10_mean_l2": float(l2norm(x_adv - xt))}
        if gen is not None:
            net, gv = gen
            gfn = l2lda_generator_fn(net.apply, gv)
            xg = jax.jit(lambda kk: l2l_attack(
                functools.partial(logits, v), kk, xt, yt, generator_fn=gfn, eps=eps,
                latent_dim=config.latent_dim, steps=t_steps, step_fraction=frac))(k)
            rec["own_generator"] = float(acc(v, xg, yt))
            rec["own_generator_mean_l2"] = float(l2norm(xg - xt))
        return rec

    out = {"config": "repro", "updates": args.updates, "eval_every": args.eval_every,
           "n_eval": args.n_eval, "plain": evaluate(plain, jax.random.key(99)), "rows": {}}
    print("Plain", out["plain"], flush=True)
    for row in args.rows.split(","):
        base = row.partition("/")[0]
        # The repro's key for this row (train_rows: fold_in(key, index in config.rows)), so the
        # L2L-DA / L2L* curves end at the repro's classifiers (same init, data order and step
        # keys as _fit_minmax); an ablation variant shares its base row's key.
        k = jax.random.fold_in(k_train, repro_rows.index(base))
        c0 = time.process_time()
        curve = []
        _, _, variant = row.partition("/")
        t_steps, frac, gen_lr = config.l2l_steps, config.l2l_step_fraction, config.gen_learning_rate
        gen_features = tuple(config.gen_features)
        if variant == "lr3e-3":
            gen_lr = 3e-3
        elif variant == "T10":
            t_steps, frac = 10, 0.25
        elif variant == "paper_gen":
            gen_features = (64, 64, 128)  # supplement A.1's channel widths
        elif variant:
            raise ValueError(f"unknown variant {variant!r}")
        if base == "PGD10":
            tx = training.make_optimizer("adam", learning_rate=config.learning_rate)
            state = training.create_train_state(model, k, (1, 28, 28, 1), tx)
            state = state.replace(params=plain["params"], opt_state=tx.init(plain["params"]))
            attack = functools.partial(attacks.pgd, steps=10, random_start=True)
            step = jax.jit(training.make_train_step(
                objectives.adversarial_objective(attack, eps_schedule=ramp)))

            def variables(s):
                return {"params": s.params}

            def gen_of(s):
                return None
        else:
            gen = L2LGenerator(num_classes=config.num_classes, latent_dim=config.latent_dim,
                               features=gen_features)
            state = create_l2lda_state(
                model, gen, k, (config.batch_size, 28, 28, 1),
                clf_tx=optax.adam(config.learning_rate), gen_tx=optax.adam(gen_lr),
                clf_variables=plain)
            if base == "L2L*":
                t_steps, frac = 1, 1.0
                step = jax.jit(make_l2l_star_step(eps=eps, latent_dim=config.latent_dim,
                                                  eps_schedule=ramp))
            else:
                step = jax.jit(make_l2lda_step(
                    eps=eps, lambda_div=config.lambda_div, steps=t_steps, step_fraction=frac,
                    latent_dim=config.latent_dim, eps_schedule=ramp))

            def variables(s):
                return {"params": s.clf_params}

            def gen_of(s, gen=gen):
                return gen, {"params": s.gen_params, "batch_stats": s.gen_batch_stats}
        i, epoch, window = 0, 0, []
        while i < args.updates:
            kd = jax.random.fold_in(k, epoch)
            for batch in data.batches(kd, train, batch_size=config.batch_size):
                state, m = step(state, batch, jax.random.fold_in(kd, 10_000 + i))
                window.append(m)
                i += 1
                if i % args.eval_every == 0 or i == args.updates:
                    host = jax.device_get(window)
                    train_m = {kk: float(np.mean([w[kk] for w in host])) for kk in host[0]}
                    window = []
                    rec = {"update": i, "eps": float(ramp(i)),
                           "train": train_m,
                           **evaluate(variables(state), jax.random.fold_in(k, i),
                                      gen_of(state), t_steps, frac)}
                    curve.append(rec)
                    print(row, json.dumps(rec), flush=True)
                if i >= args.updates:
                    break
            epoch += 1
        # Final classifier: PGD-100 (the table's column) and APGD-CE (AutoAttack's first member,
        # 100 iterations) on the same digits: how much of the PGD robustness survives APGD?
        v = variables(state)
        fin = jax.random.fold_in(k, 777)
        x100 = jax.jit(lambda kk: attacks.pgd(
            functools.partial(logits, v), kk, xt, yt, eps=eps, steps=100,
            step_size=config.pgd_step_factor * eps / 100, random_start=True, unroll=1))(fin)
        xa = jax.jit(lambda kk: attacks.apgd(functools.partial(logits, v), kk, xt, yt, eps=eps,
                                             steps=100, loss="ce"))(fin)
        final = {"pgd100": float(acc(v, x100, yt)), "apgd_ce": float(acc(v, xa, yt))}
        print(row, "final", final, flush=True)
        out["rows"][row] = {"curve": curve, "final": final, "cpu_s": time.process_time() - c0,
                            "T": t_steps, "step_fraction": frac, "gen_learning_rate": gen_lr,
                            "gen_features": list(gen_features)}
        with open(os.path.join(args.workdir, "evidence.json"), "w") as f:
            json.dump(out, f, indent=1)
    out["total_wall_s"] = time.perf_counter() - t_start
    out["total_cpu_s"] = time.process_time() - c_start
    with open(os.path.join(args.workdir, "evidence.json"), "w") as f:
        json.dump(out, f, indent=1)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for row, r in out["rows"].items():
        u = [c["update"] for c in r["curve"]]
        (line,) = ax1.plot(u, [c["pgd10"] for c in r["curve"]], marker="o", ms=3,
                           label=f"{row}: PGD-10")
        if "own_generator" in r["curve"][0]:
            ax1.plot(u, [c["own_generator"] for c in r["curve"]], ls="--",
                     color=line.get_color(), label=f"{row}: own generator")
            ax2.plot(u, [c["own_generator_mean_l2"] for c in r["curve"]], ls="--",
                     color=line.get_color(), label=f"{row}: own generator")
        ax2.plot(u, [c["pgd10_mean_l2"] for c in r["curve"]], color=line.get_color(),
                 label=f"{row}: PGD-10")
    ax1.set_xlabel("update (batch 64; ε ramp over the first "
                   f"{config.eps_rampup_steps})")
    ax1.set_ylabel(f"test accuracy ({args.n_eval} digits)")
    ax1.set_ylim(0, 1)
    ax1.legend(fontsize=7)
    ax2.set_xlabel("update")
    ax2.set_ylabel("mean ℓ2 of the perturbation")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.workdir, "evidence.png"), dpi=80)
    print(f"total {out['total_wall_s']:.0f} s wall, {out['total_cpu_s']:.0f} s CPU")


if __name__ == "__main__":
    main()
