"""Defenses: median filter, TV denoising, DIP/DAE/I-DIP/RIDE; DefenseGAN and ABS."""

from robustjax.defenses._filters import TV_METHODS
from robustjax.defenses._filters import image_divergence
from robustjax.defenses._filters import image_gradient
from robustjax.defenses._filters import median_filter
from robustjax.defenses._filters import rof_energy
from robustjax.defenses._filters import tv_denoise
from robustjax.defenses._generative import ABSWithLatent
from robustjax.defenses._generative import DefenseGANReconstruction
from robustjax.defenses._generative import abs_logits
from robustjax.defenses._generative import abs_logits_with_latent
from robustjax.defenses._generative import defensegan_logits
from robustjax.defenses._generative import defensegan_reconstruct
from robustjax.defenses._generative import defensegan_reconstruct_with_latent
from robustjax.defenses._generative import make_abs_logits_fn
from robustjax.defenses._generative import make_defensegan_logits_fn
from robustjax.defenses._ride import IMAGENET_STD
from robustjax.defenses._ride import MNIST_STD
from robustjax.defenses._ride import PAPER_SIGMA_NORMALIZED
from robustjax.defenses._ride import RIDE_CONFIGS
from robustjax.defenses._ride import SIGMA_PIXEL_UNITS
from robustjax.defenses._ride import RIDE_METHODS
from robustjax.defenses._ride import DefenseTrace
from robustjax.defenses._ride import ReconstructionNet
from robustjax.defenses._ride import RideConfig
from robustjax.defenses._ride import dae
from robustjax.defenses._ride import dip
from robustjax.defenses._ride import idip
from robustjax.defenses._ride import random_loss_mask
from robustjax.defenses._ride import ride
from robustjax.defenses._ride import ride_interpolate
from robustjax.defenses._ride import self_supervised_single
from robustjax.defenses._ride import self_supervised_trace
from robustjax.defenses._ride import sigma_in_pixel_units
from robustjax.defenses._ride import ride_label

__all__ = [
    "TV_METHODS",
    "image_divergence",
    "image_gradient",
    "median_filter",
    "rof_energy",
    "tv_denoise",
    "ABSWithLatent",
    "DefenseGANReconstruction",
    "abs_logits",
    "abs_logits_with_latent",
    "defensegan_logits",
    "defensegan_reconstruct",
    "defensegan_reconstruct_with_latent",
    "make_abs_logits_fn",
    "make_defensegan_logits_fn",
    "IMAGENET_STD",
    "MNIST_STD",
    "PAPER_SIGMA_NORMALIZED",
    "RIDE_CONFIGS",
    "SIGMA_PIXEL_UNITS",
    "RIDE_METHODS",
    "DefenseTrace",
    "ReconstructionNet",
    "RideConfig",
    "dae",
    "dip",
    "idip",
    "random_loss_mask",
    "ride",
    "ride_interpolate",
    "self_supervised_single",
    "self_supervised_trace",
    "sigma_in_pixel_units",
    "ride_label",
]
