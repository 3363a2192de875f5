"""Combine the per-member comparisons on digits 0-99, 100-199 and 200-999 into one 1,000-digit
table (robust accuracy with Wilson 95 % intervals, exact McNemar on the discordant digits).

Usage: python experiments/results/autoattack/combine_members.py  (writes members_1000.{md,json})
"""

import json
import os

import numpy as np

from robustjax.evaluation import format_accuracy, mcnemar_exact

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ["results.json", "digits100-199/results.json", "digits200-999/results.json"]
MEMBERS = ["apgd-ce", "apgd-t", "fab-t", "square", "min over members"]


def main():
    runs = [json.load(open(os.path.join(HERE, p))) for p in PARTS]
    out, lines = {}, [
        "| attack (1,000 digits) | robustjax | torchattacks 3.5.1 | Δ (points) | discordant "
        "rj only / ta only (McNemar) |", "|---|---|---|---|---|"]
    for m in MEMBERS:
        rj = np.concatenate([np.asarray(r["rows"][m]["robustjax"]["robust_points"], bool)
                             for r in runs])
        ta = np.concatenate([np.asarray(r["rows"][m]["torchattacks"]["robust_points"], bool)
                             for r in runs])
        mc = mcnemar_exact(rj, ta)
        n = len(rj)
        d = 100.0 * (rj.mean() - ta.mean())
        out[m] = {"n": n, "robustjax": int(rj.sum()), "torchattacks": int(ta.sum()),
                  "difference_points": d, "mcnemar": mc}
        lines.append(f"| {m} | {format_accuracy(int(rj.sum()), n)} | "
                     f"{format_accuracy(int(ta.sum()), n)} | {d:+.1f} | "
                     f"{int(np.sum(rj & ~ta))}/{int(np.sum(ta & ~rj))}, "
                     f"p={mc['p_value']:.2g} |")
    with open(os.path.join(HERE, "members_1000.json"), "w") as f:
        json.dump(out, f, indent=1, default=float)
    with open(os.path.join(HERE, "members_1000.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
