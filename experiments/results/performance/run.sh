#!/usr/bin/env bash
# Issue 13 speed measurement: robustjax vs torchattacks 3.5.1 on robustjax.models.MadryCNN at
# batch 256 (same weights, same data, JAX and torch runs interleaved or sequential in one
# process tree). Run ONLY on an idle machine: the script refuses to start when the 1-minute load
# average is >= 1 (a loaded run once turned 0.5-0.8x into a claimed 2.7x) and records `uptime`
# before and after. Needs the torch venv (/work/torchvenv: torch + torchattacks==3.5.1).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OPENBLAS_NUM_THREADS=1 JAX_PLATFORMS=cpu MPLBACKEND=Agg TF_CPP_MIN_LOG_LEVEL=3
OUT=experiments/results/performance
load=$(cut -d' ' -f1 /proc/loadavg)
if [ "${FORCE:-0}" != 1 ] && awk "BEGIN{exit !($load >= 1.0)}"; then
  echo "machine not idle (1-min load $load): not measuring" >&2; exit 2
fi
uptime | tee "$OUT/uptime_before.txt"
# PGD-40 l_inf, the README's CPU recipe (one single-threaded host device per core):
python experiments/benchmarks/attacks.py --attacks pgd --batch 256 --steps 40 --reps 3 \
    --cpu-recipe --gemm --out "$OUT" --name pgd40_cpu_recipe
# the same, one device with XLA's default thread pool (the previous configuration):
python experiments/benchmarks/attacks.py --attacks pgd --batch 256 --steps 40 --reps 3 \
    --gemm --out "$OUT" --name pgd40_one_device
# standard AutoAttack (paper budgets), 256 digits in one batch, torchattacks' MultiAttack of the
# same four members run after robustjax (not concurrently), torch at its default threads:
python experiments/benchmarks/autoattack.py --model madry --n 256 --batch 256 \
    --attacks autoattack --torch-ensemble --sequential --torch-threads 0 --ensemble-reps 2 \
    --cpu-recipe --out "$OUT/autoattack_cpu_recipe"
# the same on the quickstart's adversarially trained CNN (most points stay robust, so every
# member runs its full budget on them: the per-iteration speed, without APGD's early exit):
python experiments/benchmarks/autoattack.py --model quickstart --n 256 --batch 256 \
    --attacks autoattack --torch-ensemble --sequential --torch-threads 0 --ensemble-reps 2 \
    --cpu-recipe --workdir /tmp/robustjax_autoattack --out "$OUT/autoattack_robust_cpu_recipe"
uptime | tee "$OUT/uptime_after.txt"
