"""Shared pytest configuration: CPU only, deterministic, modest thread use."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Compile time, not run time, dominates this suite (tiny models, a few steps each): measured on
# an idle 2-core machine (2026-12-03), ~10,700 XLA compilations whose LLVM backend took 2,093 of
# the 2,984 worker-seconds. LLVM at -O0 halves that (1,068 s) and the whole suite went from
# 1,492 s to 951 s; none of the 40 slowest tests got slower. Numerics may differ from -O2 in the
# last bits, which the tests must tolerate anyway (no test may depend on one machine's rounding;
# this setting found one that did). Put the flag in XLA_FLAGS yourself to test at another level:
# this only fills it in when it is absent. Subprocess tests keep it (they append their flags).
_OPT_LEVEL = "--xla_backend_optimization_level"
if _OPT_LEVEL not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {_OPT_LEVEL}=0").strip()
