r"""Render the budget / ε evidence of issue 15 (session 7) from the sweep's JSON lines.

Every row was produced by ``experiments/benchmarks/llr_sweep.py`` (the command of each group
is in ``README.md`` next to this file) and copied verbatim into ``runs.jsonl``, one JSON line
per run with added fields ``group`` (``eps``, ``capacity``, ``trades``, ``inner``,
``epochs``), ``eps``, ``epochs`` (updates / 156), ``width`` and ``setting``. Rows from the
session-6 sweep (``experiments/results/llr/README.md``) that the epoch figure also uses are in ``session6_rows.json`` (transcribed from that table: only the
columns the table gives).

    python experiments/results/llr/budget/render.py   # writes table.md and epochs.png here
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _rows():
    with open(os.path.join(HERE, "runs.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(rows) -> str:
    out = ["| group | run (method:k:options) | setting | Nominal | FGSM | Untargeted | "
           "Multi-Targeted | FGSM − MT | √γ mean | train: nominal loss | train: γ (inner) | "
           "train CPU s |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in rows:
        last = d["last"]

        def f(k):
            return f"{last[k]:.3f}" if k in last else "-"
        out.append(
            f"| {d['group']} | `{d['run']}` | {d['setting']} | {100 * d['nominal']:.1f} | "
            f"{100 * d['FGSM']:.1f} | {100 * d['Untargeted']:.1f} | "
            f"{100 * d['Multi-Targeted']:.1f} | {100 * (d['FGSM'] - d['Multi-Targeted']):+.1f} | "
            f"{d['sqrt_gamma_mean']:.2f} | {f('nominal_loss')} | {f('gamma')} | "
            f"{d['train_cpu_s']} |")
    return "\n".join(out)


def figure(rows, path):
    with open(os.path.join(HERE, "session6_rows.json")) as f:
        old = json.load(f)
    names = {"adv:2": "ADV-2", "llr:2": "LLR-2", "adv:10:step=0.1": "ADV-10, steps of 0.1",
             "llr:2:lam=4:mu=0.5": "LLR-2, (λ, μ) = (4, 0.5)"}
    series = {}
    for d in rows:  # the repro's model and schedule at ε = 0.3, varying only the epochs
        run = d["run"].split(":epochs=")[0]
        if d["eps"] == 0.3 and d["width"] == "16/32" and run in names:
            series.setdefault(names[run], {})[d["epochs"]] = (d["FGSM"], d["Multi-Targeted"])
    for d in old:
        series.setdefault(d["name"], {}).setdefault(d["epochs"], (d["FGSM"], d["Multi-Targeted"]))
    eps_rows = [d for d in rows if d["group"] == "eps"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"ADV-2": "C0", "LLR-2": "C1", "ADV-10, steps of 0.1": "C2",
              "LLR-2, (λ, μ) = (4, 0.5)": "C4"}
    for name, pts in series.items():
        e = sorted(pts)
        axes[0].plot(e, [100 * pts[k][1] for k in e], "o-", color=colors[name],
                     label=f"{name}: Multi-Targeted")
        axes[0].plot(e, [100 * pts[k][0] for k in e], "s--", color=colors[name], alpha=0.6,
                     label=f"{name}: FGSM")
    axes[0].set_xlabel("training epochs (10,000 digits, ε = 0.3)")
    axes[0].set_ylabel("accuracy on 200 test digits (%)")
    axes[0].set_title("ε = 0.3: FGSM (dashed) vs Multi-Targeted (solid) by training length",
                      fontsize=10)
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    by = {}
    for d in eps_rows:
        by.setdefault(d["run"].split(":step")[0], {})[d["eps"]] = d
    for run, name in (("adv:1", "ADV-1"), ("adv:2", "ADV-2"), ("llr:2", "LLR-2")):
        pts = by.get(run, {})
        e = sorted(pts)
        c = {"ADV-1": "C3", "ADV-2": "C0", "LLR-2": "C1"}[name]
        axes[1].plot(e, [100 * pts[k]["Multi-Targeted"] for k in e], "o-", color=c,
                     label=f"{name}: Multi-Targeted")
        axes[1].plot(e, [100 * pts[k]["FGSM"] for k in e], "s--", color=c, alpha=0.6,
                     label=f"{name}: FGSM")
    axes[1].set_xlabel("ε (3 epochs, inner step ≈ 3.3ε)")
    axes[1].set_ylabel("accuracy on 200 test digits (%)")
    axes[1].set_title("3 epochs: FGSM (dashed) vs Multi-Targeted (solid) by radius", fontsize=10)
    axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    rows = _rows()
    with open(os.path.join(HERE, "table.md"), "w") as f:
        f.write(table(rows) + "\n")
    figure(rows, os.path.join(HERE, "epochs.png"))
    print(f"{len(rows)} runs: table.md, epochs.png written")
