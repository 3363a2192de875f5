"""DefenseGAN attack comparison (Chen, Xie, Zhu, ICML 2020, supplementary §D/§E, Figure 1).

A generator ``G`` (the decoder of a small MLP VAE trained on the embedded MNIST digits) and a small
MLP classifier ``F`` make the defense ``F(G(z*(x)))``; attacks: the paper's CW-style attack with
gradients through ``z*`` (``implicit`` = implicit function theorem, ``neumann`` = Lemma 1,
``backtrack`` = Lemma 2), BPDA (Eqn 21), NES (Eqn 20), and CW on the undefended classifier.
Output: accuracy vs ℓ2 budget curves (PNG + JSON) and a table.

Run: ``python experiments/defensegan.py --workdir /tmp/defensegan``
(``--config experiments/configs/defensegan.py:smoke`` for the smoke variant,
``:full`` for the GPU-scale paper setting, not run here).
"""

import ml_collections


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = "mnist_embedded"
    c.num_train = 10000
    c.num_attack = 32             # test digits attacked (paper: 100)
    # Generator: MLP VAE decoder (latent d), trained with Adam on BCE + KL.
    c.generator = "mlp_vae"       # "mlp_vae" | "dcgan" (full config: WGAN-GP DCGAN, Table 2)
    c.latent_dim = 10
    c.vae_hidden = 256
    c.vae_epochs = 8
    c.vae_batch_size = 128
    c.vae_learning_rate = 1e-3
    # Classifier: robustjax.models.MLP.
    c.clf_hidden = 128
    c.clf_epochs = 3
    c.clf_batch_size = 128
    c.clf_learning_rate = 1e-3
    # DefenseGAN projection (robustjax.defenses.defensegan_reconstruct).
    c.defense = ml_collections.ConfigDict(dict(
        num_restarts=4, steps=60, lr=10.0, momentum=0.7, init_std=1.0,
        backward_steps=10, cg_maxiter=30, ridge=1e-3))
    # Attacks (robustjax.attacks._generative): sign steps eta_t = max_step * t / T, 5-step
    # binary search over lambda.
    c.methods = ("implicit", "backtrack", "bpda", "nes")
    c.attack_steps = 50
    c.max_step = 0.04
    c.schedule = "increasing"
    c.binary_search_steps = 5
    c.initial_const = 1.0
    c.nes_samples = 50
    c.nes_sigma = 0.5
    # NES costs nes_samples defense forwards per step: fewer steps / constants on CPU.
    c.nes_steps = 20
    c.nes_binary_search_steps = 2
    c.undefended_cw = True        # CW ℓ2 on F alone (the "ADVT"-style reference curve)
    c.cw_steps = 100
    c.budgets = (1.0, 2.0, 3.0, 4.0)
    c.progress = False
    if variant == "smoke":
        c.num_train = 1024
        c.num_attack = 4
        c.latent_dim = 4
        c.vae_hidden = 32
        c.vae_epochs = 1
        c.clf_hidden = 16
        c.clf_epochs = 1
        c.defense.num_restarts = 1
        c.defense.steps = 10
        c.defense.cg_maxiter = 5
        c.defense.backward_steps = 3
        c.methods = ("implicit", "bpda", "nes")
        c.attack_steps = 5
        c.binary_search_steps = 2
        c.nes_samples = 4
        c.nes_steps = 3
        c.nes_binary_search_steps = 1
        c.cw_steps = 5
    elif variant == "full":
        # Paper scale (GPU): WGAN-GP DCGAN generator of Table 2 (robustjax.models.DCGANGenerator,
        # robustjax.training.make_wgan_gp), DefenseGAN's official projection (L = 200 steps,
        # R = 10 restarts, lr 10, momentum 0.7), 100 test digits, T = 200 attack steps.
        # Not run here; the "dcgan" generator path is left to the GPU follow-up.
        c.generator = "dcgan"
        c.latent_dim = 128
        c.num_attack = 100
        c.defense.num_restarts = 10
        c.defense.steps = 200
        c.defense.init_std = None
        c.defense.cg_maxiter = 100
        c.methods = ("implicit", "neumann", "backtrack", "bpda", "nes")
        c.attack_steps = 200
        c.nes_steps = 200
        c.nes_binary_search_steps = 5
        c.clf_epochs = 10
    elif variant != "default":
        raise ValueError(f"unknown defensegan config variant {variant!r} (default, smoke, full)")
    return c
