"""Benchmark: PGD-40 ℓ∞ / multi-targeted PGD / CW-ℓ2 on the Madry MNIST CNN, vs torchattacks.

Prints one JSON object: images/s in steady state (compile time reported apart) for robustjax's
attacks and, when a Python with ``torch`` and ``torchattacks`` is found (``--torch-python``,
default ``/work/torchvenv/bin/python`` or ``/work/tavenv/bin/python`` if one exists), for
torchattacks on the *same weights and data* (the Flax weights are copied into an equivalent
torch module in a subprocess, passed via a temporary ``.npz``; see ``_torch_bridge.py``). JAX and torch repetitions are interleaved within one run, so the
reported ratio is robust to machine load that drifts slowly; absolute numbers are not.

The model is briefly trained (standard training, a few hundred Adam steps on the embedded MNIST
subset) so that clean accuracy is meaningful; robust accuracy of both implementations is
reported so that they can be checked for agreement.

Devices (``--devices``, ``--eigen-threads``, ``--cpu-recipe``; set as ``XLA_FLAGS`` before JAX
is imported): with several CPU host devices robustjax's attacks run through
``robustjax.evaluation.data_parallel`` (each batch sharded over the devices); ``--cpu-recipe``
is the README's recipe, one single-threaded host device per core. Compile time is reported
apart (single device: ``lower().compile()``; several: the first call minus the steady median).
``--out DIR`` also writes ``DIR/<--name>.json`` and ``.md``; ``uptime`` is recorded before and
after. Only a run on an idle machine (1-minute load < 1) is a performance claim.

Examples::

  python experiments/benchmarks/attacks.py --quick
  OPENBLAS_NUM_THREADS=1 python experiments/benchmarks/attacks.py --batch 256 --steps 40
  OPENBLAS_NUM_THREADS=1 python experiments/benchmarks/attacks.py --attacks pgd --cpu-recipe \
      --out experiments/results/performance --name pgd40_cpu_recipe

Variants (``--variants``) time alternative formulations of the same PGD within the run:
``flax_pool`` (``nn.max_pool`` instead of reshape+max), ``fori`` (a rolled ``fori_loop``,
``unroll=1``, instead of the CPU default of a fully unrolled loop), ``stepwise`` (a jitted
single step called ``steps`` times from Python: no loop primitive).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _torch_bridge  # noqa: E402

_TORCH_WORKER = _torch_bridge.TORCH_NET + textwrap.dedent(
    r"""
    import sys, time, json
    import torchattacks
    torch.manual_seed(0)
    d = np.load(sys.argv[1])
    if int(d["threads"]) > 0:
        torch.set_num_threads(int(d["threads"]))
    net = load_net(d)
    x = torch.from_numpy(d["x"]).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(d["y"]).long()
    steps = int(d["steps"]); cw_steps = int(d["cw_steps"]); eps = float(d["eps"])
    attacks = {
        "pgd": torchattacks.PGD(net, eps=eps, alpha=float(d["alpha"]), steps=steps,
                                random_start=True),
        "cw": torchattacks.CW(net, c=float(d["cw_c"]), kappa=0, steps=cw_steps, lr=0.01),
    }
    with torch.no_grad():
        clean = (net(x).argmax(1) == y).float().mean().item()
    print(json.dumps({"ready": True, "clean_acc": clean, "threads": torch.get_num_threads()}),
          flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        if name == "gemm":  # dense float32 matmul throughput of this torch build
            a = torch.randn(2048, 2048); b = torch.randn(2048, 2048)
            torch.mm(a, b)
            ts = []
            for _ in range(5):
                t = time.perf_counter(); torch.mm(a, b); ts.append(time.perf_counter() - t)
            print(json.dumps({"gflop_s": 2 * 2048 ** 3 / min(ts) / 1e9}), flush=True)
            continue
        t = time.perf_counter()
        xa = attacks[name](x, y)
        dt = time.perf_counter() - t
        with torch.no_grad():
            acc = (net(xa).argmax(1) == y).float().mean().item()
        l2 = (xa - x).flatten(1).norm(dim=1)
        linf = (xa - x).abs().flatten(1).max(1).values.max().item()
        print(json.dumps({"time": dt, "acc": acc, "linf": linf,
                          "mean_l2": l2.mean().item()}), flush=True)
    """
)


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--step-size", type=float, default=0.01)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per attack")
    p.add_argument("--cw-steps", type=int, default=50)
    p.add_argument("--cw-binary-steps", type=int, default=5)
    p.add_argument("--mt-steps", type=int, default=None,
                   help="steps of multi-targeted PGD (default: --steps)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--variants", default="",
                   help="comma list of extra PGD variants: flax_pool,fori,stepwise")
    p.add_argument("--attacks", default="pgd,multi_targeted,cw",
                   help="comma list of attacks to time: pgd,multi_targeted,cw")
    p.add_argument("--torch-python", default=None)
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch intra-op threads (0: torch's default, one per core)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default=None, help="directory for <name>.json and <name>.md")
    p.add_argument("--name", default="attacks", help="file name stem under --out")
    _torch_bridge.add_device_flags(p)
    p.add_argument("--gemm", action="store_true",
                   help="also measure dense float32 matmul GFLOP/s (2048², JAX sharded over "
                        "the devices, and torch): the machine's practical compute ceiling")
    p.add_argument("--quick", action="store_true",
                   help="tiny run (batch 32, 10 steps, 1 rep) to check the script works")
    return p.parse_args()


def _model_and_data(args):
    model, variables, train_s = _torch_bridge.train_madry_cnn(args.train_steps)
    _, _, xte, yte = _torch_bridge.embedded_mnist()
    x = xte[: args.batch]
    y = yte[: args.batch]
    if len(x) < args.batch:
        reps = -(-args.batch // len(x))
        x = np.concatenate([x] * reps)[: args.batch]
        y = np.concatenate([y] * reps)[: args.batch]
    return model, variables, x, y, "robustjax.models.MadryCNN", train_s


def _flax_pool_model():
    import flax.linen as nn

    class MadryCNNFlaxPool(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            for f in (32, 64):
                x = nn.relu(nn.Conv(f, (5, 5), padding="SAME")(x))
                x = nn.max_pool(x, (2, 2), (2, 2))
            x = x.reshape(x.shape[0], -1)
            h = nn.relu(nn.Dense(1024)(x))
            return nn.Dense(10)(h)

    return MadryCNNFlaxPool()


def _export_torch(variables, x, y, args, path):
    _torch_bridge.export_mnist_cnn(
        variables["params"], path, x=x, y=y, steps=args.steps, eps=args.eps,
        alpha=args.step_size, cw_steps=args.cw_steps, cw_c=1.0, threads=args.torch_threads)


class _TorchWorker(_torch_bridge.TorchWorker):
    def __init__(self, python, npz):
        super().__init__(python, _TORCH_WORKER, npz)


def main():
    args = _parse()
    if args.quick:
        args.batch, args.steps, args.reps = 32, 10, 1
        args.cw_steps, args.cw_binary_steps, args.train_steps = 10, 2, 50
    mt_steps = args.mt_steps or args.steps
    xla_flags = _torch_bridge.configure_xla(args)
    uptime_start = _torch_bridge.uptime()

    import jax
    import jax.numpy as jnp

    from robustjax import attacks, evaluation

    model, variables, x_np, y_np, source, train_s = _model_and_data(args)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    n = args.batch

    def logits(v, z):
        return model.apply(v, z)

    def make_pgd(m, unroll=None):
        def f(v, key, xx, yy):
            return attacks.pgd(lambda z: m.apply(v, z), key, xx, yy, eps=args.eps,
                               steps=args.steps, step_size=args.step_size, unroll=unroll)
        return jax.jit(f)

    which = set(args.attacks.split(","))
    fns = {"pgd": make_pgd(model)}
    mt = jax.jit(lambda v, key, xx, yy: attacks.multi_targeted(
        lambda z: model.apply(v, z), key, xx, yy, eps=args.eps, steps=mt_steps,
        step_size=args.step_size))
    if "multi_targeted" in which:
        fns["multi_targeted"] = mt
    cw = jax.jit(lambda v, key, xx, yy: attacks.carlini_wagner_l2(
        lambda z: model.apply(v, z), key, xx, yy, steps=args.cw_steps,
        binary_search_steps=args.cw_binary_steps, learning_rate=0.01, initial_const=1e-2))
    # Same algorithm as torchattacks.CW (fixed c = 1, no binary search), for the ratio.
    cw_fixed = jax.jit(lambda v, key, xx, yy: attacks.carlini_wagner_l2(
        lambda z: model.apply(v, z), key, xx, yy, steps=args.cw_steps,
        binary_search_steps=1, initial_const=1.0, learning_rate=0.01))
    if "cw" in which:
        fns["cw"] = cw
        fns["cw_fixed_c"] = cw_fixed
    variants = [s for s in args.variants.split(",") if s]
    for var in variants:
        if var == "flax_pool":
            fns["pgd[flax_pool]"] = make_pgd(_flax_pool_model())
        elif var == "fori":
            fns["pgd[fori]"] = make_pgd(model, unroll=1)
        elif var == "stepwise":
            def stepwise_factory():
                att_step = jax.jit(lambda v, xa, x0, yy: _one_step(model, v, xa, x0, yy, args))
                init_j = jax.jit(lambda key, xx: _random_start(key, xx, args))

                class _F:
                    def lower(self, v, key, xx, yy):
                        return self

                    def compile(self):
                        return self

                    def __call__(self, v, key, xx, yy):
                        xa = init_j(key, xx)
                        for _ in range(args.steps):
                            xa = att_step(v, xa, xx, yy)
                        return xa
                return _F()
            fns["pgd[stepwise]"] = stepwise_factory()
        else:
            raise SystemExit(f"unknown variant {var!r}")

    ndev = jax.local_device_count()
    if ndev > 1:
        bad = [v for v in variants if v == "stepwise"]
        if bad:
            raise SystemExit("--variants stepwise runs on one device only")
        for name, f in list(fns.items()):
            # (variables, key) is the replicated first argument; x, y are sharded.
            dp = evaluation.data_parallel(lambda state, xx, yy, f=f: f(state[0], state[1], xx, yy))
            fns[name] = (lambda dp: lambda v, key, xx, yy: dp((v, key), xx, yy))(dp)

    result = {
        "uptime_start": uptime_start, "xla_flags": xla_flags, "local_devices": ndev,
        "model": f"MadryCNN ({source})", "batch": n, "steps": args.steps, "eps": args.eps,
        "step_size": args.step_size, "cw_steps": args.cw_steps,
        "cw_binary_steps": args.cw_binary_steps, "multi_targeted_steps": mt_steps,
        "jax": jax.__version__, "backend": jax.default_backend(),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "cpu_count": os.cpu_count(), "train_s": round(train_s, 2),
        "loadavg_start": os.getloadavg(),
    }
    clean = float(jnp.mean(jnp.argmax(logits(variables, x), -1) == y))
    result["clean_acc"] = clean

    # XLA's FLOP count of the PGD program (lowered, not compiled): the work per image, to turn
    # images/s into achieved GFLOP/s on both sides (torch runs the same convolutions). Counted
    # on the fully unrolled program: the cost analysis of a rolled loop counts its body once.
    pgd_flops = make_pgd(model, unroll=True).lower(
        variables, jax.random.key(0), x, y).cost_analysis()
    pgd_flops = float(pgd_flops["flops"]) / n if pgd_flops and "flops" in pgd_flops else None
    result["pgd_flops_per_image"] = pgd_flops
    compiled, compile_s, first_s = {}, {}, {}
    for name, f in fns.items():
        t = time.perf_counter()
        if ndev == 1:
            compiled[name] = f.lower(variables, jax.random.key(0), x, y).compile()
            compile_s[name] = time.perf_counter() - t
        else:  # first call = compile + one run; compile_s = first call - steady median
            compiled[name] = f
            jax.block_until_ready(f(variables, jax.random.key(0), x, y))
            first_s[name] = time.perf_counter() - t

    torch_py = _torch_bridge.find_torch_python(args.torch_python)
    worker = None
    if torch_py and not args.no_torch:
        tmp = tempfile.mkdtemp()
        npz = os.path.join(tmp, "weights.npz")
        _export_torch(variables, x_np, y_np, args, npz)
        try:
            worker = _TorchWorker(torch_py, npz)
            result["torch_clean_acc"] = worker.info["clean_acc"]
            result["torch_threads"] = worker.info["threads"]
        except Exception as e:  # noqa: BLE001 - report and go on without torch
            result["torch_error"] = repr(e)
            worker = None

    if worker is not None:  # one untimed warm-up per torch attack (JAX warmed up above)
        for name in fns:
            if name in ("pgd", "cw_fixed_c"):
                worker.run("pgd" if name == "pgd" else "cw")
    if args.gemm:
        result["gemm_gflop_s"] = {"jax": round(_jax_gemm_gflops(), 1)}
        if worker is not None:
            result["gemm_gflop_s"]["torch"] = round(worker.run("gemm")["gflop_s"], 1)
    times = {name: [] for name in fns}
    accs, extra = {}, {}
    ttimes = {"pgd": [], "cw": []}
    tacc = {}
    for rep in range(args.reps):
        for name in fns:
            t = time.perf_counter()
            xa = jax.block_until_ready(compiled[name](variables, jax.random.key(rep + 1), x, y))
            times[name].append(time.perf_counter() - t)
            accs[name] = float(jnp.mean(jnp.argmax(logits(variables, xa), -1) == y))
            d = (xa - x).reshape(n, -1)
            extra[name] = {"linf": float(jnp.max(jnp.abs(d))),
                           "mean_l2": float(jnp.mean(jnp.linalg.norm(d, axis=1)))}
            if worker is not None and name in ("pgd", "cw_fixed_c"):
                tname = "pgd" if name == "pgd" else "cw"
                r = worker.run(tname)
                ttimes[tname].append(r["time"])
                tacc[tname] = r
    if worker is not None:
        worker.close()

    out = {}
    for name in fns:
        best = min(times[name])
        med = float(np.median(times[name]))
        if name in first_s:
            compile_s[name] = first_s[name] - med
        out[name] = {"images_per_s": round(n / med, 2), "images_per_s_best": round(n / best, 2),
                     "median_s": round(med, 3), "compile_s": round(compile_s[name], 2),
                     "robust_acc": accs[name], **{k: round(v, 4) for k, v in extra[name].items()}}
    if worker is not None:
        for tname, jname in (("pgd", "pgd"), ("cw", "cw_fixed_c")):
            if not ttimes[tname]:
                continue
            med = float(np.median(ttimes[tname]))
            out["torchattacks_" + tname] = {
                "images_per_s": round(n / med, 2),
                "images_per_s_best": round(n / min(ttimes[tname]), 2),
                "median_s": round(med, 3), "robust_acc": tacc[tname]["acc"],
                "linf": round(tacc[tname]["linf"], 4),
                "mean_l2": round(tacc[tname]["mean_l2"], 4),
            }
            if tname == "pgd" and pgd_flops:
                out["torchattacks_pgd"]["achieved_gflop_s"] = round(
                    pgd_flops * n / med / 1e9, 1)
            # Per-rep paired ratios (interleaved), then the median.
            ratios = [tt / jt for jt, tt in zip(times[jname], ttimes[tname])]
            out["speed_ratio_jax_over_torch_" + tname] = round(float(np.median(ratios)), 3)
    if pgd_flops:
        out["pgd"]["achieved_gflop_s"] = round(pgd_flops * out["pgd"]["images_per_s"] / 1e9, 1)
    for var in variants:
        key = f"pgd[{var}]"
        ratios = [b / a for a, b in zip(times["pgd"], times[key])]
        out[f"speed_ratio_pgd_over_{var}"] = round(float(np.median(ratios)), 3)
    result["results"] = out
    result["loadavg_end"] = os.getloadavg()
    result["uptime_end"] = _torch_bridge.uptime()
    result["command"] = " ".join(["python", "experiments/benchmarks/attacks.py"] + sys.argv[1:])
    print(json.dumps(result, indent=1))
    summary = _summary(result)
    print(summary)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, args.name + ".json"), "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(args.out, args.name + ".md"), "w") as f:
            f.write(summary + "\n")


def _summary(r) -> str:
    """Markdown lines: images/s, compile, robust accuracy, and the ratio vs torchattacks."""
    res = r["results"]
    lines = [f"`{r['command']}`", "",
             f"MadryCNN, batch {r['batch']}, PGD-{r['steps']} ℓ∞ ε = {r['eps']}; "
             f"{r['local_devices']} local device(s), XLA_FLAGS=`{r['xla_flags']}`; "
             f"torch threads {r.get('torch_threads', '–')}. Clean accuracy "
             f"{r['clean_acc']:.3f} (torch {r.get('torch_clean_acc', float('nan')):.3f}).", "",
             "| attack | img/s (median) | img/s (best) | compile s | robust acc | GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, v in res.items():
        if isinstance(v, dict):
            lines.append(f"| {name} | {v['images_per_s']} | {v['images_per_s_best']} | "
                         f"{v.get('compile_s', '–')} | {v['robust_acc']:.4f} | "
                         f"{v.get('achieved_gflop_s', '–')} |")
    if r.get("pgd_flops_per_image"):
        lines.append(f"\nPGD work per image (XLA cost analysis): "
                     f"{r['pgd_flops_per_image'] / 1e9:.3f} GFLOP.")
    if r.get("gemm_gflop_s"):
        lines.append(f"Dense float32 matmul (2048²) on the same setup, GFLOP/s: "
                     f"{r['gemm_gflop_s']}.")
    for k, v in res.items():
        if k.startswith("speed_ratio_jax_over_torch"):
            lines.append(f"\n**{k}: {v}×** (median of per-repetition ratios, interleaved)")
    lines.append(f"\nuptime before: `{r['uptime_start']}`; after: `{r['uptime_end']}`")
    return "\n".join(lines)


def _jax_gemm_gflops(size: int = 2048) -> float:
    """Best of 5 float32 ``[size, size] @ [size, size]`` products, rows sharded over the local
    devices (each device multiplies its rows by the whole matrix)."""
    import jax

    from robustjax import evaluation

    a = jax.random.normal(jax.random.key(0), (size, size))
    b = jax.random.normal(jax.random.key(1), (size, size))
    mm = evaluation.data_parallel(lambda bb, aa: aa @ bb)
    jax.block_until_ready(mm(b, a))
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(mm(b, a))
        ts.append(time.perf_counter() - t)
    return 2 * size ** 3 / min(ts) / 1e9


def _random_start(key, xx, args):
    from robustjax import projections

    return projections.random_start(key, xx, eps=args.eps)


def _one_step(model, v, xa, x0, yy, args):
    """One PGD-ℓ∞ step with CE loss (for the ``stepwise`` variant)."""
    import jax
    import jax.numpy as jnp

    from robustjax import losses, projections

    g = jax.grad(lambda z: jnp.sum(losses.cross_entropy(model.apply(v, z), yy)))(xa)
    return projections.project(xa + args.step_size * jnp.sign(g), x0, eps=args.eps)


if __name__ == "__main__":
    sys.exit(main())
