"""Every code example in a public docstring runs: ``>>>`` doctests (output compared) and
``Example::`` literal blocks (executed in a namespace holding a small model and data).

The namespace an ``Example::`` block sees: ``jax``, ``jnp``, ``np``, ``robustjax`` and its
subpackages, ``f`` / ``logits_fn`` (a linear 10-class MNIST model), ``x``, ``y`` (8 embedded test
digits), ``ds`` (the same digits as a dataset) and ``key``.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
import textwrap

import pytest

import robustjax

SUBPACKAGES = tuple(robustjax._SUBPACKAGES)


def _public_objects():
    import robustjax

    seen = set()
    out = [("robustjax.checked", robustjax.checked)]
    for pkg in SUBPACKAGES:
        mod = importlib.import_module(f"robustjax.{pkg}")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in seen:
                seen.add(id(obj))
                out.append((f"robustjax.{pkg}.{name}", obj))
    return out


_LITERAL = re.compile(r"^(?P<ind>[ \t]*)Examples?::[ \t]*\n(?P<body>(?:(?P=ind)[ \t]+.*\n|[ \t]*\n)+)",
                      re.M)


def _examples():
    found = []
    for qualname, obj in _public_objects():
        doc = inspect.getdoc(obj) or ""
        for i, m in enumerate(_LITERAL.finditer(doc + "\n")):
            found.append((f"{qualname}[literal {i}]", "literal", textwrap.dedent(m["body"])))
        if ">>>" in doc:
            found.append((f"{qualname}[doctest]", "doctest", doc))
    return found


EXAMPLES = _examples()


def _namespace():
    import jax
    import jax.numpy as jnp
    import numpy as np

    import robustjax
    from robustjax import data

    ds = data.subset(data.load_dataset("mnist_embedded", "test"), slice(0, 8))
    w = jax.random.normal(jax.random.key(0), (784, 10)) * 0.05
    f = lambda v: v.reshape(v.shape[0], -1) @ w  # noqa: E731
    ns = dict(jax=jax, jnp=jnp, np=np, robustjax=robustjax, ds=ds, f=f, logits_fn=f,
              x=jnp.asarray(ds.images), y=jnp.asarray(ds.labels), key=jax.random.key(0))
    for pkg in SUBPACKAGES:
        ns[pkg] = importlib.import_module(f"robustjax.{pkg}")
    return ns


def test_examples_are_found():
    # A regex that silently stopped matching would make the parametrized test vacuous.
    kinds = {k for _, k, _ in EXAMPLES}
    assert {"literal", "doctest"} <= kinds and len(EXAMPLES) >= 3


@pytest.mark.parametrize("name,kind,code", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_docstring_example_runs(name, kind, code):
    ns = _namespace()
    if kind == "literal":
        exec(compile(code, name, "exec"), ns)
        return
    test = doctest.DocTestParser().get_doctest(code, ns, name, name, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0, f"{name}: {runner.failures} doctest failure(s)"
