"""Benchmark: a RIDE defense of a batch, vmapped, vs a Python loop of single-image runs.

Prints one JSON object. Both paths run the same per-image program (the vmapped batch equals
per-image runs with the split keys, see tests/defenses/ride_defenders_test.py); compile time is
measured apart from steady-state time, and the ratio is taken within this run.

    python experiments/benchmarks/ride.py --batch 32 --dataset mnist --steps 50 --checkpoints 4
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from robustjax.defenses import RideConfig
from robustjax.defenses import self_supervised_single
from robustjax.defenses import self_supervised_trace
from robustjax.models._ride import make_reconstruction_net
from robustjax.models._ride import ride_fcn

_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3), "imagenet": (224, 224, 3),
           "tiny": (16, 16, 1)}


def _timed(fn, *args, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="mnist", choices=sorted(_SHAPES))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50, help="K per checkpoint")
    ap.add_argument("--checkpoints", type=int, default=4, help="T")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    net = make_reconstruction_net(ride_fcn(args.dataset))
    cfg = RideConfig(num_steps=args.steps, num_checkpoints=args.checkpoints, learning_rate=1e-2)
    key = jax.random.key(0)
    x = jax.random.uniform(jax.random.key(1), (args.batch,) + _SHAPES[args.dataset])
    keys = jax.random.split(key, args.batch)

    batched = jax.jit(lambda k, v: self_supervised_trace(net, k, v, config=cfg).estimate)
    single = jax.jit(lambda k, v: self_supervised_single(net, k, v, config=cfg).estimate)

    # Compile apart: lower + compile explicitly, then time execution only.
    t0 = time.perf_counter()
    batched_c = batched.lower(key, x).compile()
    compile_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single_c = single.lower(keys[0], x[0]).compile()
    compile_single = time.perf_counter() - t0

    def loop(ks, v):
        return [single_c(ks[i], v[i]) for i in range(v.shape[0])]

    _, t_batched = _timed(batched_c, key, x, repeats=args.repeats)
    _, t_loop = _timed(loop, keys, x, repeats=args.repeats)
    # Same results either way (image i uses key split(key, B)[i]).
    out_b = batched_c(key, x)
    max_diff = float(jnp.max(jnp.abs(out_b - jnp.stack(loop(keys, x)))))

    print(json.dumps({
        "benchmark": "ride_vmap_vs_loop",
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "dataset": args.dataset,
        "batch": args.batch,
        "steps_total": args.steps * args.checkpoints,
        "compile_s": {"vmapped_batch": compile_batched, "single_image": compile_single},
        "run_s": {"vmapped_batch": t_batched, "python_loop": t_loop},
        "speedup_loop_over_vmap": t_loop / t_batched,
        "per_image_step_ms_vmapped": 1e3 * t_batched / (args.batch * args.steps * args.checkpoints),
        "max_abs_diff": max_diff,
    }, indent=2))


if __name__ == "__main__":
    main()
