"""Benchmark: training-step throughput (images/s), standard vs PGD-7 adversarial training.

Model: the MNIST CNN of Madry et al. (``robustjax.models.MnistCNN``: conv32-5×5, pool,
conv64-5×5, pool, fc1024, fc10; a local equivalent if the models package is missing), batch 128,
SGD with momentum, on a fixed batch of real MNIST digits. Each variant is jitted once; the
compile time (``lower`` + ``compile``) is reported apart from the steady state, which is
``--steps`` steps after one warm-up step, timed with ``block_until_ready`` at the end. The
variants are measured within one run, so their ratios are meaningful; absolute numbers depend on
the machine and its load.

Variants:
  standard      ``standard_objective()``.
  pgd7          ``adversarial_objective(pgd(eps=0.3, steps=7, step_size=0.1))`` with per-example
                keys (the attack ``vmap``-ped over the batch: the default).
  pgd7_batched  the same with ``per_example_keys=False`` (one attack call on the batch).

Examples::

  python experiments/benchmarks/train_throughput.py --steps 20
  python experiments/benchmarks/train_throughput.py --steps 5 --out /tmp/train_throughput.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def _model():
    try:
        from robustjax.models import MnistCNN

        return MnistCNN(), "robustjax.models.MnistCNN"
    except ImportError:  # pragma: no cover - the models package is part of the project
        import flax.linen as nn

        class LocalMnistCNN(nn.Module):
            @nn.compact
            def __call__(self, x, train=False):
                del train
                for f in (32, 64):
                    x = nn.relu(nn.Conv(f, (5, 5), padding="SAME")(x))
                    x = nn.max_pool(x, (2, 2), (2, 2))
                x = nn.relu(nn.Dense(1024)(x.reshape((x.shape[0], -1))))
                return nn.Dense(10)(x)

        return LocalMnistCNN(), "local MnistCNN"


def _attack(eps, steps, step_size):
    try:
        from robustjax.attacks import pgd

        attack = functools.partial(pgd, eps=eps, steps=steps, step_size=step_size)
        return attack, "robustjax.attacks.pgd"
    except ImportError:  # pragma: no cover

        def local_pgd(logits_fn, key, x, y):
            def loss(z):
                lg = logits_fn(z)
                return jnp.sum(jax.nn.logsumexp(lg, -1) - jnp.take_along_axis(lg, y[:, None], -1))

            z = jnp.clip(x + jax.random.uniform(key, x.shape, minval=-eps, maxval=eps), 0, 1)
            body = lambda _, z: jnp.clip(jnp.clip(  # noqa: E731
                z + step_size * jnp.sign(jax.grad(loss)(z)), x - eps, x + eps), 0, 1)
            return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, z))

        return local_pgd, "local pgd"


def _batch(batch_size):
    try:
        from robustjax.data import load_dataset

        ds = load_dataset("mnist_embedded", "train")
        x, y = ds.images[:batch_size], ds.labels[:batch_size]
    except ImportError:  # pragma: no cover
        here = os.path.dirname(os.path.abspath(__file__))
        d = np.load(os.path.join(here, "..", "..", "robustjax", "data", "_embedded",
                                 "mnist_12k.npz"))
        x = d["train_images"][:batch_size, ..., None].astype(np.float32) / 255.0
        y = d["train_labels"][:batch_size].astype(np.int32)
    return {"image": jnp.asarray(x, jnp.float32), "label": jnp.asarray(y, jnp.int32)}


def _measure(objective, state, batch, steps):
    from robustjax import training

    step = jax.jit(training.make_train_step(objective))
    key = jax.random.key(1)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, batch, key)  # warm-up
    jax.block_until_ready((state, metrics))
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch, key)
    jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - t0
    n = batch["image"].shape[0]
    return {
        "compile_s": round(compile_s, 3),
        "step_ms": round(1e3 * elapsed / steps, 3),
        "images_per_s": round(steps * n / elapsed, 1),
        "final_loss": float(metrics["loss"]),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--pgd_steps", type=int, default=7)
    parser.add_argument("--step_size", type=float, default=0.1)
    parser.add_argument("--variants", default="standard,pgd7,pgd7_batched")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    from robustjax import objectives, training

    model, model_name = _model()
    attack, attack_name = _attack(args.eps, args.pgd_steps, args.step_size)
    batch = _batch(args.batch_size)
    tx = training.make_optimizer("sgd", learning_rate=0.01, momentum=0.9)
    state = training.create_train_state(model, jax.random.key(0), (1, 28, 28, 1), tx)
    objectives = {
        "standard": training.standard_objective(),
        "pgd7": objectives.adversarial_objective(attack),
        "pgd7_batched": objectives.adversarial_objective(attack, per_example_keys=False),
    }
    results = {}
    for name in args.variants.split(","):
        results[name] = _measure(objectives[name], state, batch, args.steps)
    if "standard" in results:
        base = results["standard"]["step_ms"]
        for name, r in results.items():
            r["step_time_vs_standard"] = round(r["step_ms"] / base, 2)
    report = {
        "benchmark": "train_throughput",
        "model": model_name,
        "attack": f"{attack_name} linf eps={args.eps} steps={args.pgd_steps} "
                  f"step_size={args.step_size}",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "host": platform.node(),
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
