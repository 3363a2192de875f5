"""Command-line plumbing shared by the experiment scripts (and their smoke tests).

Every experiment is ``experiments/<name>.py`` with a ``train_and_evaluate(config, workdir)``
function and a config file ``experiments/configs/<name>.py`` whose ``get_config(variant)`` takes
the variant after the colon of ``--config experiments/configs/<name>.py:<variant>``.
The absl flags are defined only when a script runs (:func:`run`), never on import, so that the
test suite can import several experiments into one process.
"""

from __future__ import annotations

import importlib.util
import json
import os
from types import ModuleType
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))


def run(name: str, train_and_evaluate: Callable[[Any, str], Any], *,
        distributed: bool = True) -> None:
    """Define ``--workdir`` (default ``/tmp/robustjax_<name>``) and ``--config``
    (``configs/<name>.py``), plus the ``jax.distributed`` flags when ``distributed``, then run
    ``train_and_evaluate(config, workdir)`` under ``absl.app`` (orbax's INFO lines silenced)."""
    from absl import app, flags, logging
    from ml_collections import config_flags

    from robustjax import training

    flags.DEFINE_string("workdir", f"/tmp/robustjax_{name}", "Directory for outputs.")
    config_flags.DEFINE_config_file(
        "config", os.path.join(HERE, "configs", f"{name}.py"), "Configuration file.",
        lock_config=True)
    if distributed:
        training.define_distributed_flags()

    def main(argv):
        del argv
        logging.set_verbosity(logging.WARNING)
        if distributed:
            training.initialize_from_args(flags.FLAGS)
        train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)

    app.run(main)


def write_outputs(workdir: str, results: dict, table: str, *, timings: dict | str | None = None,
                  table_file: str = "table.md", indent: int = 2) -> None:
    """Write ``results.json`` and the Markdown ``table_file`` to ``workdir``; print the table,
    the timings (a flat ``{name: seconds}`` dict, or a preformatted string) and where it all went."""
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=indent, default=float)
    with open(os.path.join(workdir, table_file), "w") as f:
        f.write(table + "\n")
    print(table)
    if timings is not None:
        if not isinstance(timings, str):
            timings = ", ".join(f"{k}={v:.1f}" for k, v in timings.items())
        print("timings (s): " + timings)
    print(f"outputs written to {workdir}")


def load_module(name: str, path: str) -> ModuleType:
    """Import the file ``path`` as a fresh module called ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_experiment(name: str) -> ModuleType:
    """The experiment module ``experiments/<name>.py``."""
    return load_module(f"{name}_experiment", os.path.join(HERE, f"{name}.py"))


def load_config(name: str, variant: str = "default"):
    """``experiments/configs/<name>.py``'s ``get_config(variant)``."""
    module = load_module(f"{name}_config", os.path.join(HERE, "configs", f"{name}.py"))
    return module.get_config(variant)
