"""Benchmark: the attack loops' ``unroll`` default — time to first result and steady state.

For each of the library's MNIST models (``MLP`` 784-512-10, the quickstart's ``MnistCNN`` and
Madry et al.'s ``MadryCNN``, untrained weights: speed does not depend on the values), each number
of PGD steps and each unroll choice, the script jits ``attacks.pgd`` on a fixed batch of embedded
test digits and reports

* ``first_s``: time to the first result of a fresh ``jax.jit`` (trace + compile + one run), what a
  user waits for in a notebook or a one-off evaluation;
* ``steady_s``: median wall time of ``--repeats`` further calls (``block_until_ready``).

The unroll choices are ``1`` (a rolled ``fori_loop``/``scan``), ``4`` and ``True`` (the loop
fully unrolled in Python). Every variant runs within one process, so ratios are meaningful on the
machine it ran on; absolute times depend on the machine and its load (report ``uptime``).

Examples::

  python experiments/benchmarks/unroll.py --out /tmp/unroll.json
  python experiments/benchmarks/unroll.py --models mlp --steps 10 40 --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import attacks, data, models

MODELS = {
    "mlp": lambda: models.MLP(hidden=512, num_classes=10),
    "mnist_cnn": lambda: models.MnistCNN(),
    "madry_cnn": lambda: models.MadryCNN(),
}


def _logits_fn(name: str, x: np.ndarray):
    net = MODELS[name]()
    variables = net.init(jax.random.key(0), jnp.asarray(x[:1]))
    return models.make_logits_fn(net, variables)


def _time(fn, *args):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def run(model_names, steps_list, unrolls, batch, repeats, restarts):
    test = data.load_dataset("mnist_embedded", "test")
    x, y = np.asarray(test.images[:batch]), np.asarray(test.labels[:batch])
    rows = []
    for name in model_names:
        f = _logits_fn(name, x)
        for steps in steps_list:
            for unroll in unrolls:
                attack = jax.jit(lambda k, xx, yy, s=steps, u=unroll: attacks.pgd(
                    f, k, xx, yy, eps=0.3, steps=s, restarts=restarts, unroll=u))
                key = jax.random.key(0)
                first = _time(attack, key, x, y)
                steady = statistics.median(_time(attack, key, x, y) for _ in range(repeats))
                rows.append(dict(model=name, steps=steps, unroll=str(unroll), batch=batch,
                                 restarts=restarts, first_s=round(first, 3),
                                 steady_s=round(steady, 4)))
                print(f"{name:10s} steps={steps:4d} unroll={str(unroll):5s} "
                      f"first={first:7.2f}s steady={steady:7.3f}s", flush=True)
    return rows


def to_markdown(rows) -> str:
    lines = ["| model | steps | unroll | first result (s) | steady (s/call) |",
             "|---|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['steps']} | {r['unroll']} | {r['first_s']:.2f} | "
                     f"{r['steady_s']:.3f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--steps", nargs="+", type=int, default=[10, 40, 100])
    p.add_argument("--unrolls", nargs="+", default=["1", "4", "True"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="write the rows as JSON here (and .md beside)")
    a = p.parse_args()
    unrolls = [True if u == "True" else int(u) for u in a.unrolls]
    load0 = os.getloadavg()
    rows = run(a.models, a.steps, unrolls, a.batch, a.repeats, a.restarts)
    load1 = os.getloadavg()
    md = to_markdown(rows)
    print(md)
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f}")
    if a.out:
        meta = dict(jax=jax.__version__, backend=jax.default_backend(),
                    cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                    load_before=load0[0], load_after=load1[0])
        with open(a.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
