"""Flax Linen models — classifiers, and the generators / reconstruction nets of the papers.

Classifiers: ``model.apply(variables, x [N, H, W, C] in [0, 1], train=False)``.

With ``train=True`` and batch norm, call ``apply(..., mutable=["batch_stats"])``; dropout uses
the rng name ``"dropout"``. :func:`make_logits_fn` turns a model and its variables into the
``logits_fn`` that the core layer consumes.
"""

from robustjax.models._adapt import NNXModel
from robustjax.models._adapt import as_model
from robustjax.models._cnn import LeNet5
from robustjax.models._cnn import MadryCNN
from robustjax.models._cnn import MnistCNN
from robustjax.models._cnn import TinyCNN
from robustjax.models._layers import ACTIVATIONS
from robustjax.models._layers import get_activation
from robustjax.models._layers import max_pool_2x2
from robustjax.models._layers import normalize_input
from robustjax.models._mlp import MLP
from robustjax.models._resnet import BasicBlock
from robustjax.models._resnet import ResNet
from robustjax.models._resnet import ResNet18
from robustjax.models._resnet import ResNet20
from robustjax.models._resnet import ResNetTiny
from robustjax.models._utils import count_params
from robustjax.models._utils import init_model
from robustjax.models._utils import make_logits_fn
from robustjax.models._wide_resnet import WideBlock
from robustjax.models._wide_resnet import WideResNet
from robustjax.models._wide_resnet import WideResNet28_10
from robustjax.models._wide_resnet import WideResNetTiny
from robustjax.models._generative import ClassConditionalVAE
from robustjax.models._generative import ClassConditionalVAETiny
from robustjax.models._generative import DCGANCritic
from robustjax.models._generative import DCGANCriticTiny
from robustjax.models._generative import DCGANEncoder
from robustjax.models._generative import DCGANEncoderTiny
from robustjax.models._generative import DCGANGenerator
from robustjax.models._generative import DCGANGeneratorTiny
from robustjax.models._generative import crop_to_28
from robustjax.models._generative import generator_lipschitz_inputs
from robustjax.models._generative import pad_to_32
from robustjax.models._l2l import ConditionalBatchNorm
from robustjax.models._l2l import L2LGenerator
from robustjax.models._l2l import L2LGeneratorTiny
from robustjax.models._ride import RIDE_CONV_IMPLS
from robustjax.models._ride import RIDE_FCN_SPECS
from robustjax.models._ride import RideFCN
from robustjax.models._ride import coin_dropout_mask
from robustjax.models._ride import make_reconstruction_net
from robustjax.models._ride import patches_conv3x3
from robustjax.models._ride import ride_fcn
from robustjax.models._attack_generators import AdvGANDiscriminator
from robustjax.models._attack_generators import AdvGANGenerator
from robustjax.models._attack_generators import GAPGenerator
from robustjax.models._attack_generators import ResnetGenerator
from robustjax.models._stn import STNClassifier
from robustjax.models._stn import affine_flow

__all__ = [
    "NNXModel",
    "as_model",
    "STNClassifier",
    "affine_flow",
    "AdvGANDiscriminator",
    "AdvGANGenerator",
    "GAPGenerator",
    "ResnetGenerator",
    "ClassConditionalVAE",
    "ClassConditionalVAETiny",
    "DCGANCritic",
    "DCGANCriticTiny",
    "DCGANEncoder",
    "DCGANEncoderTiny",
    "DCGANGenerator",
    "DCGANGeneratorTiny",
    "crop_to_28",
    "generator_lipschitz_inputs",
    "pad_to_32",
    "ConditionalBatchNorm",
    "L2LGenerator",
    "L2LGeneratorTiny",
    "RIDE_FCN_SPECS",
    "RIDE_CONV_IMPLS",
    "RideFCN",
    "coin_dropout_mask",
    "patches_conv3x3",
    "make_reconstruction_net",
    "ride_fcn",
    "ACTIVATIONS",
    "BasicBlock",
    "LeNet5",
    "MLP",
    "MadryCNN",
    "MnistCNN",
    "ResNet",
    "ResNet18",
    "ResNet20",
    "ResNetTiny",
    "TinyCNN",
    "WideBlock",
    "WideResNet",
    "WideResNet28_10",
    "WideResNetTiny",
    "count_params",
    "get_activation",
    "init_model",
    "make_logits_fn",
    "max_pool_2x2",
    "normalize_input",
]
