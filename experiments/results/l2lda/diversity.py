"""Diversity check for the L2L-DA reproduction (issue 14): λ = 0.02 vs λ = 0 in min-max training.

Retrains the ``repro`` config's Plain model (same key and weights as the measured run), then runs
L2L-DA min-max training from it with the repro's recipe and the repro's L2L-DA key — same
initialisation, data order and step keys — once per λ in ``--lambdas`` (default: λ =
``lambda_div`` = 0.02 and λ = 0), for ``--updates`` updates. For each final generator it reports, on the first
``--n_images`` test digits against its own classifier, the mean pairwise ℓ2 distance between the
perturbations of the same digit for ``--num_z`` codes (and relative to the mean ℓ2 norm of a
perturbation), the accuracy per code and the accuracy under the worst code. Writes
``diversity.json``.

Usage (from the repository root)::

    python experiments/results/l2lda/diversity.py --workdir /tmp/l2lda_diversity --updates 156
    python experiments/results/l2lda/diversity.py --workdir /tmp/l2lda_dose --updates 90 \
        --lambdas 0,0.02,0.2,2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/l2lda_diversity")
    p.add_argument("--updates", type=int, default=156)
    p.add_argument("--num_z", type=int, default=8)
    p.add_argument("--n_images", type=int, default=100)
    p.add_argument("--lambdas", default=None,
                   help="comma-separated λ values (default: the config's lambda_div and 0)")
    args = p.parse_args()

    import jax

    from _repro_plain import retrain_repro_plain

    os.makedirs(args.workdir, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    repro = retrain_repro_plain(args.workdir, args.n_images)
    k = jax.random.fold_in(repro.k_train, repro.repro_rows.index("L2L-DA"))  # the row's key
    lambdas = ([float(v) for v in args.lambdas.split(",")] if args.lambdas
               else [repro.config.lambda_div, 0.0])
    out = {"updates": args.updates, "num_z": args.num_z, "n_images": args.n_images,
           "key": "repro L2L-DA row", "lambdas": lambdas,
           "runs": repro.exp.minmax_diversity(
               repro.config, repro.model, repro.plain, repro.train, repro.test, k,
               lambdas=lambdas, updates=args.updates, num_z=args.num_z,
               num_images=args.n_images, progress=True)}
    out["total_wall_s"] = time.perf_counter() - t_start
    out["total_cpu_s"] = time.process_time() - c_start
    with open(os.path.join(args.workdir, "diversity.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
