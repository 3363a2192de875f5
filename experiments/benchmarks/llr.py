r"""Cost of an LLR-k training step relative to an ADV-k (PGD-k) step with the same k.

Both steps do k inner steps plus one outer step (objective + parameter gradient + SGD update),
batch 128, a small CNN. Target: LLR-k / ADV-k <= 1.3.

Cost model (units of one forward pass F; per layer a forward, an activation-gradient and a
weight-gradient product count F each, so fwd + input-gradient = 2F, fwd + backprop = 3F):

* ADV-k: k × (fwd + input-gradient) + outer fwd + backprop = ``(2k + 3)F``.
* LLR-k: nominal ``ℓ(x), ∇ₓℓ(x)`` 2F + k inner steps 2kF + outer at ``x`` by
  reverse-over-forward (tangent along δ 1F, backprop through primal and tangent 4F; the primal
  forward is shared with the nominal pass) 5F + outer at ``x + δ`` 3F = ``(2k + 10)F``.
* Lower bound for the exact Eqn-8 gradient (reverse-over-reverse sharing the nominal
  input-gradient pass; slower in practice on XLA:CPU): ``(2k + 9)F``.

Hence LLR-k / ADV-k ≈ (2k + 10) / (2k + 3) = 2.4, 2.0, 1.64, 1.30 for k = 1, 2, 4, 10, with lower
bound (2k + 9) / (2k + 3) = 2.2, 1.86, 1.55, 1.26. 1.3× is reachable only for k ≳ 10 (bound < 1.3
needs k ≥ 9). The JSON also gives an *empirical* model from primitive timings measured in the same
run (``T_x = fwd + input-gradient``, ``T_p = fwd + backprop``, ``T_j = reverse-over-forward at x``):
ADV ≈ k·T_x + T_p, LLR ≈ (k + 1)·T_x + T_j − T_fwd + T_p.

Inner loops of both steps are fully unrolled on CPU by default (``--unroll 1`` keeps rolled
``while`` loops, which on XLA:CPU cost about 2.5x more per inner step; that inflates both steps
and makes the *ratio* look better — 1.39 at k = 2, 1.11 at k = 10 — while both run 2-3x slower).

Measured within one run: every step function is compiled first (ahead-of-time compile time
reported apart), then the LLR and ADV steps are timed alternately, ``--repeats`` rounds of
``--iters`` steps each; we report medians, the median of the per-round ratios, and the same for
process CPU time (less sensitive to other processes sharing the machine). Prints one JSON object.

    python experiments/benchmarks/llr.py                    # k in (1, 2, 4, 10)
    python experiments/benchmarks/llr.py --ks 2 --bn        # with batch norm
    python experiments/benchmarks/llr.py --unroll 1         # rolled inner loops (while loops)
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

from robustjax.losses import cross_entropy
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


def _compile(fn, *args):
    """AOT-compile ``fn`` for ``args``; returns ``(compiled, seconds)``."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _time(fn, args, iters):
    """Mean wall and process-CPU seconds per call over ``iters`` calls."""
    out = None
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / iters, (time.process_time() - c0) / iters


def _interleaved(fns: dict, args: dict, *, iters: int, repeats: int) -> dict:
    wall = {n: [] for n in fns}
    cpu = {n: [] for n in fns}
    for _ in range(repeats):
        for n, fn in fns.items():
            w, c = _time(fn, args[n], iters)
            wall[n].append(w)
            cpu[n].append(c)
    return {"wall": wall, "cpu": cpu}


def cost_model(k: int) -> dict:
    """FLOP cost model in units of forward passes F (module docstring)."""
    adv, llr, bound = 2 * k + 3, 2 * k + 10, 2 * k + 9
    return {"adv_F": adv, "llr_F": llr, "llr_lower_bound_F": bound,
            "ratio_model": round(llr / adv, 3), "ratio_lower_bound": round(bound / adv, 3)}


def _primitives(model, params, x, y, *, iters, repeats) -> dict:
    """Median wall times (s) of the passes the cost model is made of."""
    delta = 0.01 * jnp.ones_like(x)

    def loss(p, z):
        return jnp.sum(cross_entropy(model.apply({"params": p}, z), y))

    def rev_over_fwd(p, z):
        return jax.grad(lambda q: sum(jax.jvp(lambda u: loss(q, u), (z,), (delta,))))(p)

    fns = {
        "fwd": jax.jit(loss),
        "fwd+input_grad": jax.jit(jax.grad(loss, argnums=1)),
        "fwd+backprop": jax.jit(jax.grad(loss)),
        "rev_over_fwd_at_x": jax.jit(rev_over_fwd),
    }
    for fn in fns.values():
        jax.block_until_ready(fn(params, x))
    t = _interleaved(fns, {n: (params, x) for n in fns}, iters=iters, repeats=repeats)["wall"]
    return {n: statistics.median(v) for n, v in t.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 10])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--unroll", type=int, default=None,
                        help="inner-loop unroll factor for both steps (default: backend policy)")
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
    call_args = (state, batch, key)

    compiled, compile_s = {}, {}
    for k in args.ks:
        for name, obj in (
            ("llr", llr_objective(eps=0.1, lambda_=4.0, mu=3.0, steps=k, step_size=0.1,
                                  nominal_weight=2.0, unroll=args.unroll)),
            ("adv", adv_k_objective(steps=k, eps=0.1, step_size=0.1, step_rule="adam",
                                    unroll=args.unroll)),
        ):
            fn, secs = _compile(_make_step(obj), *call_args)
            jax.block_until_ready(fn(*call_args))  # warm-up
            compiled[(name, k)], compile_s[(name, k)] = fn, secs

    prims = None
    if not args.bn:
        prims = _primitives(model, state.params, x, y, iters=args.iters, repeats=args.repeats)

    results = []
    for k in args.ks:
        fns = {"llr": compiled[("llr", k)], "adv": compiled[("adv", k)]}
        t = _interleaved(fns, {n: call_args for n in fns}, iters=args.iters,
                         repeats=args.repeats)
        row = {"k": k}
        for clock in ("wall", "cpu"):
            med = {n: statistics.median(v) for n, v in t[clock].items()}
            per_round = [a / b for a, b in zip(t[clock]["llr"], t[clock]["adv"])]
            row[f"{clock}_llr_step_ms"] = round(1e3 * med["llr"], 2)
            row[f"{clock}_adv_step_ms"] = round(1e3 * med["adv"], 2)
            row[f"{clock}_ratio_of_medians"] = round(med["llr"] / med["adv"], 3)
            row[f"{clock}_median_round_ratio"] = round(statistics.median(per_round), 3)
        row["compile_s"] = {"llr": round(compile_s[("llr", k)], 2),
                            "adv": round(compile_s[("adv", k)], 2)}
        row["cost_model"] = cost_model(k)
        if prims is not None:
            adv_pred = k * prims["fwd+input_grad"] + prims["fwd+backprop"]
            llr_pred = ((k + 1) * prims["fwd+input_grad"] + prims["rev_over_fwd_at_x"]
                        - prims["fwd"] + prims["fwd+backprop"])
            row["cost_model"]["ratio_empirical_primitives"] = round(llr_pred / adv_pred, 3)
        row["meets_1.3x"] = bool(row["wall_ratio_of_medians"] <= 1.3)
        results.append(row)

    out = {
        "benchmark": "llr_vs_adv_k_step",
        "model": f"SmallCNN(batch_norm={args.bn})",
        "batch": args.batch,
        "unroll": "backend default" if args.unroll is None else args.unroll,
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "np": np.__version__,
        "results": results,
    }
    if prims is not None:
        f = prims["fwd"]
        out["primitives_ms"] = {n: round(1e3 * v, 2) for n, v in prims.items()}
        out["primitives_in_F"] = {n: round(v / f, 2) for n, v in prims.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
