"""Reference check: robustjax's AutoAttack pieces vs torchattacks 3.5.1 on the same weights.

Trains (or loads from ``--workdir``, where ``robustjax.training.fit`` keeps orbax checkpoints)
the quickstart's PGD adversarially trained CNN (``experiments/configs/quickstart.py``: the same
config and keys as ``experiments/quickstart.py``), then attacks the first ``--n`` official MNIST
test digits at ε = 0.3 (ℓ∞) with

* robustjax: APGD-CE, APGD-T, FAB-T, Square (each on all points) and the standard ensemble
  ``robustjax.evaluation.autoattack`` (each member only on the points still robust);
* torchattacks (in a separate virtual environment, ``--torch-python``; weights copied into a
  torch module by ``_torch_bridge``): ``APGD``, ``APGDT``, ``FAB(multi_targeted=True)``,
  ``Square`` with the same settings (100 iterations, 9 targets, 5,000 queries, 1 restart), a
  ``MultiAttack`` of those four (AutoAttack standard as in the paper), and ``AutoAttack`` as
  shipped (whose APGD/APGD-T/FAB members use torchattacks' default of 10 steps, not 100).

Reports robust accuracy with Wilson 95 % intervals, the per-point agreement (exact McNemar
test on the paired outcomes), the largest ℓ∞ perturbation, images/s in steady state and
robustjax's compile time apart, and ``uptime`` before/after. Writes ``results.json`` and
``table.md`` to ``--out``.

Speed (issue 13): ``--model madry`` attacks ``robustjax.models.MadryCNN`` trained as in
``attacks.py`` (same weights on both sides); ``--devices`` / ``--eigen-threads`` /
``--cpu-recipe`` split the CPU into host devices (``XLA_FLAGS`` set before JAX is imported;
robustjax then shards each chunk over them); ``--ensemble-reps 2`` runs
``evaluation.autoattack`` twice (it keeps the members it jitted), so the second run is steady
state and compile time is the difference;
``--sequential`` keeps torchattacks from running concurrently (needed for timing). A timing is
a performance claim only when ``uptime`` shows a 1-minute load < 1 before and after.

Usage::

    python experiments/benchmarks/autoattack.py --quick            # minutes: development
    python experiments/benchmarks/autoattack.py --n 1000 --out experiments/results/autoattack
    # speed of the standard ensemble at batch 256 (idle machine only):
    python experiments/benchmarks/autoattack.py --model madry --n 256 --batch 256 \
        --attacks autoattack --torch-ensemble --sequential --torch-threads 0 \
        --ensemble-reps 2 --cpu-recipe --out experiments/results/performance/autoattack
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import _torch_bridge  # noqa: E402

_TORCH_AA = _torch_bridge.TORCH_NET + textwrap.dedent(
    r"""
    import sys, time, json
    import torchattacks
    from torchattacks.wrappers.multiattack import MultiAttack
    torch.manual_seed(0)
    d = np.load(sys.argv[1])
    if int(d["threads"]) > 0:
        torch.set_num_threads(int(d["threads"]))
    net = load_net(d)
    x_all = torch.from_numpy(d["x"]).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(d["y"]).long()
    eps = float(d["eps"]); n_iter = int(d["n_iter"]); n_queries = int(d["n_queries"])
    k = int(d["arch_classes"])

    def members(steps):
        return {
            "apgd-ce": torchattacks.APGD(net, norm="Linf", eps=eps, steps=steps, n_restarts=1,
                                         loss="ce", seed=0),
            "apgd-t": torchattacks.APGDT(net, norm="Linf", eps=eps, steps=steps, n_restarts=1,
                                         n_classes=k, seed=0),
            "fab-t": torchattacks.FAB(net, norm="Linf", eps=eps, steps=steps, n_restarts=1,
                                      multi_targeted=True, n_classes=k, seed=0),
            "square": torchattacks.Square(net, norm="Linf", eps=eps, n_queries=n_queries,
                                          n_restarts=1, seed=0),
        }

    def make(name):
        if name == "autoattack":
            return MultiAttack(list(members(n_iter).values()))
        if name == "autoattack[shipped]":
            return torchattacks.AutoAttack(net, norm="Linf", eps=eps, version="standard",
                                           n_classes=k, seed=0)
        return members(n_iter)[name]

    with torch.no_grad():
        clean = (net(x_all).argmax(1) == y_all)
    print(json.dumps({"ready": True, "clean_correct": clean.int().tolist(),
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "torchattacks": torchattacks.__version__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        atk = make(req["attack"])
        b = int(req["batch"])
        correct, linf, t = [], 0.0, 0.0
        for i in range(0, len(y_all), b):
            x, y = x_all[i:i + b], y_all[i:i + b]
            t0 = time.perf_counter()
            xa = atk(x, y)
            t += time.perf_counter() - t0
            with torch.no_grad():
                correct += (net(xa).argmax(1) == y).int().tolist()
            linf = max(linf, (xa - x).abs().max().item())
        print(json.dumps({"time": t, "correct": correct, "linf": linf}), flush=True)
    """
)

_JAX_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="number of test digits")
    p.add_argument("--start", type=int, default=0, help="index of the first test digit")
    p.add_argument("--batch", type=int, default=250, help="attack batch size")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n-iter", type=int, default=100, help="APGD / APGD-T / FAB iterations")
    p.add_argument("--n-queries", type=int, default=5000, help="Square query budget")
    p.add_argument("--attacks", default="apgd-ce,apgd-t,fab-t,square,autoattack",
                   help="comma list of apgd-ce, apgd-t, fab-t, square, autoattack")
    p.add_argument("--torch-shipped", action="store_true",
                   help="also run torchattacks.AutoAttack as shipped (10-step members)")
    p.add_argument("--torch-ensemble", action="store_true",
                   help="also run torchattacks' MultiAttack of the four members (by default "
                        "its result is the per-point minimum over the members run alone)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on the loaded 2-core machine, 2 "
                        "OpenMP threads ran the CNN's forward pass 16x slower at batch 16); "
                        "0: torch's default (one per core), for timing on an idle machine")
    p.add_argument("--model", choices=("quickstart", "madry"), default="quickstart",
                   help="quickstart: the quickstart's adversarially trained CNN; madry: "
                        "robustjax.models.MadryCNN after --train-steps of standard training")
    p.add_argument("--train-steps", type=int, default=300, help="--model madry: Adam steps")
    p.add_argument("--ensemble-reps", type=int, default=1,
                   help="run evaluation.autoattack this many times (the members are jitted "
                        "once): the last run is the steady-state time")
    _torch_bridge.add_device_flags(p)
    p.add_argument("--sequential", action="store_true",
                   help="run torchattacks after robustjax instead of concurrently")
    p.add_argument("--workdir", default=None,
                   help="checkpoints of the trained CNN (default /tmp/robustjax_autoattack"
                        "[_quick])")
    p.add_argument("--out", default=None, help="where results.json / table.md go "
                   "(default: --workdir)")
    p.add_argument("--torch-python", default=None)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--train-only", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="development run: 2 adversarial epochs, 100 digits, 10 iterations, "
                        "200 queries")
    return p.parse_args(argv)


def _uptime() -> str:
    return _torch_bridge.uptime()


def _load1(uptime_line: str) -> float:
    try:
        return float(uptime_line.split("load average:")[1].split(",")[0])
    except (IndexError, ValueError):  # pragma: no cover
        return float("nan")


def train_or_load(config, workdir: str):
    """The quickstart's two training runs (normal, then PGD-7 adversarial at ε = 0.3).

    Same config, dataset slices and keys as ``experiments/quickstart.py``; ``training.fit``
    resumes from the checkpoints in ``workdir`` (a finished run loads without training).
    Returns ``(model, adversarial params, seconds)``.
    """
    import jax
    import optax

    from robustjax import attacks, data, models, objectives, training

    key = jax.random.key(config.seed)
    k_std, k_adv, _ = jax.random.split(key, 3)
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, config.num_test))
    model = models.MnistCNN(features=tuple(config.features), kernel_size=config.kernel_size,
                            hidden=config.hidden)
    common = dict(batch_size=config.batch_size, optimizer="adam",
                  learning_rate=config.learning_rate, progress=config.progress, eval_ds=test)
    t0 = time.perf_counter()
    training.fit(model, training.standard_objective(), train, key=k_std,
                 epochs=config.standard_epochs, workdir=os.path.join(workdir, "standard"),
                 **common)
    train_attack = functools.partial(attacks.pgd, steps=config.train_steps, random_start=True)
    eps_schedule = optax.linear_schedule(0.0, config.train_eps, config.train_eps_rampup_steps)
    objective = objectives.adversarial_objective(
        train_attack, mix=config.train_mix, eps_schedule=eps_schedule)
    adv_common = dict(common, batch_size=config.adversarial_batch_size,
                      learning_rate=config.adversarial_learning_rate,
                      schedule=config.adversarial_schedule)
    adv_state, _ = training.fit(
        model, objective, train, key=k_adv, epochs=config.adversarial_epochs,
        workdir=os.path.join(workdir, "adversarial"), **adv_common)
    return model, adv_state.params, time.perf_counter() - t0


def _chunks(n, b):
    return [(i, min(i + b, n)) for i in range(0, n, b)]


def _pad(a, size):
    if a.shape[0] == size:
        return a
    return np.concatenate([a, np.repeat(a[-1:], size - a.shape[0], axis=0)])


def run_jax_attack(name, member, apply, params, key, x, y, batch):
    """Jit ``member`` once (compile timed apart), run it over the chunks; per-point outcome."""
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from robustjax import evaluation

    b = min(batch, len(y))
    t0 = time.perf_counter()
    if jax.local_device_count() == 1:
        fn = jax.jit(lambda p, k, xx, yy: member(functools.partial(apply, p), k, xx, yy))
        compiled = fn.lower(params, key, jnp.asarray(x[:b]), jnp.asarray(y[:b])).compile()
        first = None
    else:  # batch sharded over the local devices; compile = first call - mean chunk time
        dp = evaluation.data_parallel(
            lambda state, xx, yy: member(functools.partial(apply, state[0]), state[1], xx, yy))
        compiled = lambda p, k, xx, yy: dp((p, k), xx, yy)  # noqa: E731
        jax.block_until_ready(compiled(params, key, x[:b], y[:b]))
        first = time.perf_counter() - t0
    compile_s = time.perf_counter() - t0
    correct, linf, run_s = [], 0.0, 0.0
    logits = jax.jit(apply)
    for c, (i, j) in enumerate(tqdm(_chunks(len(y), b), desc=f"robustjax {name}", leave=False)):
        xb, yb = _pad(x[i:j], b), _pad(y[i:j], b)
        t0 = time.perf_counter()
        xa = jax.block_until_ready(compiled(params, jax.random.fold_in(key, c), xb, yb))
        run_s += time.perf_counter() - t0
        pred = np.asarray(jnp.argmax(logits(params, xa), -1))[: j - i]
        correct.append(pred == y[i:j])
        linf = max(linf, float(np.max(np.abs(np.asarray(xa)[: j - i] - x[i:j]))))
    if first is not None:
        compile_s = first - run_s / len(_chunks(len(y), b))
    return {"correct": np.concatenate(correct), "run_s": run_s, "compile_s": compile_s,
            "linf": linf}


def _members(eps, n_iter, n_queries, num_classes):
    from robustjax import attacks as A

    nt = min(9, num_classes - 1)
    p = functools.partial
    return {
        "apgd-ce": p(A.apgd, eps=eps, norm="linf", steps=n_iter, loss="ce", restarts=1),
        "apgd-t": p(A.apgd_targeted, eps=eps, norm="linf", steps=n_iter, n_target_classes=nt,
                    restarts=1),
        "fab-t": p(A.fab, eps=eps, norm="linf", steps=n_iter, n_target_classes=nt, restarts=1),
        "square": p(A.square, eps=eps, norm="linf", n_queries=n_queries, restarts=1),
    }


def _dump_partial(path, res, torch_res, n):
    """Write what has finished so far (a long run that is cut short still leaves numbers)."""
    out = {side: {k: {"robust": int(v["correct"].sum()), "n": n, "run_s": v.get("run_s")}
                  for k, v in list(r.items())}
           for side, r in (("robustjax", res), ("torchattacks", torch_res))}
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


def _fmt(k, n):
    from robustjax import evaluation

    return evaluation.format_accuracy(int(k), int(n))


def main(argv=None):
    args = _parse(argv)
    if args.quick:
        args.n = min(args.n, 100)
        args.n_iter, args.n_queries = 10, 200
        args.batch = min(args.batch, 100)
    workdir = args.workdir or ("/tmp/robustjax_autoattack_quick" if args.quick
                               else "/tmp/robustjax_autoattack")
    out_dir = args.out or workdir
    os.makedirs(workdir, exist_ok=True)
    os.makedirs(out_dir, exist_ok=True)
    xla_flags = _torch_bridge.configure_xla(args)
    uptime_start = _uptime()
    wall0 = time.perf_counter()
    cpu0 = time.process_time()

    import jax
    import jax.numpy as jnp

    import _common
    from robustjax import data, evaluation

    if args.model == "madry":
        model, variables, train_s = _torch_bridge.train_madry_cnn(args.train_steps)
        params = variables["params"]
    else:
        config = _common.load_config("quickstart")
        if args.quick:
            config.standard_epochs, config.adversarial_epochs = 1, 2
        model, params, train_s = train_or_load(config, workdir)
    if args.train_only:
        print(json.dumps({"train_or_load_s": round(train_s, 1), "workdir": workdir}))
        return 0

    def apply(p, z):
        return model.apply({"params": p}, z)

    test = data.load_dataset("mnist_embedded", "test")
    x = np.asarray(test.images[args.start: args.start + args.n], np.float32)
    y = np.asarray(test.labels[args.start: args.start + args.n], np.int32)
    n = len(y)
    clean = np.asarray(jnp.argmax(jax.jit(apply)(params, x), -1)) == y
    which = [a for a in args.attacks.split(",") if a]
    unknown = set(which) - set(_JAX_ATTACKS) - {"autoattack"}
    if unknown:
        raise SystemExit(f"unknown attacks {sorted(unknown)}")
    torch_res, torch_info, res = {}, {}, {}
    partial = os.path.join(out_dir, "partial.json")
    torch_py = _torch_bridge.find_torch_python(args.torch_python)
    torch_thread = None
    if torch_py and not args.no_torch:
        tmp = tempfile.mkdtemp()
        npz = os.path.join(tmp, "weights.npz")
        _torch_bridge.export_mnist_cnn(
            params, npz, x=x, y=y, eps=args.eps, n_iter=args.n_iter, n_queries=args.n_queries,
            threads=args.torch_threads)
        names = [a for a in which if a in _JAX_ATTACKS]
        names += ["autoattack"] if ("autoattack" in which and args.torch_ensemble) else []
        names += ["autoattack[shipped]"] if args.torch_shipped else []

        def torch_side():
            worker = _torch_bridge.TorchWorker(torch_py, _TORCH_AA, npz)
            torch_info.update({k: v for k, v in worker.info.items() if k != "clean_correct"})
            tclean = np.asarray(worker.info["clean_correct"], bool)
            torch_info["clean_agreement"] = float(np.mean(tclean == clean))
            for name in names:
                r = worker.run(json.dumps({"attack": name, "batch": args.batch}))
                corr = np.asarray(r["correct"], bool) & tclean
                torch_res[name] = {"correct": corr, "run_s": r["time"], "linf": r["linf"]}
                print(f"torchattacks {name}: {_fmt(corr.sum(), n)} ({r['time']:.1f} s)",
                      flush=True)
                _dump_partial(partial, res, torch_res, n)
            worker.close()
            os.unlink(npz)

        if args.sequential:
            torch_thread = torch_side
        else:
            torch_thread = threading.Thread(target=torch_side)
            torch_thread.start()

    members = _members(args.eps, args.n_iter, args.n_queries, 10)
    key = jax.random.key(0)
    for name in [a for a in which if a in _JAX_ATTACKS]:
        r = run_jax_attack(name, members[name], apply, params, jax.random.fold_in(key, len(res)),
                           x, y, args.batch)
        r["correct"] = r["correct"] & clean
        res[name] = r
        print(f"robustjax {name}: {_fmt(r['correct'].sum(), n)} "
              f"({r['run_s']:.1f} s + compile {r['compile_s']:.1f} s)", flush=True)
        _dump_partial(partial, res, torch_res, n)
    if "autoattack" in which:
        logits_fn = jax.jit(functools.partial(apply, params))
        standard = args.n_iter == 100 and args.n_queries == 5000
        aa_times = []
        for _ in range(args.ensemble_reps):
            t0 = time.perf_counter()
            aa = evaluation.autoattack(
                logits_fn, jax.random.key(1), x, y, eps=args.eps, norm="linf",
                version="standard", batch_size=args.batch,
                attacks=None if standard else members)
            aa_times.append(time.perf_counter() - t0)
        aa_s = aa_times[-1]
        robust = np.asarray(aa.robust) & clean
        steady = len(aa_times) > 1
        res["autoattack"] = {
            "correct": robust, "run_s": aa_s,
            "compile_s": (aa_times[0] - aa_s) if steady else None,
            "wall_s_runs": aa_times,
            "linf": float(np.max(np.abs(np.asarray(aa.x_adv) - x))),
            "note": ("steady state: the last of the runs (evaluation.autoattack reuses the "
                     "members it jitted on the first run); compile_s = first run - last run"
                     if steady else
                     "wall time includes compilation of the members (one program per bucket)"),
            "per_attack_cumulative": {k: float(v) for k, v in
                                      aa.per_attack_robust_accuracy.items()},
            "broken_by": {name: int(np.sum(np.asarray(aa.broken_by) == i))
                          for i, name in enumerate(aa.attack_names)},
        }
        print(f"robustjax autoattack: {_fmt(robust.sum(), n)} ({aa_s:.1f} s incl. compile)",
              flush=True)
    if all(a in res for a in _JAX_ATTACKS):
        members_min = np.all([res[a]["correct"] for a in _JAX_ATTACKS], axis=0)
        res["min over members"] = {"correct": members_min, "run_s": None, "compile_s": None,
                                   "linf": None}

    if torch_thread is not None:
        if args.sequential:
            torch_thread()
        else:
            torch_thread.join()
    if all(a in torch_res for a in _JAX_ATTACKS):
        torch_res["min over members"] = {
            "correct": np.all([torch_res[a]["correct"] for a in _JAX_ATTACKS], axis=0),
            "run_s": None, "linf": None}

    uptime_end = _uptime()
    rows, table_rows = {}, []
    for name in list(dict.fromkeys(list(res) + list(torch_res))):
        a, t = res.get(name), torch_res.get(name)
        row = {}
        if a is not None:
            k = int(a["correct"].sum())
            row["robustjax"] = {
                "robust": k, "n": n, "robust_accuracy": k / n, "formatted": _fmt(k, n),
                "run_s": a["run_s"], "compile_s": a["compile_s"], "linf_max": a["linf"],
                "images_per_s": (n / a["run_s"]) if a["run_s"] else None,
                "robust_points": a["correct"].astype(int).tolist(),
                **{kk: a[kk] for kk in ("note", "per_attack_cumulative", "broken_by",
                                        "wall_s_runs") if kk in a}}
        if t is not None:
            k = int(t["correct"].sum())
            row["torchattacks"] = {
                "robust": k, "n": n, "robust_accuracy": k / n, "formatted": _fmt(k, n),
                "run_s": t["run_s"], "linf_max": t["linf"],
                "images_per_s": (n / t["run_s"]) if t["run_s"] else None,
                "robust_points": t["correct"].astype(int).tolist()}
        if a is not None and t is not None:
            row["difference_points"] = 100.0 * (a["correct"].mean() - t["correct"].mean())
            row["mcnemar"] = evaluation.mcnemar_exact(a["correct"], t["correct"])
            if a["run_s"] and t["run_s"]:
                row["speed_ratio_robustjax_over_torchattacks"] = t["run_s"] / a["run_s"]
        rows[name] = row

        def cell(side, key, fmt):
            v = row.get(side, {}).get(key)
            return "–" if v is None else fmt.format(v)

        mc = row.get("mcnemar")
        diff = "–" if "difference_points" not in row else f"{row['difference_points']:+.1f}"
        disc = "–" if mc is None else f"{mc['n10']}/{mc['n01']}, p={mc['p_value']:.2g}"
        linf = (cell("robustjax", "linf_max", "{:.4f}") + " / "
                + cell("torchattacks", "linf_max", "{:.4f}"))
        table_rows.append(
            f"| {name} | {cell('robustjax', 'formatted', '{}')} | "
            f"{cell('torchattacks', 'formatted', '{}')} | {diff} | {disc} | {linf} | "
            f"{cell('robustjax', 'images_per_s', '{:.1f}')} | "
            f"{cell('robustjax', 'compile_s', '{:.1f}')} | "
            f"{cell('torchattacks', 'images_per_s', '{:.1f}')} |")
    model_name = ("the quickstart PGD-trained CNN" if args.model == "quickstart" else
                  f"robustjax.models.MadryCNN ({args.train_steps} steps of standard training)")
    header = (
        f"Robust accuracy (%) [Wilson 95 %] of {model_name} on {n} MNIST test "
        f"digits, ℓ∞ ε = {args.eps:g}; clean {_fmt(clean.sum(), n)}. Members at {args.n_iter} "
        f"iterations, 9 targets, {args.n_queries} queries, 1 restart.\n\n"
        "| attack | robustjax | torchattacks 3.5.1 | Δ (points) | discordant: robust only under "
        "rj / only under ta (McNemar) | max ℓ∞ rj / ta | rj img/s | rj compile s | ta img/s |\n"
        "|---|---|---|---|---|---|---|---|---|")
    idle = max(_load1(uptime_start), _load1(uptime_end)) < 1.0 and args.sequential
    ratios = [f"{k}: {v['speed_ratio_robustjax_over_torchattacks']:.2f}×" for k, v in rows.items()
              if "speed_ratio_robustjax_over_torchattacks" in v]
    timing = (
        f"\nTimings on an idle machine (uptime before: `{uptime_start}`; after: "
        f"`{uptime_end}`); torchattacks ran after robustjax, not concurrently. "
        if idle else
        "\nTimings were taken on a loaded machine or with torchattacks running concurrently "
        f"(uptime before: `{uptime_start}`; after: `{uptime_end}`): the images/s columns "
        "and their ratios are NOT performance claims. ")
    note = (timing + f"robustjax: {jax.local_device_count()} local device(s), XLA_FLAGS=`"
            f"{xla_flags}`. Speed ratio robustjax / torchattacks (images/s): "
            + (", ".join(ratios) or "–") + ". Robustjax's per-attack rows run each "
            "attack on all points; its `autoattack` row runs each member only on the points "
            "still robust (wall time including compilation). `min over members` is the per-point "
            "worst case over the four members run alone (for torchattacks, the ensemble result "
            "unless `--torch-ensemble` ran its MultiAttack). torchattacks ran "
            + ("after" if args.sequential else "concurrently with")
            + f" robustjax in its own process with {torch_info.get('threads', '?')} thread(s).")
    table = header + "\n" + "\n".join(table_rows) + "\n" + note
    results = {
        "command": "python " + " ".join([os.path.relpath(__file__, os.getcwd())] +
                                        (argv if argv is not None else sys.argv[1:])),
        "n": n, "start": args.start, "eps": args.eps, "n_iter": args.n_iter,
        "n_queries": args.n_queries,
        "batch": args.batch, "quick": args.quick, "clean_accuracy": float(clean.mean()),
        "clean_formatted": _fmt(clean.sum(), n), "train_or_load_s": train_s,
        "rows": rows, "torch": torch_info,
        "versions": _versions(), "uptime_start": uptime_start, "uptime_end": uptime_end,
        "wall_s": time.perf_counter() - wall0, "process_cpu_s": time.process_time() - cpu0,
        "model": args.model, "local_devices": jax.local_device_count(), "xla_flags": xla_flags,
        "sequential": args.sequential,
        "timing_note": ("idle machine (1-min load < 1 before and after), torchattacks run after "
                        "robustjax" if idle else
                        "loaded machine or concurrent torchattacks: timing ratios are not "
                        "reportable"),
    }
    _common.write_outputs(out_dir, results, table)
    return 0


def _versions():
    import flax
    import jax
    import optax

    return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "numpy": np.__version__, "python": sys.version.split()[0]}


if __name__ == "__main__":
    sys.exit(main())
