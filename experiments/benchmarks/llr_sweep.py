r"""Short hyperparameter sweep for the LLR gradient-obfuscation study on MNIST (ε = 0.3).

Trains one model per ``--runs`` entry with the ``obfuscation`` config of ``experiments/llr.py``
(same model, data, optimizer, ε ramp, inner step) and evaluates it cheaply on the first
``--num-test`` test digits: clean accuracy, FGSM, a short Untargeted Adam-PGD (F.1 schedule),
a short Multi-Targeted attack and γ(ε, x). It also prints the last training metrics, so that the
collapse hypothesis of issue 15 (μ·|δᵀ∇ℓ| dwarfing the nominal loss) can be read off the
``linear_term`` and ``nominal_loss`` columns. One JSON line per run.

Run spec: ``method:k[:key=value...]`` with method ``adv``/``llr``/``trades`` and keys
``lam, mu, w`` (LLR λ, μ, nominal weight), ``beta`` (TRADES), ``step`` (inner step size), ``tstep`` (TRADES' sign-step size),
``epochs``::

    python experiments/benchmarks/llr_sweep.py --runs adv:1 adv:2 llr:2:lam=4:mu=0.5:w=2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import _common  # noqa: E402


def _parse(spec: str) -> dict:
    parts = spec.split(":")
    out = {"method": parts[0], "k": int(parts[1])}
    for p in parts[2:]:
        k, v = p.split("=")
        out[k] = float(v)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--variant", default="obfuscation")
    ap.add_argument("--num-test", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--eval-steps", type=int, default=40)
    ap.add_argument("--mt-steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ramp", type=float, default=None, help="eps ramp in epochs")
    ap.add_argument("--model", default=None, help="override config.model (mlp, cnn)")
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--kernel", type=int, default=None, help="cnn kernel size")
    ap.add_argument("--features", type=int, nargs=2, default=None, help="cnn channels")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--schedule", default=None, help="constant, cosine, piecewise")
    ap.add_argument("--eps", type=float, default=None, help="override config.eps (ℓ∞ radius)")
    ap.add_argument("--activation", default=None, help="override config.activation")
    args = ap.parse_args(argv)

    import jax
    import numpy as np

    from robustjax import data, evaluation, models, training
    from robustjax.evaluation import _protocols

    llr = _common.load_experiment("llr")
    for spec in args.runs:
        run = _parse(spec)
        config = _common.load_config("llr", args.variant)
        config.seed = args.seed
        if "lam" in run:
            config.llr_lambda = run["lam"]
        if "mu" in run:
            config.llr_mu = run["mu"]
        if "w" in run:
            config.llr_nominal_weight = run["w"]
        if "beta" in run:
            config.trades_beta = run["beta"]
        if "step" in run:
            config.inner_step_size = run["step"]
        if "tstep" in run:
            config.trades_step_size = run["tstep"]
        if args.epochs is not None:
            config.num_epochs = args.epochs
        if args.model is not None:
            config.model = args.model
        if args.hidden is not None:
            config.hidden = args.hidden
        if args.lr is not None:
            config.learning_rate = args.lr
        if args.ramp is not None:
            config.eps_ramp_epochs = args.ramp
        if args.kernel is not None:
            config.kernel_size = args.kernel
        if args.features is not None:
            config.features = tuple(args.features)
        if args.batch is not None:
            config.batch_size = args.batch
        if args.schedule is not None:
            config.schedule = args.schedule
        if args.eps is not None:
            config.eps = args.eps
        if args.activation is not None:
            config.activation = args.activation
        if "ramp" in run:
            config.eps_ramp_epochs = run["ramp"]
        if "epochs" in run:
            config.num_epochs = int(run["epochs"])
        model = llr._model(config)
        train = data.subset(data.load_dataset(config.dataset, "train"),
                            slice(0, config.num_train))
        test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, args.num_test))
        spe = len(train.labels) // config.batch_size
        tx = training.make_optimizer(
            config.optimizer, learning_rate=config.learning_rate, schedule=config.schedule,
            total_steps=spe * config.num_epochs, decay_boundaries=tuple(config.decay_boundaries),
            momentum=config.momentum, weight_decay=config.weight_decay)
        t0, c0 = time.perf_counter(), time.process_time()
        state, history = training.fit(
            model, llr._objective(config, run["method"], run["k"], spe), train,
            key=jax.random.key(config.seed), epochs=config.num_epochs,
            batch_size=config.batch_size, tx=tx, progress=False, log_every=25)
        t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
        variables = {"params": state.params}
        logits_fn = models.make_logits_fn(model, variables)
        suite = _protocols.llr_evaluation_attacks(
            logits_fn, eps=config.eps, steps=args.eval_steps, restarts=1,
            multi_targeted_steps=args.mt_steps, multi_targeted_restarts=1,
            include=("FGSM", "Untargeted", "Multi-Targeted"), unroll=1)
        t0 = time.perf_counter()
        rep = evaluation.robustness_report(logits_fn, test.images, test.labels, suite,
                                           key=jax.random.key(1), batch_size=args.num_test,
                                           progress=False)
        config.gamma_steps = 20
        config.gamma_restarts = 2
        config.eval_unroll = 1
        g = llr._gamma(logits_fn, jax.random.key(2), test.images, test.labels, config)
        t_eval = time.perf_counter() - t0
        curve = [{k: round(float(v), 4) for k, v in r.items()
                  if k in ("step", "loss", "nominal_loss", "linear_term", "gamma", "accuracy",
                           "adv_accuracy", "eps")} for r in history["train"]]
        out = {"run": spec, "nominal": rep.clean_accuracy,
               **{k: round(v, 4) for k, v in rep.robust_accuracy.items()},
               "sqrt_gamma_mean": float(np.mean(np.sqrt(np.maximum(g, 0)))),
               "gamma_median": float(np.median(g)),
               "train_s": round(t_train, 1), "train_cpu_s": round(c_train, 1),
               "eval_s": round(t_eval, 1), "last": curve[-1] if curve else {},
               "curve": curve[:: max(1, len(curve) // 6)],
               "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
