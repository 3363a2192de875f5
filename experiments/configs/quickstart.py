"""Quickstart configuration: normal vs PGD adversarial training of a small CNN on the embedded
MNIST digits, evaluated with FGSM and PGD-40 over several ε.

Run: ``python experiments/quickstart.py --workdir /tmp/robustjax_quickstart``
(``--config experiments/configs/quickstart.py:smoke`` for the few-second smoke variant).
"""

import ml_collections


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = "mnist_embedded"
    c.num_train = 10000          # embedded train split (real MNIST digits)
    c.num_test = 1000            # held-out digits from the official MNIST test split
    # Model: robustjax.models.MnistCNN (2 conv + 2 fc).
    c.features = (16, 32)
    c.hidden = 128
    # Optimisation (Adam; same for both runs).
    c.batch_size = 128
    c.learning_rate = 1e-3
    c.standard_epochs = 2
    c.adversarial_epochs = 4
    # PGD adversarial training (Madry et al.) at eps = 0.3.
    c.train_eps = 0.3
    c.train_steps = 7
    c.train_step_size = 0.1
    c.adversarial_warm_start = True  # start PGD training from the normally trained weights
    c.train_mix = 0.5                # weight of the adversarial half of the loss (1 = Madry)
    # Evaluation: FGSM and PGD-40 over these eps (step 2.5 eps / 40).
    c.eval_eps = (0.1, 0.2, 0.3)
    c.eval_pgd_steps = 40
    c.eval_batch_size = 250
    c.progress = True
    if variant == "smoke":
        c.num_train = 512
        c.num_test = 64
        c.features = (4, 8)
        c.hidden = 16
        c.batch_size = 64
        c.standard_epochs = 1
        c.adversarial_epochs = 1
        c.train_steps = 2
        c.eval_eps = (0.3,)
        c.eval_pgd_steps = 3
        c.eval_batch_size = 64
        c.progress = False
    elif variant != "default":
        raise ValueError(f"unknown quickstart config variant {variant!r} (default, smoke)")
    return c
