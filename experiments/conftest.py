"""Make ``_common`` (the experiments' shared plumbing) importable from the smoke tests, and
compile fast (see ``tests/conftest.py``)."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# LLVM -O0 for XLA:CPU: the suite is compile-bound; measurements and caveats in tests/conftest.py
# (repeated here so that `pytest experiments` alone gets it too).
_OPT_LEVEL = "--xla_backend_optimization_level"
if _OPT_LEVEL not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {_OPT_LEVEL}=0").strip()
