"""RIDE experiment configurations (seed 002: Table 1, Table 2, Fig. 5a, Fig. 6, Fig. 7).

Variants:

* ``"default"`` (= ``"small"``) — CPU-sized run on the embedded MNIST digits: a small
  noise-augmented CNN, 16 test digits, RIDE with ``K = 50, T = 4`` (``RIDE_CONFIGS["small"]``),
  BPDA PGD-10 with EOT over 2 draws. Roughly 15 CPU-minutes with the former ``nn.Conv`` FCN
  (~10 ms per image and step on CPU); the im2col FCN (``RideFCN(conv="patches")``, default)
  measured ~3 ms per image and step on a loaded 2-core machine
  (experiments/benchmarks/ride.py), so about a third of that.
* ``"smoke"`` — seconds-sized end-to-end check (tiny CNN, tiny FCN, 4 digits, ``K = 4, T = 2``).
* ``"mnist"``, ``"cifar10"``, ``"imagenet"`` — the paper's settings (K = 2000, T = 5, α = 0.9,
  σ = 0.5, p = 0.9, Adam 1e-4 / wd 1e-4, Table 3 FCNs, BPDA PGD-10 at ε = 0.1 / 0.05). Not run
  here: each image costs K·T = 10,000 network steps, and a BPDA evaluation 10 × EOT times that.
  ``"imagenet"`` needs a pretrained classifier and data this project does not ship (see
  ``experiments/ride.py``).

Run: ``python experiments/ride.py --workdir /tmp/ride``
(``--config experiments/configs/ride.py:smoke`` for the smoke variant).
"""

import ml_collections

_VARIANTS = ("default", "small", "smoke", "mnist", "cifar10", "imagenet")


def _ride(**overrides) -> ml_collections.ConfigDict:
    # The paper's hyperparameters (robustjax.defenses.RideConfig defaults).
    r = dict(num_steps=2000, num_checkpoints=5, alpha=0.9, sigma=0.5, batch_size=1,
             learning_rate=1e-4, weight_decay=1e-4, decoupled_weight_decay=False,
             mask_ratio=0.9, nms=True, dropout_at_eval=True, dip_noise_scale=0.1)
    r.update(overrides)
    return ml_collections.ConfigDict(r)


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    if variant not in _VARIANTS:
        raise ValueError(f"unknown ride config variant {variant!r} {_VARIANTS}")
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "mnist_embedded"
    c.num_train = 10000
    c.num_test = 16              # first test images that are evaluated (all methods, all attacks)
    # Classifier: "mnist_cnn" (robustjax.models.MnistCNN: 2 conv + 2 fc, as the paper's MNIST
    # classifier) or "resnet18" (the paper's CIFAR-10 classifier).
    c.classifier = "mnist_cnn"
    c.features = (16, 32)
    c.hidden = 128
    c.batch_size = 128
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.schedule = "constant"
    c.weight_decay = 0.0
    c.epochs = 2
    # Gaussian noise augmentation of the classifier's training batches: a fraction
    # `train_noise_fraction` of each batch gets N(0, train_noise_std²) noise (clipped to [0, 1]),
    # so that reconstructions stay in the classifier's domain. The paper trains plainly (0).
    c.train_noise_std = 0.3
    c.train_noise_fraction = 0.5
    # Reconstruction network (robustjax.models.ride_fcn(fcn)): Table 3 spec name.
    c.fcn = "mnist"
    c.fcn_dropout = True
    c.ride = _ride(num_steps=50, num_checkpoints=4, learning_rate=1e-2, sigma=0.2, mask_ratio=0.5)
    c.defense_batch_size = 16    # images defended in one vectorized program
    # Gray-box attacks (Table 1): the attack sees the classifier only.
    c.gray_eps = 0.3
    c.gray_pgd_steps = 10
    c.gray_pgd_step_size = 0.05
    # Baselines: Table 1 reports the best setting of each (Tables 4-6 list them all).
    c.median_sizes = (3, 5)
    c.tv_methods = ("bregman", "chambolle")
    c.tv_weights = (0.1, 0.2, 0.4)
    c.tv_iters = 100
    c.defend_clean = True        # also report every defender on clean images
    # Fig. 5a ablation on the FGSM images.
    c.ablation_methods = ("dip", "idip", "dae", "ride")
    # White-box BPDA (Table 2 / Fig. 7): identity backward pass, inner l_inf PGD-10, no random
    # start; the randomized RIDE is attacked through EOT over `eot_samples` draws.
    c.bpda_eps = 0.1
    c.bpda_step_size = 0.02
    c.bpda_steps = 10
    c.eot_samples = 2
    c.bpda_median_size = 3
    c.bpda_tv_method = "bregman"
    c.bpda_tv_weight = 0.2
    c.num_figure_images = 8
    c.progress = True
    # XLA backend optimization level for the self-supervised defenders and the BPDA attack on
    # RIDE (-1: XLA's default). 0 compiles ~4x faster and runs ~4x slower on CPU (smoke runs).
    c.xla_backend_optimization_level = -1
    # Batching of the per-image defenders: "vmap" (one vectorized program; accelerators) or
    # "map" (lax.map over images; same result, faster to compile and run on CPU).
    c.vectorize = "map"

    if variant == "smoke":
        c.num_train = 512
        c.num_test = 4
        c.features = (4, 8)
        c.hidden = 16
        c.batch_size = 64
        c.epochs = 4
        c.learning_rate = 3e-3
        c.fcn = "tiny"
        c.ride = _ride(num_steps=4, num_checkpoints=2, learning_rate=1e-2, sigma=0.2,
                       mask_ratio=0.5)
        c.defense_batch_size = 4
        c.gray_pgd_steps = 2
        c.gray_pgd_step_size = 0.15
        c.median_sizes = (3,)
        c.tv_methods = ("chambolle",)
        c.tv_weights = (0.2,)
        c.tv_iters = 10
        c.bpda_steps = 2
        c.bpda_step_size = 0.05
        c.eot_samples = 2
        c.num_figure_images = 4
        c.progress = False
        c.xla_backend_optimization_level = 0
        c.vectorize = "vmap"
    elif variant in ("mnist", "cifar10", "imagenet"):
        c.ride = _ride()                 # K = 2000, T = 5 (paper)
        c.vectorize = "vmap"             # meant for an accelerator
        c.train_noise_std = 0.0          # the paper's classifiers are trained plainly
        c.num_test = 1000
        c.defense_batch_size = 50
        c.median_sizes = (3, 5, 7, 9, 11)
        c.tv_methods = ("bregman", "chambolle")
        c.tv_iters = 200
        c.eot_samples = 10
        c.bpda_steps = 10
        if variant == "mnist":
            c.dataset = "mnist"
            c.num_train = 60000
            c.features = (32, 64)        # 2 conv + 2 fc (the paper reports 98.98 % clean)
            c.hidden = 1024
            c.epochs = 10
            c.fcn = "mnist"
            c.gray_eps = 0.3
            c.gray_pgd_step_size = 0.05
            c.tv_weights = (0.1, 0.2, 0.3, 0.5)
            c.bpda_eps = 0.1
            c.bpda_step_size = 0.02
        else:
            c.classifier = "resnet18"
            c.optimizer = "sgd"
            c.learning_rate = 0.1
            c.schedule = "cosine"
            c.weight_decay = 5e-4
            c.epochs = 100
            c.fcn = "cifar10" if variant == "cifar10" else "imagenet"
            c.gray_eps = 0.05 if variant == "cifar10" else 0.015   # ImageNet: FGSM 0.015
            c.gray_pgd_step_size = c.gray_eps / 4
            c.tv_weights = (0.075, 0.125, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
            c.bpda_eps = 0.05
            c.bpda_step_size = 0.01
            c.bpda_median_size = 3
            c.bpda_tv_weight = 0.25
            if variant == "cifar10":
                c.dataset = "cifar10"
                c.num_train = 50000
            else:
                # Needs a pretrained ResNet50 and the 2,000-image validation subset
                # (two per class, centre-cropped 224×224), which the project does not ship.
                c.dataset = "imagenet"
                c.classifier = "external"
                c.num_test = 2000
                c.defense_batch_size = 8
    return c
