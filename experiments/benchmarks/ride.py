"""Benchmark: RIDE per-image cost, batched vs one image at a time, vs PyTorch; filters vs SciPy.

Prints one JSON object. All ratios are measured within this run; compile time (``lower`` +
``compile``) is reported apart from steady-state time (best of ``--repeats`` runs).

* ``ride``: seconds per image for a RIDE defense of ``--batch`` MNIST-sized images with the
  Table 3 MNIST FCN, for ``--steps`` optimizer steps (cost is linear in the number of steps, so
  the paper's K·T = 10,000 steps cost ``10,000 × per_image_step_s``). Paths:
  ``batched`` (``self_supervised_trace``, chunks of ``RideConfig.chunk_size`` images, each chunk
  one vmapped program), ``batched_one_program`` (``chunk_size=None``: the whole batch in one
  vmapped program), ``sequential`` (a Python loop over a jitted ``self_supervised_single``), and
  ``sequential_lax_conv`` (the same loop with ``RideFCN(conv="lax")``, i.e. ``nn.Conv``; the
  implementation before im2col, kept for reference; skipped with ``--skip-lax``).
* ``torch`` (optional): the sequential PyTorch way, a loop that trains one 4-layer MNIST FCN per
  image with Adam (same architecture, noise, dropout and masking), run as a subprocess with
  ``--torch-python`` (skipped cleanly when that interpreter cannot import torch; torch is never
  a dependency of robustjax).
* ``cifar10``: per-step cost of the CIFAR-10 FCN on a batch, extrapolated to K·T = 10,000 steps.
* ``filters``: ``median_filter`` (3×3) and ``tv_denoise`` (Chambolle, fixed iterations) on a
  batch vs ``scipy.ndimage.median_filter`` and ``skimage.restoration.denoise_tv_chambolle`` (same
  iteration count, early stop disabled; skipped if scikit-image is missing).

    python experiments/benchmarks/ride.py --batch 64 --steps 20 \\
        --torch-python /path/to/python-with-torch
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.defenses import RideConfig
from robustjax.defenses import median_filter
from robustjax.defenses import self_supervised_single
from robustjax.defenses import self_supervised_trace
from robustjax.defenses import tv_denoise
from robustjax.models._ride import make_reconstruction_net
from robustjax.models._ride import ride_fcn

PAPER_STEPS = 2000 * 5  # K·T

_TORCH_SCRIPT = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
steps, n_img = int(sys.argv[1]), int(sys.argv[2])
def net():
    L = [torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
         torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout(0.5),
         torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout(0.5),
         torch.nn.Conv2d(16, 1, 3, padding=1), torch.nn.Sigmoid()]
    return torch.nn.Sequential(*L)
torch.manual_seed(0)
x = torch.rand(n_img, 1, 1, 28, 28)
def run(xi, steps):
    h = net()
    opt = torch.optim.Adam(h.parameters(), lr=1e-4, weight_decay=1e-4)
    for _ in range(steps):
        z = xi + 0.5 * torch.randn_like(xi)
        s = xi + 0.5 * torch.randn_like(xi)
        m = (torch.rand(1, 1, 28, 28) >= 0.9).float()
        loss = (((h(z) - s) ** 2) * m).sum() / m.sum()
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        return h(xi + 0.5 * torch.randn_like(xi))
run(x[0], 5)  # warm-up
t0 = time.perf_counter()
for i in range(n_img):
    run(x[i], steps)
dt = time.perf_counter() - t0
print(json.dumps({"per_image_step_s": dt / (n_img * steps), "images": n_img, "steps": steps,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
"""


def _compile(fn, *args):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _best(fn, *args, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


def _ride_paths(args, x, key):
    cfg = RideConfig(steps=args.steps, num_checkpoints=1)
    n = x.shape[0]
    keys = jax.random.split(key, n)
    out, res = {}, {}
    per_step = 1.0 / (n * args.steps)

    fast = make_reconstruction_net(ride_fcn("mnist"))
    for name, chunk in (("batched", cfg.chunk_size), ("batched_one_program", None)):
        c = cfg._replace(chunk_size=chunk)
        fn, comp = _compile(lambda k, v, c=c: self_supervised_trace(fast, k, v, config=c).estimate,
                            key, x)
        t = _best(fn, key, x, repeats=args.repeats)
        res[name] = fn(key, x)
        out[name] = {"compile_s": comp, "run_s": t, "per_image_step_s": t * per_step,
                     "chunk_size": chunk}

    nets = [("sequential", fast)]
    if not args.skip_lax:
        nets.append(("sequential_lax_conv", make_reconstruction_net(ride_fcn("mnist", conv="lax"))))
    for name, net in nets:
        fn, comp = _compile(
            lambda k, v, net=net: self_supervised_single(net, k, v, config=cfg).estimate,
            keys[0], x[0])

        def loop(ks, v, fn=fn):
            return jnp.stack([fn(ks[i], v[i]) for i in range(v.shape[0])])

        t = _best(loop, keys, x, repeats=args.repeats)
        res[name] = loop(keys, x)
        out[name] = {"compile_s": comp, "run_s": t, "per_image_step_s": t * per_step}

    for name in out:
        out[name]["per_image_paper_s"] = out[name]["per_image_step_s"] * PAPER_STEPS
    b = out["batched"]["per_image_step_s"]
    ratios = {f"{name}_over_batched": out[name]["per_image_step_s"] / b for name in out}
    # Same per-image semantics on every path (image i uses key split(key, N)[i]).
    diffs = {name: float(jnp.max(jnp.abs(res[name] - res["batched"]))) for name in res}
    return out, ratios, diffs


def _torch(args):
    if not args.torch_python:
        return {"skipped": "no --torch-python given"}
    try:
        proc = subprocess.run(
            [args.torch_python, "-c", _TORCH_SCRIPT, str(args.torch_steps),
             str(args.torch_images), str(args.threads)],
            capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"skipped": f"could not run {args.torch_python}: {e}"}
    if proc.returncode != 0:
        return {"skipped": "torch not importable or failed: " + proc.stderr.strip()[-300:]}
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["per_image_paper_s"] = r["per_image_step_s"] * PAPER_STEPS
    return r


def _cifar(args, key):
    x = jax.random.uniform(jax.random.key(2), (args.batch, 32, 32, 3))
    cfg = RideConfig(steps=args.cifar_steps, num_checkpoints=1)
    net = make_reconstruction_net(ride_fcn("cifar10"))
    fn, comp = _compile(lambda k, v: self_supervised_trace(net, k, v, config=cfg).estimate,
                        key, x)
    t = _best(fn, key, x, repeats=args.repeats)
    per = t / (args.batch * args.cifar_steps)
    return {"compile_s": comp, "run_s": t, "steps": args.cifar_steps,
            "per_image_step_s": per, "per_image_paper_s_extrapolated": per * PAPER_STEPS}


def _filters(args):
    import scipy.ndimage

    rng = np.random.default_rng(0)
    out = {}
    for name, shape in (("mnist", (args.batch, 28, 28, 1)), ("cifar10", (args.batch, 32, 32, 3))):
        x = rng.uniform(size=shape).astype(np.float32)
        xj = jnp.asarray(x)
        r = {}
        fn, comp = _compile(lambda v: median_filter(v, size=3), xj)
        t_jax = _best(fn, xj, repeats=args.repeats)
        t_sp = _best(lambda v: scipy.ndimage.median_filter(v, size=(1, 3, 3, 1), mode="constant",
                                                           cval=0.0), x, repeats=args.repeats)
        r["median3"] = {"jax_compile_s": comp, "jax_s": t_jax, "scipy_s": t_sp,
                        "scipy_over_jax": t_sp / t_jax}
        iters = args.tv_iters
        fn, comp = _compile(lambda v: tv_denoise(v, weight=0.1, steps=iters), xj)
        t_jax = _best(fn, xj, repeats=args.repeats)
        tv = {"jax_compile_s": comp, "jax_s": t_jax, "steps": iters}
        try:
            from skimage.restoration import denoise_tv_chambolle
        except ImportError:
            tv["skimage"] = "skipped: scikit-image not installed"
        else:
            def sk(v):
                return [denoise_tv_chambolle(v[i], weight=0.1, eps=0.0, max_num_iter=iters,
                                             channel_axis=-1) for i in range(v.shape[0])]

            tv["skimage_s"] = _best(sk, x, repeats=args.repeats)
            tv["skimage_over_jax"] = tv["skimage_s"] / t_jax
        r["tv_chambolle"] = tv
        out[name] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps measured (MNIST)")
    ap.add_argument("--cifar-steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-lax", action="store_true", help="skip the nn.Conv reference loop")
    ap.add_argument("--torch-python", default="", help="a python that can import torch")
    ap.add_argument("--torch-steps", type=int, default=200)
    ap.add_argument("--torch-images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: on a shared 2-core machine 2 threads spin)")
    ap.add_argument("--tv-iters", type=int, default=100)
    ap.add_argument("--only", default="ride,torch,cifar10,filters")
    args = ap.parse_args()
    only = set(args.only.split(","))

    key = jax.random.key(0)
    x = jax.random.uniform(jax.random.key(1), (args.batch, 28, 28, 1))
    report = {
        "benchmark": "ride",
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "batch": args.batch,
        "paper_steps_per_image": PAPER_STEPS,
    }
    if "ride" in only:
        paths, ratios, diffs = _ride_paths(args, x, key)
        report["mnist_ride"] = {"steps": args.steps, "paths": paths, "ratios": ratios,
                                "max_abs_diff_vs_batched": diffs}
    if "torch" in only:
        report["torch_sequential"] = _torch(args)
        if "ride" in only and "per_image_step_s" in report["torch_sequential"]:
            report["mnist_ride"]["ratios"]["torch_over_batched"] = (
                report["torch_sequential"]["per_image_step_s"]
                / report["mnist_ride"]["paths"]["batched"]["per_image_step_s"])
    if "cifar10" in only:
        report["cifar10_ride"] = _cifar(args, key)
    if "filters" in only:
        report["filters"] = _filters(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
