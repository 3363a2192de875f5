"""Benchmark: spatial-robustness primitives (warp, flow loss, lower-bound attack, SDP dual, stAdv).

Prints one JSON object. For each jitted function the first call (trace + compile + run) is
reported apart from the steady-state time (median and min of ``--reps`` calls). Ratios are
measured within this run only (e.g. warp forward+backward relative to a plain MLP
forward+backward on the same batch), never across runs. Inputs are the first ``--batch``
embedded MNIST test digits (28x28).

Targets (issue): warp forward+backward throughput (images/s); an stAdv Adam step costs at most
1.5x one classifier forward+backward (``stadv_adam.per_step_over_classifier_step``: the same
Adam loop on the classifier alone, i.e. what warping + the flow loss add); the SDP dual bound
(Burer-Monteiro multipliers, :func:`robustjax.certify.optimize_dual_bm`) within 1 % of
cvxpy/SCS at ``n = 300`` and at least 10x faster (``sdp_n300``).

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
    return {"first_call_s": first, "steady_s": statistics.median(ts), "min_s": min(ts)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--scs-eps", type=float, default=1e-4)
    ap.add_argument("--skip-scs", action="store_true")
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
    from robustjax import data

    ds = data.load_dataset("mnist_embedded", "test")
    x = jnp.asarray(ds.images[:n])
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
    out["warp_fwd_bwd_images_per_s"] = n / out["warp_fwd_bwd_flow"]["steady_s"]

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
    out["algorithm1"]["history_first_last"] = [float(res.history[0]), float(res.history[-1])]

    lam = S.aabb_radii(h, w)
    p = C.sdp_matrix(wl, vl, lam)
    _log("dual")
    dsteps = 20 if args.quick else 100
    dual = jax.jit(lambda pp: C.optimize_dual_bm(pp, jax.random.key(0), split=hid,
                                                 steps=dsteps))
    out["sdp_dual_bm"] = _time(dual, p, reps=max(1, args.reps // 2))
    c_opt, bound = dual(p)
    out["sdp_dual_bm"].update(steps=dsteps, n=int(p.shape[0]), bound=float(bound))
    reg = jax.jit(jax.grad(lambda ww: C.sdp_dual_bound(C.sdp_matrix(ww, vl, lam), c_opt)))
    out["sdp_dual_regulariser_grad"] = _time(reg, wl, reps=1)

    # SDP at n = 300 (h = 100 hidden units, 10x20 image): dual bound vs cvxpy/SCS.
    _log("sdp n=300")
    k3, k4 = jax.random.split(jax.random.fold_in(key, 3))
    w3 = jax.random.normal(k3, (100, 200)) / np.sqrt(200.0)
    v3 = jax.random.normal(k4, (100,))
    p3 = C.sdp_matrix(w3, v3, S.aabb_radii(10, 20))
    bm = jax.jit(lambda pp: C.optimize_dual_bm(pp, jax.random.key(0), split=100, steps=200))
    r = _time(bm, p3, reps=args.reps)
    c3, b3 = bm(p3)
    r.update(n=int(p3.shape[0]), bound=float(b3),
             check_sdp_dual_bound_at_c=float(C.sdp_dual_bound(p3, c3)))
    if not args.skip_scs:
        _log("scs (slow)")
        val, info = C.sdp_bound(np.asarray(p3), eps_abs=args.scs_eps, eps_rel=args.scs_eps)
        r.update(scs_value=val, scs_status=info["status"], scs_solve_s=info["solve_time"],
                 scs_eps=args.scs_eps, rel_gap=(float(b3) - val) / abs(val),
                 speedup_steady=info["solve_time"] / r["steady_s"],
                 speedup_incl_compile=info["solve_time"] / r["first_call_s"])
    out["sdp_n300"] = r

    _log("y")
    y = jnp.argmax(logits_fn(x), -1)
    # the same Adam loop on the classifier alone (no warp, no flow loss): the baseline step
    import optax

    from robustjax.losses import cw_loss

    def clf_loop(st):
        opt = optax.adam(0.01)

        def run(xx, yy):
            def body(_, c):
                d, s_ = c
                g = jax.grad(lambda dd: jnp.sum(cw_loss(logits_fn(xx + dd), yy)))(d)
                u, s_ = opt.update(g, s_, d)
                return optax.apply_updates(d, u), s_

            d0 = jnp.zeros_like(xx)
            return jax.lax.fori_loop(0, st, body, (d0, opt.init(d0)))[0]

        return jax.jit(run)

    r = _time(clf_loop(20), x, y, reps=args.reps)
    r["steps"] = 20
    out["classifier_adam_loop"] = r
    clf_step = r["steady_s"] / 20
    for opt, st in (("adam", 20), ("lbfgs", 5)):
        att = jax.jit(lambda kk, xx, yy, opt=opt, st=st: stadv(logits_fn, kk, xx, yy,
                                                                optimizer=opt, steps=st))
        r = _time(att, key, x, y, reps=args.reps if opt == "adam" else 1)
        r["steps"] = st
        r["per_step_over_mlp_fwd_bwd"] = (r["steady_s"] / st) / out["mlp_fwd_bwd"]["steady_s"]
        r["per_step_over_classifier_step"] = (r["steady_s"] / st) / clf_step
        r["per_step_over_classifier_step_min"] = ((r["min_s"] / st)
                                                   / (out["classifier_adam_loop"]["min_s"] / 20))
        out[f"stadv_{opt}"] = r
        _log(f"stadv {opt} done")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
