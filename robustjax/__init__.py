"""robustjax: adversarial-robustness research in JAX.

The core layer (``losses``, ``projections``, ``attacks``, ``implicit``, ``spatial``,
``linearity``, ``certify``, ``defenses``) is pure functions of arrays and of a model given as
``logits_fn``; ``models``, ``training``, ``evaluation`` and ``data`` build on it. Subpackages are
imported lazily so that ``import robustjax`` stays cheap and optional extras stay optional.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0.dev0"

_SUBPACKAGES = (
    "attacks",
    "certify",
    "data",
    "defenses",
    "evaluation",
    "implicit",
    "linearity",
    "losses",
    "models",
    "objectives",
    "projections",
    "spatial",
    "training",
)

__all__ = list(_SUBPACKAGES) + ["__version__", "checked"]


def __getattr__(name: str):
    if name == "checked":  # the checked mode: value checks raise under jax.jit (checkify)
        from robustjax._src.validation import checked

        globals()["checked"] = checked
        return checked
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"robustjax.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'robustjax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBPACKAGES) + ["checked"])
