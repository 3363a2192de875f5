"""One model interface for training and evaluation: Flax Linen (with or without ``train``) and NNX.

robustjax's training objectives and ``make_logits_fn`` call a model the Linen way,
``apply(variables, x, train=..., mutable=[...], rngs={...})`` with ``variables =
{"params", "batch_stats"}``. :func:`as_model` brings the other kinds of Flax model to that
interface, and refuses anything else with a ``ValueError`` that says what is accepted:

* a Linen module whose ``__call__`` takes ``train`` — used as is;
* a Linen module without a ``train`` argument — wrapped so ``train`` is dropped (such a model
  has no batch norm or dropout mode to switch);
* an NNX module (:class:`NNXModel`) — split once into its graph definition and its state
  (``nnx.Param`` → ``"params"``, ``nnx.BatchStat`` → ``"batch_stats"``, random-number state and
  anything else kept aside), merged again inside every call, so the functional training loop,
  ``jax.jit``, ``jax.grad``, orbax checkpoints and attacks all see plain pytrees.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["NNXModel", "as_model"]


def _is_nnx(model: Any) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax always ships nnx in supported versions
        return False
    return isinstance(model, nnx.Module)


def _fresh(x):
    """A copy of a leaf computed in the current trace (NNX refuses to update variables whose
    arrays come from an outer trace, e.g. random-number counters closed over by a jit)."""
    if jnp.issubdtype(jnp.asarray(x).dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(jax.random.key_data(x) + 0)
    return x + jnp.zeros_like(x)


class NNXModel:
    """A Flax NNX module behind robustjax's Linen-style ``init`` / ``apply`` interface.

    ``init`` returns the module's current parameters and batch statistics (an NNX module is
    initialised when it is constructed; the key is unused). ``apply(variables, x, train=False,
    mutable=False, rngs=None)`` merges them back into the module, switches it to train or eval
    mode (``module.train()`` / ``module.eval()``: batch norm on batch or running statistics,
    dropout on or off), calls it, and with ``mutable`` also returns ``{"batch_stats": ...}``.
    With ``rngs={"dropout": key}`` every random stream of the module is reseeded from ``key``
    (so dropout masks follow the training loop's explicit keys); without it the module's own
    streams are used, restarting from their stored state at every call.

    Cost: the merge is trace-time bookkeeping; the compiled program is the module's own.
    """

    def __init__(self, module: Any):
        from flax import nnx

        if not isinstance(module, nnx.Module):
            raise ValueError(f"NNXModel wraps a flax.nnx.Module, got {type(module).__name__}.")
        self.module_type = type(module).__name__
        (self.graphdef, self.params, self.batch_stats, self.rng_state,
         self.rest) = nnx.split(module, nnx.Param, nnx.BatchStat, nnx.RngState, ...)

    def __repr__(self) -> str:
        return f"NNXModel({self.module_type})"

    def init(self, rngs: Any = None, x: Any = None, *, train: bool = False, **kwargs) -> dict:
        del rngs, x, train, kwargs
        variables = {"params": self.params}
        if jax.tree_util.tree_leaves(self.batch_stats):
            variables["batch_stats"] = self.batch_stats
        return variables

    def merge(self, variables: dict, *, train: bool = False, rngs: dict | None = None):
        """The NNX module with ``variables``, in train or eval mode (usable inside traces)."""
        from flax import nnx

        # Rebuilt leaf by leaf so that every Variable object belongs to the current trace
        # (NNX refuses to update a Variable created under another one).
        params = jax.tree.map(lambda a: a, variables["params"])
        bs = jax.tree.map(lambda a: a, variables.get("batch_stats", self.batch_stats))
        rng_state = jax.tree.map(_fresh, self.rng_state)
        rest = jax.tree.map(lambda a: a, self.rest)
        module = nnx.merge(self.graphdef, params, bs, rng_state, rest)
        if rngs:  # every random stream restarts from a key derived from the caller's
            key = rngs.get("dropout", next(iter(rngs.values())))
            keys = nnx.state(module, nnx.RngKey)
            leaves, treedef = jax.tree.flatten(keys)
            fresh = [jax.random.fold_in(key, i) for i in range(len(leaves))]
            nnx.update(module, jax.tree.unflatten(treedef, fresh))
        module.train() if train else module.eval()
        return module

    def apply(self, variables: dict, x: Any, *args, train: bool = False, mutable: Any = False,
              rngs: dict | None = None, method: Any = None, **kwargs):
        from flax import nnx

        module = self.merge(variables, train=train, rngs=rngs)
        fn = module if method is None else getattr(module, method)
        out = fn(x, *args, **kwargs)
        if mutable:
            return out, {"batch_stats": nnx.state(module, nnx.BatchStat)}
        return out


class _NoTrainArg:
    """A Linen module whose ``__call__`` has no ``train`` argument, with ``train`` dropped."""

    def __init__(self, module: Any):
        self.module = module

    def __repr__(self) -> str:
        return f"NoTrainArg({type(self.module).__name__})"

    def init(self, rngs, x, *args, train: bool = False, **kwargs):
        del train
        return self.module.init(rngs, x, *args, **kwargs)

    def apply(self, variables, x, *args, train: bool = False, mutable: Any = False, **kwargs):
        del train
        out = self.module.apply(variables, x, *args, mutable=mutable, **kwargs)
        if mutable and not isinstance(out, tuple):
            return out, {}
        return out


def _takes_train(module: Any) -> bool:
    try:
        params = inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        return True
    return "train" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def as_model(model: Any) -> Any:
    """``model`` behind the Linen-style interface robustjax trains and evaluates.

    Accepts a Flax Linen module (with or without a ``train`` argument), a Flax NNX module, or an
    object already adapted (:class:`NNXModel`). Anything else raises ``ValueError``.
    """
    import flax.linen as nn

    if isinstance(model, (NNXModel, _NoTrainArg)):
        return model
    if _is_nnx(model):
        return NNXModel(model)
    if isinstance(model, nn.Module):
        return model if _takes_train(model) else _NoTrainArg(model)
    raise ValueError(
        "`model` must be a Flax Linen module (flax.linen.Module), a Flax NNX module "
        f"(flax.nnx.Module) or a robustjax.models.NNXModel, got {type(model).__name__}. "
        "For any other framework, pass a logits_fn to the attacks and write the training step "
        "with robustjax's objectives on your own apply function.")
