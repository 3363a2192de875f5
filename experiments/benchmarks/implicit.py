"""Cost of one attack gradient through DefenseGAN: implicit (CG), Neumann, backtracking, unrolled.

The attack of Chen, Xie, Zhu (ICML 2020) needs ``∇_x' Σ_n f(F(G(z*(x'_n))))`` (``f`` the CW margin)
where ``z*`` is DefenseGAN's latent search: ``L = 200`` momentum-GD steps (lr 10, momentum 0.7,
×0.1 after 80 %), ``R = 10`` random restarts, the best restart kept. This script times that
gradient for a batch of ``N = 64`` images with the gradient through ``z*`` taken

* ``implicit``  — implicit function theorem, CG on Hessian-vector products (per search, vmapped);
* ``neumann``   — Lemma 1, ``T'`` terms;
* ``backtrack`` — Lemma 2, ``T'`` plain GD steps from ``sg(z*)``, backpropagated;
* ``unrolled``  — backpropagation through all ``L`` steps (the reference);
* ``implicit_joint`` — CG on the summed problem of all ``N·R`` searches (``independent=False``);
* ``bpda``      — Eqn 21 (identity Jacobian; for reference, not a gradient through ``z*``);

and the forward pass alone (the value of the defense, which every attack step computes anyway).
Restarts and batch are one vectorized computation per compiled call (``jit`` of ``grad``).

Reported (one JSON object): compile time per mode (apart); steady-state seconds per call (minimum
over ``--repeats`` interleaved rounds, the least disturbed by other processes on a shared machine);
``ratio_total = t(unrolled) / t(mode)`` for the whole ``grad`` call (forward solve + gradient);
``ratio_gradient_overhead`` = the same for the time *beyond* the forward pass,
``t(mode) - t(forward)`` — the extra cost of the gradient, since every attack step evaluates the
defense anyway; ``ratio_backward_only`` = the same for the backward pass alone (``jax.vjp``
split into a compiled forward-with-residuals and a compiled backward); all within this run; the
cosine
similarity of every mode's ``∇_x'`` to the unrolled and to the implicit gradient; convergence
diagnostics of ``z*`` (gradient norm, Hessian spectrum of the kept searches).

Generator (state which): ``--generator mlp`` (default) has the architecture of the MNIST
generator of ``experiments/generative.py`` (MLP VAE decoder ``z ∈ R^10 → 256 ReLU → 784
sigmoid``, 28×28×1; that experiment's CPU config uses 128 hidden units);
``--generator dcgan`` is ``robustjax.models.DCGANGenerator`` at 32×32 (Table 2, widths
``--dcgan_widths``). Both random-initialised (cost does not depend on training); the classifier is a
random MLP. Test points ``x = clip(G(z_true) + noise·ε)``: with ``--noise 0`` they lie on the range
of ``G``, where ``z*`` converges and the inner problem is well conditioned (used for the cosine
check, see ``--noise``).

Off the manifold (``--off_l2 B``, the case an attack meets): every test point is moved by an
ℓ2 step of size ``B`` along the BPDA gradient of the CW loss (one FGM step through the defense),
so ``z*`` no longer reproduces ``x'`` and the inner problem is worse conditioned. There the
reference is a *converged* implicit gradient (``--reference_steps`` forward steps, CG to
tolerance with no iteration cap), and ``cosine_to_converged_implicit`` reports every mode
against it (``cosine_to_unrolled`` compares against a gradient that is itself approximate there).

    python experiments/benchmarks/implicit.py                      # MLP generator, N=64, R=10
    python experiments/benchmarks/implicit.py --generator dcgan --batch 16
    python experiments/benchmarks/implicit.py --off_l2 2 --batch 16 --repeats 1
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustjax import losses
from robustjax.defenses import defensegan_reconstruct
from robustjax.defenses import defensegan_reconstruct_with_latent

MODES = ("forward", "bpda", "implicit", "implicit_joint", "neumann", "backtrack", "unrolled")
# With --off_l2 > 0 the converged reference "implicit_converged" is added.


class MLPGenerator(nn.Module):
    """The MNIST generator of ``experiments/generative.py``: ``[M, d] -> [M, 28, 28, 1]``."""

    hidden: int = 256

    @nn.compact
    def __call__(self, z):
        h = nn.relu(nn.Dense(self.hidden)(z))
        return jax.nn.sigmoid(nn.Dense(784)(h)).reshape(z.shape[0], 28, 28, 1)


class MLPClassifier(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(64)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(h)


def _setup(args):
    key = jax.random.key(args.seed)
    kg, kc, kz, kn = jax.random.split(key, 4)
    if args.generator == "mlp":
        gen = MLPGenerator(hidden=args.hidden)
        gvars = gen.init(kg, jnp.zeros((1, args.latent_dim)))
        generator_fn = lambda z: gen.apply(gvars, z)  # noqa: E731
        shape = (28, 28, 1)
    else:
        from robustjax.models._generative import DCGANGenerator

        gen = DCGANGenerator(channels=1, widths=tuple(args.dcgan_widths))
        gvars = gen.init(kg, jnp.zeros((1, args.latent_dim)), train=False)
        generator_fn = lambda z: gen.apply(gvars, z, train=False)  # noqa: E731
        shape = (32, 32, 1)
    clf = MLPClassifier()
    cvars = clf.init(kc, jnp.zeros((1,) + shape))
    classifier_fn = lambda x: clf.apply(cvars, x)  # noqa: E731
    z_true = jax.random.normal(kz, (args.batch, args.latent_dim)) * args.latent_scale
    x = generator_fn(z_true)
    x = jnp.clip(x + args.noise * jax.random.normal(kn, x.shape), 0.0, 1.0)
    y = jnp.argmax(classifier_fn(x), -1)
    return generator_fn, classifier_fn, x, y


def _defense_kwargs(args, mode):
    independent = mode != "implicit_joint"
    steps, cg_maxiter = args.steps, args.cg_maxiter
    if mode == "implicit_converged":  # the reference off the manifold
        steps, cg_maxiter = args.reference_steps, None
    mode = "implicit" if mode in ("implicit_joint", "implicit_converged") else mode
    return dict(latent_dim=args.latent_dim, restarts=args.restarts, steps=steps,
                learning_rate=args.lr, momentum=args.momentum, mode=mode,
                independent=independent, backward_steps=args.backward_steps,
                backward_learning_rate=args.backward_lr, cg_maxiter=cg_maxiter, ridge=0.0)


def _off_manifold(args, generator_fn, classifier_fn, key, x, y):
    """One FGM step of ℓ2 size ``args.off_l2`` along the BPDA gradient of the CW loss."""
    kw = _defense_kwargs(args, "bpda")

    def loss(x):
        xr = defensegan_reconstruct(generator_fn, key, x, **kw)
        return jnp.sum(losses.cw_loss(classifier_fn(xr), y))

    g = jax.jit(jax.grad(loss))(x)
    norm = jnp.linalg.norm(g.reshape(g.shape[0], -1), axis=1).reshape(-1, 1, 1, 1)
    return jnp.clip(x - args.off_l2 * g / jnp.maximum(norm, 1e-12), 0.0, 1.0)


def _timed_compile(fn, *a):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*a).compile()
    return compiled, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", choices=("mlp", "dcgan"), default="mlp")
    p.add_argument("--latent_dim", type=int, default=10)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--dcgan_widths", type=int, nargs=3, default=(64, 32, 16))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--restarts", type=int, default=10)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=10.0)
    p.add_argument("--momentum", type=float, default=0.7)
    p.add_argument("--backward_steps", type=int, default=20, help="T' (neumann, backtrack)")
    p.add_argument("--backward_lr", type=float, default=None,
                   help="eta' (default: 1 / max Hessian eigenvalue over the kept searches)")
    p.add_argument("--cg_maxiter", type=int, default=50)
    p.add_argument("--noise", type=float, default=0.0,
                   help="std of the noise added to G(z_true); 0 = on the range (converged z*)")
    p.add_argument("--latent_scale", type=float, default=0.3)
    p.add_argument("--off_l2", type=float, default=0.0,
                   help="l2 size of the BPDA-FGM step off the manifold (0: on the range of G)")
    p.add_argument("--reference_steps", type=int, default=1000,
                   help="forward steps of the converged implicit reference (with --off_l2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", nargs="+", default=list(MODES))
    args = p.parse_args(argv)

    generator_fn, classifier_fn, x, y = _setup(args)
    key = jax.random.key(args.seed + 1)
    if args.off_l2 > 0:
        x = _off_manifold(args, generator_fn, classifier_fn, key, x, y)
        if "implicit_converged" not in args.modes:
            args.modes = list(args.modes) + ["implicit_converged"]

    # Convergence diagnostics at the forward solution (kept restart of every example).
    diag_kw = _defense_kwargs(args, "bpda")
    rec = jax.jit(functools.partial(defensegan_reconstruct_with_latent, generator_fn,
                                    **diag_kw))
    _, z_star, rec_loss = rec(key, x)

    def single_loss(z, xi):
        return jnp.mean((generator_fn(z[None])[0] - xi) ** 2)

    grad_norm = jax.vmap(lambda z, xi: jnp.linalg.norm(jax.grad(single_loss)(z, xi)))(z_star, x)
    hess = jax.vmap(jax.hessian(single_loss))(z_star, x)
    eig = jnp.linalg.eigvalsh(hess)  # [N, d], ascending
    lam_max = float(jnp.max(jnp.abs(eig)))  # ||H||: Lemma 1 needs eta'||H|| <= 1
    if args.backward_lr is None:
        args.backward_lr = 1.0 / lam_max
    eff_lr = args.lr * 1.0 / (1.0 - args.momentum)  # momentum's effective step (before decay)
    diagnostics = {
        "reconstruction_loss_median": float(jnp.median(rec_loss)),
        "grad_norm_at_zstar_max": float(jnp.max(grad_norm)),
        "grad_norm_at_zstar_median": float(jnp.median(grad_norm)),
        "hessian_eig_min": float(jnp.min(eig)),
        "hessian_eig_max": lam_max,
        "hessian_condition_median": float(jnp.median(eig[:, -1] / jnp.maximum(eig[:, 0], 1e-30))),
        "backward_lr_eta_prime": args.backward_lr,
        "eta_prime_times_lambda_min_median": float(args.backward_lr * jnp.median(eig[:, 0])),
        "forward_effective_lr_times_lambda_min": float(eff_lr * jnp.min(eig)),
    }

    def objective(mode, x):
        if mode == "forward":  # the defense's value only (what each attack step computes anyway)
            mode = "bpda"
        xr = defensegan_reconstruct(generator_fn, key, x, **_defense_kwargs(args, mode))
        return jnp.sum(losses.cw_loss(classifier_fn(xr), y))

    fns = {}
    for mode in args.modes:
        if mode == "forward":
            fns[mode] = functools.partial(objective, "forward")
        else:
            fns[mode] = jax.grad(functools.partial(objective, mode))
    compiled, compile_s, outputs = {}, {}, {}
    for mode, fn in fns.items():
        compiled[mode], compile_s[mode] = _timed_compile(fn, x)
        outputs[mode] = jax.block_until_ready(compiled[mode](x))  # warm-up, also the result

    # Backward pass alone: jax.vjp split into a compiled forward-with-residuals and a compiled
    # backward (the cotangent is 1 for the scalar objective).
    split = {}
    for mode in compiled:
        if mode == "forward":
            continue
        f = functools.partial(objective, mode)
        fwd = jax.jit(lambda x, f=f: jax.vjp(f, x))
        bwd = jax.jit(lambda vjp_fn: vjp_fn(jnp.ones((), jnp.float32))[0])
        _, vjp_fn = jax.block_until_ready(fwd(x))
        jax.block_until_ready(bwd(vjp_fn))
        split[mode] = (fwd, bwd, vjp_fn)

    times = {m: [] for m in compiled}
    bwd_times = {m: [] for m in split}
    for _ in range(args.repeats):  # interleaved rounds: ratios within one run
        for mode, c in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(c(x))
            times[mode].append(time.perf_counter() - t0)
        for mode, (_, bwd, vjp_fn) in split.items():
            t0 = time.perf_counter()
            jax.block_until_ready(bwd(vjp_fn))
            bwd_times[mode].append(time.perf_counter() - t0)
    steady = {m: min(v) for m, v in times.items()}
    backward = {m: min(v) for m, v in bwd_times.items()}

    def cos(a, b):
        a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))

    def per_example_cos_min(a, b):
        a = np.asarray(a).reshape(a.shape[0], -1)
        b = np.asarray(b).reshape(b.shape[0], -1)
        c = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
        return float(np.min(c))

    result = {
        "benchmark": "defensegan_attack_gradient",
        "generator": (f"mlp {args.latent_dim}-{args.hidden}-784 (MNIST 28x28)"
                      if args.generator == "mlp" else
                      f"dcgan widths {tuple(args.dcgan_widths)} (32x32), d={args.latent_dim}"),
        "setting": {"N": args.batch, "R": args.restarts, "L": args.steps, "lr": args.lr,
                    "momentum": args.momentum, "T_prime": args.backward_steps,
                    "eta_prime": args.backward_lr, "cg_maxiter": args.cg_maxiter,
                    "noise": args.noise, "latent_scale": args.latent_scale},
        "diagnostics": diagnostics,
        "compile_s": compile_s,
        "steady_state_s": steady,
        "backward_only_s": backward,
        "all_times_s": times,
    }
    if "unrolled" in steady:
        fwd = steady.get("forward", 0.0)
        result["ratio_total_unrolled_over_mode"] = {
            m: steady["unrolled"] / steady[m] for m in steady if m not in ("forward",)}
        result["gradient_overhead_s"] = {m: steady[m] - fwd for m in steady if m != "forward"}
        result["ratio_gradient_overhead_unrolled_over_mode"] = {
            m: (steady["unrolled"] - fwd) / max(steady[m] - fwd, 1e-3 * fwd)
            for m in steady if m not in ("forward", "bpda")}
        result["ratio_backward_only_unrolled_over_mode"] = {
            m: backward["unrolled"] / backward[m] for m in backward}
        result["cosine_to_unrolled"] = {
            m: cos(outputs[m], outputs["unrolled"]) for m in outputs if m != "forward"}
        result["per_example_cosine_to_unrolled_min"] = {
            m: per_example_cos_min(outputs[m], outputs["unrolled"])
            for m in outputs if m != "forward"}
    if "implicit" in outputs:
        result["cosine_to_implicit"] = {
            m: cos(outputs[m], outputs["implicit"]) for m in outputs if m != "forward"}
    if "implicit_converged" in outputs:
        ref = outputs["implicit_converged"]
        result["cosine_to_converged_implicit"] = {
            m: cos(outputs[m], ref) for m in outputs if m != "forward"}
        result["per_example_cosine_to_converged_implicit_min"] = {
            m: per_example_cos_min(outputs[m], ref) for m in outputs if m != "forward"}
        result["setting"]["off_l2"] = args.off_l2
        result["setting"]["reference_steps"] = args.reference_steps
    result["device"] = str(jax.devices()[0])
    result["platform"] = platform.platform()
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
