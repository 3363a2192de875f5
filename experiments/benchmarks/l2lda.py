"""Benchmark: one L2L-DA training iteration vs one PGD-10 adversarial-training step.

Both on the same classifier (LeNet-5 on MNIST-shaped inputs by default) at the same batch size.
An L2L-DA iteration runs the T-step recurrence for two latent codes per example (2N inputs),
back-propagates through it for the generator, and updates the classifier on the 2N generated
examples; a PGD-10 step runs 10 attack steps and one training step on N examples.

Prints JSON: compile seconds (first call) and steady-state milliseconds per iteration (median of
``--iters`` timed calls after ``--warmup``) for each, and the ratio L2L-DA / PGD-10 measured in
this one process. The issue's target is a ratio ≤ 1.5.

    python experiments/benchmarks/l2lda.py [--batch 128] [--iters 10] [--num_steps 5]
        [--generator paper|small|tiny] [--conv_impl phase|lax|both] [--out f.json]

``l2lda_iteration`` / ``ratio_l2lda_over_pgd10`` use the first implementation timed ("lax",
the default of ``L2LGenerator``); ``l2lda_by_conv_impl`` has each one.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time


def _time(fn, warmup, iters):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return compile_s, 1e3 * statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--num_steps", type=int, default=5, help="L2L-DA recurrence length T")
    p.add_argument("--generator", choices=["paper", "small", "tiny"], default="paper",
                   help="paper: 64/64/128 channels; small: 16/16/32; tiny: 8/8/16")
    p.add_argument("--conv_impl", choices=["phase", "lax", "both"], default="both",
                   help="L2LGenerator.conv_impl of the stride-2 layers (both: time each)")
    p.add_argument("--out", type=str, default=None)
    args = p.parse_args(argv)

    import jax
    import numpy as np
    import optax

    from robustjax import attacks, data, models, training
    from robustjax.models._l2l import L2LGenerator
    from robustjax.training._l2lda import create_l2lda_state, make_l2lda_step

    ds = data.load_dataset("mnist_embedded", "train")
    batch = {"image": ds.images[: args.batch], "label": ds.labels[: args.batch]}
    key = jax.random.key(0)
    clf = models.LeNet5()
    shape = (args.batch,) + ds.images.shape[1:]

    # PGD-10 adversarial training step (Madry), eps = 0.3, step 0.03 (approx. 2.5 eps / 10 = 0.075
    # in most papers; the step size does not change the cost).
    pgd10 = functools.partial(attacks.pgd, eps=0.3, steps=10, step_size=0.075)
    state = training.create_train_state(clf, key, shape, optax.adam(1e-3))
    adv_step = jax.jit(training.make_train_step(training.adversarial_objective(pgd10)))
    pgd_compile, pgd_ms = _time(lambda: adv_step(state, batch, key)[1]["loss"], args.warmup,
                                args.iters)
    print(f"pgd10: compile {pgd_compile:.1f} s, {pgd_ms:.1f} ms/step", file=sys.stderr,
          flush=True)

    features = {"paper": (64, 64, 128), "small": (16, 16, 32), "tiny": (8, 8, 16)}
    impls = ["lax", "phase"] if args.conv_impl == "both" else [args.conv_impl]
    l2l = {}
    for impl in impls:
        gen = L2LGenerator(features=features[args.generator], conv_impl=impl)
        l2l_state = create_l2lda_state(clf, gen, key, shape, clf_tx=optax.adam(1e-3),
                                       gen_tx=optax.adam(1e-4))
        l2l_step = jax.jit(make_l2lda_step(eps=0.3, lambda_div=0.02, num_steps=args.num_steps,
                                           latent_dim=gen.latent_dim))
        c, ms = _time(lambda: l2l_step(l2l_state, batch, key)[1]["clf_loss"], args.warmup,
                      args.iters)
        l2l[impl] = {"compile_s": round(c, 3), "steady_ms": round(ms, 2),
                     "images_per_s": round(args.batch / ms * 1e3, 1),
                     "ratio_over_pgd10": round(ms / pgd_ms, 3)}
        print(f"l2lda[{impl}]: {l2l[impl]}", file=sys.stderr, flush=True)
    l2l_ms = l2l[impls[0]]["steady_ms"]
    l2l_compile = l2l[impls[0]]["compile_s"]

    result = {
        "classifier": "LeNet5",
        "generator": args.generator,
        "generator_features": features[args.generator],
        "conv_impl": impls[0],
        "batch": args.batch,
        "l2lda_T": args.num_steps,
        "devices": [str(d) for d in jax.devices()],
        "pgd10_step": {"compile_s": round(pgd_compile, 3), "steady_ms": round(pgd_ms, 2),
                       "images_per_s": round(args.batch / pgd_ms * 1e3, 1)},
        "l2lda_iteration": {"compile_s": round(l2l_compile, 3), "steady_ms": round(l2l_ms, 2),
                            "images_per_s": round(args.batch / l2l_ms * 1e3, 1)},
        "l2lda_by_conv_impl": l2l,
        "ratio_l2lda_over_pgd10": round(l2l_ms / pgd_ms, 3),
        "target_ratio": 1.5,
    }
    del np
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
