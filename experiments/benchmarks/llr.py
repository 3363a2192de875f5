"""Cost of an LLR-k training step relative to an ADV-k (PGD-k) step with the same k.

Both steps do k inner steps plus one outer step; LLR additionally needs the nominal input
gradient (once, reused by every inner step) and the parameter gradient of the linear term
(reverse-over-forward). Target: LLR-k / ADV-k <= 1.3.

Measured within one run: both steps are compiled first (compile time reported apart), then timed
interleaved (median of ``--repeats`` rounds of ``--iters`` steps each). Prints one JSON object.

    python experiments/benchmarks/llr.py                 # small CNN, batch 128, k in (2, 10)
    python experiments/benchmarks/llr.py --ks 2 --bn     # with batch norm
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from robustjax.training._llr import adv_k_objective
from robustjax.training._llr import llr_objective


class SmallCNN(nn.Module):
    """Two strided 3x3 convolutions and two dense layers (MNIST-sized, optional batch norm)."""

    batch_norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        for feats in (16, 32):
            x = nn.Conv(feats, (3, 3), strides=(2, 2))(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(10)(x)


class _State(train_state.TrainState):
    batch_stats: dict = None


def _make_step(objective):
    def step(state, batch, key):
        (loss, (stats, metrics)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, state, batch, key
        )
        return state.apply_gradients(grads=grads, batch_stats=stats), loss

    return jax.jit(step)


def _time(fn, state, batch, key, iters):
    out = None
    t0 = time.perf_counter()
    for _ in range(iters):
        out = fn(state, batch, key)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bn", action="store_true", help="use batch norm in the CNN")
    args = parser.parse_args()

    model = SmallCNN(batch_norm=args.bn)
    key = jax.random.key(0)
    x = jax.random.uniform(key, (args.batch, 28, 28, 1))
    y = jax.random.randint(jax.random.key(1), (args.batch,), 0, 10)
    variables = model.init(jax.random.key(2), x[:1])
    state = _State.create(apply_fn=model.apply, params=variables["params"], tx=optax.sgd(0.01),
                          batch_stats=variables.get("batch_stats", {}))
    batch = {"image": x, "label": y}

    results = []
    for k in args.ks:
        steps = {
            "llr": _make_step(llr_objective(eps=0.1, lambda_=4.0, mu=3.0, num_steps=k,
                                            step_size=0.1, nominal_weight=2.0)),
            "adv": _make_step(adv_k_objective(k=k, eps=0.1, step_size=0.1, step_rule="adam")),
        }
        compile_s = {}
        for name, fn in steps.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(state, batch, key))
            compile_s[name] = time.perf_counter() - t0
        times = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, fn in steps.items():
                times[name].append(_time(fn, state, batch, key, args.iters))
        med = {name: statistics.median(v) for name, v in times.items()}
        ratios = [a / b for a, b in zip(times["llr"], times["adv"])]
        results.append({
            "k": k,
            "llr_step_ms": 1e3 * med["llr"],
            "adv_step_ms": 1e3 * med["adv"],
            "ratio_llr_over_adv": med["llr"] / med["adv"],
            "ratio_per_round": [round(r, 3) for r in ratios],
            "first_call_s (compile+1 step)": compile_s,
            "meets_1.3x": bool(med["llr"] / med["adv"] <= 1.3),
        })
    print(json.dumps({
        "benchmark": "llr_vs_adv_k_step",
        "model": f"SmallCNN(batch_norm={args.bn})",
        "batch": args.batch,
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "np": np.__version__,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
