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

Examples::

  python experiments/benchmarks/attacks.py --quick
  OPENBLAS_NUM_THREADS=1 python experiments/benchmarks/attacks.py --batch 256 --steps 40

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
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="tiny run (batch 32, 10 steps, 1 rep) to check the script works")
    return p.parse_args()


def _model_and_data(args):
    import jax
    import jax.numpy as jnp
    import optax

    try:
        from robustjax.models import MadryCNN
        model = MadryCNN()
        source = "robustjax.models.MadryCNN"
    except ImportError:  # pragma: no cover - fallback while models is being written
        import flax.linen as nn

        class MadryCNN(nn.Module):
            @nn.compact
            def __call__(self, x, train=False):
                for f in (32, 64):
                    x = nn.relu(nn.Conv(f, (5, 5), padding="SAME")(x))
                    n, h, w, c = x.shape
                    x = jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))
                x = x.reshape(x.shape[0], -1)
                h = nn.relu(nn.Dense(1024)(x))
                return nn.Dense(10)(h)

        model = MadryCNN()
        source = "local"

    here = os.path.dirname(os.path.abspath(__file__))
    npz = os.path.join(here, "..", "..", "robustjax", "data", "_embedded", "mnist_12k.npz")
    d = np.load(npz)
    xtr = d["train_images"].astype(np.float32)[..., None] / 255.0
    ytr = d["train_labels"].astype(np.int32)
    xte = d["test_images"].astype(np.float32)[..., None] / 255.0
    yte = d["test_labels"].astype(np.int32)

    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    params = variables["params"]
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, xb, yb):
        def loss(p):
            logits = model.apply({"params": p}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        g = jax.grad(loss)(params)
        upd, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(args.train_steps):
        idx = rng.integers(0, len(xtr), 64)
        params, opt_state = train_step(params, opt_state, xtr[idx], ytr[idx])
    jax.block_until_ready(params)
    train_s = time.perf_counter() - t
    x = xte[: args.batch]
    y = yte[: args.batch]
    if len(x) < args.batch:
        reps = -(-args.batch // len(x))
        x = np.concatenate([x] * reps)[: args.batch]
        y = np.concatenate([y] * reps)[: args.batch]
    return model, {"params": params}, x, y, source, train_s


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
        alpha=args.step_size, cw_steps=args.cw_steps, cw_c=1.0)


class _TorchWorker(_torch_bridge.TorchWorker):
    def __init__(self, python, npz):
        super().__init__(python, _TORCH_WORKER, npz)


def main():
    args = _parse()
    if args.quick:
        args.batch, args.steps, args.reps = 32, 10, 1
        args.cw_steps, args.cw_binary_steps, args.train_steps = 10, 2, 50
    mt_steps = args.mt_steps or args.steps

    import jax
    import jax.numpy as jnp

    from robustjax import attacks

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

    result = {
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

    compiled, compile_s = {}, {}
    for name, f in fns.items():
        t = time.perf_counter()
        compiled[name] = f.lower(variables, jax.random.key(0), x, y).compile()
        compile_s[name] = time.perf_counter() - t

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
            # Per-rep paired ratios (interleaved), then the median.
            ratios = [tt / jt for jt, tt in zip(times[jname], ttimes[tname])]
            out["speed_ratio_jax_over_torch_" + tname] = round(float(np.median(ratios)), 3)
    for var in variants:
        key = f"pgd[{var}]"
        ratios = [b / a for a, b in zip(times["pgd"], times[key])]
        out[f"speed_ratio_pgd_over_{var}"] = round(float(np.median(ratios)), 3)
    result["results"] = out
    result["loadavg_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))


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
