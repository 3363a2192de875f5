"""Former name of ``experiments/generative.py`` (kept for compatibility; runs it unchanged).

    python experiments/defensegan.py --workdir /tmp/generative   # same as generative.py
"""

import os

import _common

_generative = _common.load_module(
    "robustjax_experiment_generative",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "generative.py"))
train_and_evaluate = _generative.train_and_evaluate

if __name__ == "__main__":
    _common.run("generative", train_and_evaluate, distributed=False)
