"""inception_fast: GoogLeNet (Inception v1) with fused Inception blocks, same logits as torchvision, sooner.

from inception_fast import FusedGoogLeNet
model = FusedGoogLeNet.from_torchvision(torchvision.models.googlenet(weights="DEFAULT")).eval()
"""

from .graphs import CapturedForward
from .modules import (
    FusedForeignInception,
    FusedGoogLeNet,
    FusedInception,
    FuseReport,
    available_backends,
    clear_packed_weights,
    fuse,
)
from .precompiler import precompile
from .reference import GoogLeNet, Inception

__all__ = [
    "Inception",
    "GoogLeNet",
    "FusedInception",
    "FusedForeignInception",
    "FusedGoogLeNet",
    "fuse",
    "FuseReport",
    "available_backends",
    "clear_packed_weights",
    "CapturedForward",
    "precompile",
]
__version__ = "0.1.0"
