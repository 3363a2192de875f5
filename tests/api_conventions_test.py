"""The public API follows README's "API conventions": one name per concept, the model then the key
then the data, keyword-only hyperparameters, no flag that changes a function's return type.

Walks every public callable of every subpackage, so a new function cannot drift.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

import robustjax

SUBPACKAGES = tuple(robustjax._SUBPACKAGES)  # every subpackage, as the package lists them

# Names that have one canonical spelling in the conventions (README "API conventions").
FORBIDDEN = {
    "num_steps": "steps",
    "n_steps": "steps",
    "n_iter": "steps",
    "num_iters": "steps",
    "iters": "steps",
    "k": "steps (or a descriptive name)",
    "num_restarts": "restarts",
    "n_restarts": "restarts",
    "lr": "learning_rate",
    "images": "x",
    "image": "x",
    "inputs": "x",
    "labels": "y",
    "label": "y",
    "targets": "target",
    "targeted": "target=",
    "rng": "key",
    "prng_key": "key",
    "return_info": "a *_with_info function",
    "return_latent": "a *_with_latent / *_with_info function",
    "return_all": "a separate function",
    "clip_min": "box",
    "clip_max": "box",
}

# The order of the leading positional parameters: model, key, data.
MODEL_NAMES = ("logits_fn", "model", "fn", "forward", "apply_fn", "generator_fn", "loss_fn")
DATA_NAMES = ("x", "y")


def _public_functions():
    out = []
    for pkg in SUBPACKAGES:
        mod = importlib.import_module(f"robustjax.{pkg}")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                out.append((f"{pkg}.{name}", obj))
    return out


FUNCTIONS = _public_functions()


def test_the_walk_sees_the_library():
    # A broken import or an empty __all__ would make every other test here vacuous.
    assert len(FUNCTIONS) > 150
    names = {n for n, _ in FUNCTIONS}
    for expected in ("attacks.pgd", "evaluation.autoattack", "defenses.tv_denoise",
                     "linearity.local_linearity", "training.fit"):
        assert expected in names


@pytest.mark.parametrize("qualname,fn", FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_parameter_names_follow_the_conventions(qualname, fn):
    params = inspect.signature(fn).parameters
    bad = {p: FORBIDDEN[p] for p in params if p in FORBIDDEN}
    assert not bad, f"{qualname}: rename " + ", ".join(f"`{p}` -> {v}" for p, v in bad.items())


@pytest.mark.parametrize("qualname,fn", FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_key_comes_after_the_model_and_before_the_data(qualname, fn):
    params = list(inspect.signature(fn).parameters.values())
    positional = [p.name for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if "key" not in positional:
        return
    i_key = positional.index("key")
    for name in DATA_NAMES:
        if name in positional:
            assert positional.index(name) > i_key, f"{qualname}: `key` must come before `{name}`"
    for name in MODEL_NAMES:
        if name in positional:
            assert positional.index(name) < i_key, f"{qualname}: `{name}` must come before `key`"


# Helpers whose one hyperparameter is their subject (``apgd_checkpoints(100)``,
# ``project_linf(x, x0, eps)``, ``make_schedule(0.1, "cosine")``) take it positionally.
POSITIONAL_OK = {"attacks.apgd_checkpoints", "projections.project_l2", "projections.project_linf",
                 "training.make_schedule"}


@pytest.mark.parametrize("qualname,fn", FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_iteration_hyperparameters_are_keyword_only(qualname, fn):
    if qualname in POSITIONAL_OK:
        return
    params = inspect.signature(fn).parameters
    for name in ("eps", "steps", "restarts", "step_size", "learning_rate", "norm", "box",
                 "unroll", "target", "eot_samples"):
        if name in params:
            assert params[name].kind == inspect.Parameter.KEYWORD_ONLY, (
                f"{qualname}: `{name}` must be keyword-only"
            )


def test_one_step_rule_set():
    from robustjax import attacks, linearity

    assert tuple(linearity.STEP_RULES) == tuple(attacks.STEP_RULES)
