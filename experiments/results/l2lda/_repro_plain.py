"""The L2L-DA ``repro`` run's Plain classifier, retrained for this folder's evidence scripts.

``diversity.py`` and ``evidence.py`` both continue training from the repro's Plain model with the
repro's keys; this is their one copy of that setup.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple


class ReproPlain(NamedTuple):
    exp: Any  # the experiments/l2lda.py module
    config: Any  # the repro config (rows overridden to ("Plain",) for the retraining)
    repro_rows: tuple[str, ...]  # the repro's own rows: row r trains with fold_in(k_train, r)
    k_train: Any
    train: Any
    test: Any
    model: Any
    plain: Any  # the Plain classifier's variables


def retrain_repro_plain(workdir: str, n_test: int) -> ReproPlain:
    """Retrain the repro's Plain model (same key derivation as ``train_and_evaluate``, same
    weights as the measured run) and load the first ``n_test`` test digits."""
    import jax

    import _common
    from robustjax import data

    exp = _common.load_experiment("l2lda")
    config = _common.load_config("l2lda", "repro")
    k_train = jax.random.split(jax.random.key(config.seed), 4)[0]
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, n_test))
    repro_rows = tuple(config.rows)
    with config.unlocked():
        config.rows = ("Plain",)
        config.progress = False
    model, rows, _ = exp.train_rows(config, train, test, k_train, os.path.join(workdir, "w"))
    return ReproPlain(exp, config, repro_rows, k_train, train, test, model,
                      rows["Plain"]["variables"])
