"""Make the shared helpers of the evaluation tests importable (the suite uses importlib mode)."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
