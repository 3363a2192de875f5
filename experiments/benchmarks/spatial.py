"""Benchmark: spatial-robustness primitives (warp, flow loss, lower-bound attack, SDP dual, stAdv).

Prints one JSON object. For each jitted function the first call (trace + compile + run) is
reported apart from the steady-state time (median of ``--reps`` calls). Ratios are measured
within this run only (e.g. warp forward+backward relative to a plain MLP forward+backward on the
same batch), never across runs.

Examples::

  python experiments/benchmarks/spatial.py --quick
  python experiments/benchmarks/spatial.py --batch 256 --hidden 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _log(msg: str) -> None:
    print(f"[spatial bench] {msg}", file=sys.stderr, flush=True)


def _time(fn, *args, reps: int):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return {"first_call_s": first, "steady_s": statistics.median(ts)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.hidden, args.reps = 32, 64, 3

    from robustjax import certify as C
    from robustjax import spatial as S
    from robustjax.attacks._stadv import stadv

    n, h, w = args.batch, 28, 28
    key = jax.random.key(0)
    x = jax.random.uniform(key, (n, h, w, 1))
    flow = jax.random.normal(jax.random.fold_in(key, 1), (n, h, w, 2))
    k1, k2 = jax.random.split(jax.random.fold_in(key, 2))
    w1 = jax.random.normal(k1, (h * w, args.hidden)) / 28.0
    w2 = jax.random.normal(k2, (args.hidden, 10)) / np.sqrt(args.hidden)

    def logits_fn(xx):
        return jax.nn.relu(xx.reshape(xx.shape[0], -1) @ w1) @ w2

    out = {"device": str(jax.devices()[0]), "batch": n, "hidden": args.hidden}

    mlp_fb = jax.jit(jax.grad(lambda xx: jnp.sum(logits_fn(xx))))
    warp_fb = jax.jit(jax.grad(lambda ff: jnp.sum(S.warp(x, ff)), argnums=0))
    fl = jax.jit(jax.grad(lambda ff: jnp.sum(S.flow_loss(ff, form="stadv"))))
    _log("mlp/warp")
    out["mlp_fwd_bwd"] = _time(mlp_fb, x, reps=args.reps)
    out["warp_fwd_bwd_flow"] = _time(warp_fb, flow, reps=args.reps)
    out["flow_loss_grad"] = _time(fl, flow, reps=args.reps)
    out["ratio_warp_over_mlp"] = (out["warp_fwd_bwd_flow"]["steady_s"]
                                  / out["mlp_fwd_bwd"]["steady_s"])

    t0 = time.perf_counter()
    S.tv_factors(h, w)
    out["tv_factors_28x28_host_s"] = time.perf_counter() - t0

    hid = args.hidden
    wl = jax.random.normal(k1, (hid, h * w)) / 28.0
    vl = jax.random.normal(k2, (hid,))
    steps = 5 if args.quick else 20
    _log("alg1")
    alg1 = jax.jit(lambda ww, vv: C.one_hidden_lower_bound(ww, vv, shape=(h, w), eps=1.0,
                                                           steps=steps))
    out["algorithm1"] = _time(alg1, wl, vl, reps=max(1, args.reps // 2))
    res = alg1(wl, vl)
    out["algorithm1"]["steps"] = steps
    out["algorithm1"]["loss"] = float(res.loss)
    out["algorithm1"]["init_linear"] = float(res.init_linear)
    out["algorithm1"]["history"] = [float(v) for v in res.history]

    lam = S.aabb_radii(h, w)
    p = C.sdp_matrix(wl, vl, lam)
    _log("dual")
    dsteps = 3 if args.quick else 20
    dual = jax.jit(lambda pp: C.optimize_dual(pp, steps=dsteps))
    t0 = time.perf_counter()
    c_opt, bound = jax.block_until_ready(dual(p))
    out["sdp_dual"] = {"first_call_s": time.perf_counter() - t0, "steps": dsteps,
                       "n": int(p.shape[0]), "bound": float(bound)}
    reg = jax.jit(jax.grad(lambda ww: C.sdp_dual_bound(C.sdp_matrix(ww, vl, lam), c_opt)))
    out["sdp_dual_regulariser_grad"] = _time(reg, wl, reps=1)

    _log("y")
    y = jnp.argmax(logits_fn(x), -1)
    for opt, st in (("adam", 20), ("lbfgs", 5)):
        att = jax.jit(lambda kk, xx, yy, opt=opt, st=st: stadv(logits_fn, kk, xx, yy,
                                                                optimizer=opt, steps=st))
        r = _time(att, key, x, y, reps=max(1, args.reps // 2))
        r["steps"] = st
        r["per_step_over_mlp_fwd_bwd"] = (r["steady_s"] / st) / out["mlp_fwd_bwd"]["steady_s"]
        out[f"stadv_{opt}"] = r
        _log(f"stadv {opt} done")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
