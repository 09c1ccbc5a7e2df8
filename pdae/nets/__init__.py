"""Networks: the ADM-style U-Net prior, PDAE's semantic encoder and gradient estimator (docs/protocol.md §2).

Diff-AE's conditional U-Net, the latent MLP and the classifier live in their own modules
(`pdae.nets.cond_unet`, `pdae.nets.latent_mlp`, `pdae.nets.classifier`).
"""

from pdae.nets.encoder import SemanticEncoder
from pdae.nets.gradient_estimator import GradientEstimator, ResBlockShift
from pdae.nets.prior import FeatureLayout, FrozenPrior, OutputBlockSpec, PriorFeatures
from pdae.nets.unet import UNet

__all__ = [
    "FeatureLayout",
    "FrozenPrior",
    "GradientEstimator",
    "OutputBlockSpec",
    "PriorFeatures",
    "ResBlockShift",
    "SemanticEncoder",
    "UNet",
]
