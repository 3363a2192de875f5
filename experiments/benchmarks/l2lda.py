"""Benchmark: one L2L-DA training iteration vs one PGD-10 adversarial-training step.

Both on the same classifier at the same batch size N: LeNet-5 on MNIST digits (default) or
ResNet-20 on CIFAR-shaped synthetic data (``--classifier resnet20 --dataset-shape 32x32x3``).
An L2L-DA iteration (:func:`robustjax.objectives.make_l2lda_step`) runs the T-step recurrence for
two latent codes per example (2N rows), back-propagates through it for the generator, and
updates the classifier on the 2N generated examples; a PGD-10 step runs 10 attack steps and one
training step on N examples.

Cost model (per image; ``F`` = classifier forward, ``G`` = generator forward, ``B`` =
back-propagated recurrence steps, ``B = T`` by default; see ``make_l2lda_step``)::

    L2L-DA iteration  = (4T + 4)·F + (2T + 4B)·G
    PGD-k step        = (2k + 3)·F            (23·F for PGD-10)
    ratio             = (4T + 4 + (2T + 4B)·G/F) / 23

The script measures ``F`` and ``G`` per image with XLA's cost analysis (FLOPs of one jitted
forward pass) and prints the model's ratio next to the measured one.

Prints JSON: compile seconds (first call, apart) and steady-state milliseconds (median of
``--iters`` timed calls) for the PGD-10 step (timed before *and* after the L2L-DA runs; the
median of all its calls is used, to damp drift on a shared machine) and for L2L-DA at each
``--num_steps`` value, all in this one process; the ratios L2L-DA / PGD-10; the issue's target
is a ratio ≤ 1.5.

    python experiments/benchmarks/l2lda.py [--classifier lenet5|resnet20]
        [--dataset-shape 28x28x1|32x32x3] [--batch 16] [--iters 3] [--num_steps 1,2,3,5]
        [--backprop_steps B] [--generator paper|small|tiny] [--conv_impl lax|phase|both]
        [--out f.json]
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
    return compile_s, [1e3 * t for t in times]


def _flops(jitted, *args):
    """FLOPs of one call according to XLA's cost analysis (``None`` if unavailable)."""
    try:
        ca = jitted.lower(*args).compile().cost_analysis()
    except Exception:  # noqa: BLE001 - cost analysis is best effort
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float(ca.get("flops", 0.0)) if ca else None


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classifier", choices=["lenet5", "resnet20"], default="lenet5")
    p.add_argument("--dataset-shape", "--dataset_shape", dest="dataset_shape", default=None,
                   help="HxWxC; default 28x28x1 (MNIST digits) for lenet5, 32x32x3 "
                        "(synthetic CIFAR-shaped data) for resnet20")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--num_steps", type=str, default="5",
                   help="comma-separated L2L-DA recurrence lengths T, e.g. 1,2,3,5")
    p.add_argument("--backprop_steps", type=int, default=None,
                   help="truncated back-propagation through the last B steps (default: all)")
    p.add_argument("--generator", choices=["paper", "small", "tiny"], default="paper",
                   help="paper: 64/64/128 channels; small: 16/16/32; tiny: 8/8/16")
    p.add_argument("--conv_impl", choices=["phase", "lax", "both"], default="lax",
                   help="L2LGenerator.conv_impl of the stride-2 layers; 'both' also times the "
                        "generator's forward+backward alone with each")
    p.add_argument("--eps", type=float, default=None, help="default 0.3 (28x28x1), 8/255")
    p.add_argument("--out", type=str, default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from robustjax import attacks, data, models, objectives, training
    from robustjax.models._l2l import L2LGenerator
    from robustjax.training._l2lda import (create_l2lda_state, l2lda_cost_model,
                                           make_l2lda_step)

    shape_s = args.dataset_shape or ("28x28x1" if args.classifier == "lenet5" else "32x32x3")
    hwc = tuple(int(v) for v in shape_s.lower().split("x"))
    if len(hwc) != 3:
        raise ValueError(f"--dataset-shape must be HxWxC, got {shape_s!r}")
    eps = args.eps if args.eps is not None else (0.3 if hwc[-1] == 1 else 8 / 255)
    if hwc == (28, 28, 1):
        ds = data.load_dataset("mnist_embedded", "train")
        images, labels = ds.images[: args.batch], ds.labels[: args.batch]
        data_name = "mnist_embedded"
    else:
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 1, size=(args.batch,) + hwc).astype(np.float32)
        labels = rng.integers(0, 10, size=args.batch).astype(np.int32)
        data_name = "synthetic"
    batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
    key = jax.random.key(0)
    clf = models.LeNet5() if args.classifier == "lenet5" else models.ResNet20(num_classes=10)
    shape = (args.batch,) + hwc
    features = {"paper": (64, 64, 128), "small": (16, 16, 32), "tiny": (8, 8, 16)}
    t_values = [int(v) for v in args.num_steps.split(",")]

    # Per-image forward FLOPs (XLA cost analysis) and forward times of F and G.
    cvars = clf.init(key, batch["image"], train=False)
    fwd_f = jax.jit(lambda v, xx: clf.apply(v, xx, train=False))
    gen0 = L2LGenerator(features=features[args.generator], conv_impl="lax")
    zz = jnp.zeros((args.batch, gen0.latent_dim))
    gvars = gen0.init(key, batch["image"], batch["image"], batch["image"], zz, batch["label"])
    x = batch["image"]
    flops_f = _flops(fwd_f, cvars, x)
    # G counted on the "lax" form: the "phase" form multiplies zero taps of the padded
    # deconvolution kernels (~1.6x the FLOPs, reported too) but runs faster on CPU.
    flops_g = _flops(jax.jit(lambda v, xx: gen0.apply(v, xx, xx, xx, zz, batch["label"])),
                     gvars, x)
    fwd_g = {}
    for impl in (["lax", "phase"] if args.conv_impl == "both" else [args.conv_impl]):
        g = L2LGenerator(features=features[args.generator], conv_impl=impl)
        fwd_g[impl] = jax.jit(lambda v, xx, gg=g: gg.apply(v, xx, xx, xx, zz, batch["label"]))
    flops_g_phase = _flops(jax.jit(lambda v, xx: L2LGenerator(
        features=features[args.generator], conv_impl="phase").apply(
            v, xx, xx, xx, zz, batch["label"])), gvars, x)
    _, tf = _time(lambda: fwd_f(cvars, x), 1, args.iters)
    per_image = {"F_mflop": None if flops_f is None else round(flops_f / args.batch / 1e6, 3),
                 "G_mflop": None if flops_g is None else round(flops_g / args.batch / 1e6, 3),
                 "G_phase_form_mflop": (None if flops_g_phase is None
                                        else round(flops_g_phase / args.batch / 1e6, 3)),
                 "F_fwd_ms": round(statistics.median(tf), 3)}
    gen_over_clf = (flops_g / flops_f) if flops_f and flops_g else None
    per_image["G_over_F_flops"] = None if gen_over_clf is None else round(gen_over_clf, 2)
    gen_fwdbwd = {}
    for impl, fn in fwd_g.items():
        _, tg = _time(lambda fn=fn: fn(gvars, x), 1, args.iters)
        per_image[f"G_fwd_ms[{impl}]"] = round(statistics.median(tg), 3)
        if args.conv_impl == "both":
            gimpl = L2LGenerator(features=features[args.generator], conv_impl=impl)
            fb = jax.jit(jax.grad(lambda v, xx, gg=gimpl: jnp.sum(
                gg.apply(v, xx, xx, xx, zz, batch["label"]) ** 2)))
            c, tb = _time(lambda fb=fb: fb(gvars, x), 0, args.iters)
            gen_fwdbwd[impl] = {"compile_s": round(c, 2),
                                "steady_ms": round(statistics.median(tb), 2)}
    _log(f"per image: {per_image}; generator fwd+bwd: {gen_fwdbwd}")

    # PGD-10 adversarial training step (Madry), step 2.5 eps / 10.
    pgd10 = functools.partial(attacks.pgd, eps=eps, steps=10, step_size=0.25 * eps)
    state = training.create_train_state(clf, key, shape, optax.adam(1e-3))
    adv_step = jax.jit(training.make_train_step(objectives.adversarial_objective(pgd10)))
    pgd_compile, pgd_times = _time(lambda: adv_step(state, batch, key)[1]["loss"], args.warmup,
                                   args.iters)
    _log(f"pgd10: compile {pgd_compile:.1f} s, {statistics.median(pgd_times):.1f} ms/step")

    impl = "lax" if args.conv_impl == "both" else args.conv_impl
    gen = L2LGenerator(features=features[args.generator], conv_impl=impl)
    l2l_state = create_l2lda_state(clf, gen, key, shape, clf_tx=optax.adam(1e-3),
                                   gen_tx=optax.adam(1e-4))
    lam = 0.02 if hwc[-1] == 1 else 0.5
    l2l = {}
    for t in t_values:
        l2l_step = jax.jit(make_l2lda_step(eps=eps, lambda_div=lam, steps=t,
                                           latent_dim=gen.latent_dim,
                                           backprop_steps=args.backprop_steps))
        c, times = _time(lambda s=l2l_step: s(l2l_state, batch, key)[1]["clf_loss"],
                         args.warmup, args.iters)
        l2l[t] = {"compile_s": round(c, 2), "times_ms": [round(v, 1) for v in times]}
        _log(f"l2lda T={t}: compile {c:.1f} s, {statistics.median(times):.1f} ms/iteration")

    _, pgd_times2 = _time(lambda: adv_step(state, batch, key)[1]["loss"], 0, args.iters)
    pgd_ms = statistics.median(pgd_times + pgd_times2)
    for t, r in l2l.items():
        ms = statistics.median(r["times_ms"])
        r["steady_ms"] = round(ms, 1)
        r["ratio_over_pgd10"] = round(ms / pgd_ms, 3)
        if gen_over_clf is not None:
            r["model_ratio"] = round(l2lda_cost_model(
                steps=t, gen_over_clf=gen_over_clf,
                backprop_steps=args.backprop_steps)["ratio"], 3)
        r["meets_target"] = bool(ms / pgd_ms <= 1.5)

    result = {
        "classifier": args.classifier,
        "dataset_shape": hwc,
        "data": data_name,
        "eps": eps,
        "generator": args.generator,
        "generator_features": features[args.generator],
        "conv_impl": impl,
        "batch": args.batch,
        "backprop_steps": args.backprop_steps,
        "devices": [str(d) for d in jax.devices()],
        "cost_model": "L2L-DA = (4T+4)F + (2T+4B)G; PGD-10 = 23F; ratio = "
                      "(4T+4+(2T+4B)G/F)/23 (per image; F, G one forward; B = T unless "
                      "--backprop_steps)",
        "per_image": per_image,
        "generator_fwd_bwd_by_conv_impl": gen_fwdbwd,
        "pgd10_step": {"compile_s": round(pgd_compile, 2), "steady_ms": round(pgd_ms, 1),
                       "times_ms_before": [round(v, 1) for v in pgd_times],
                       "times_ms_after": [round(v, 1) for v in pgd_times2]},
        "l2lda_by_T": {str(t): r for t, r in l2l.items()},
        "target_ratio": 1.5,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
