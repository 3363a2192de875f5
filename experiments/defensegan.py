"""Former name of ``experiments/generative.py`` (kept for compatibility; runs it unchanged).

    python experiments/defensegan.py --workdir /tmp/generative   # same as generative.py
"""

import importlib.util
import os

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "generative.py")
_spec = importlib.util.spec_from_file_location("robustjax_experiment_generative", _PATH)
_generative = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_generative)
train_and_evaluate = _generative.train_and_evaluate

if __name__ == "__main__":
    from absl import app

    _generative._define_flags()
    app.run(_generative.main)
