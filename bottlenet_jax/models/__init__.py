"""ResNet-50 v1.5 (and 18/34/101/152) in Flax, cut after any residual block, with BottleNet's unit."""

from bottlenet_jax.models.resnet import ResNet, block_layout, channels_after_block, stride_after_block
from bottlenet_jax.models.split import DTYPES, SplitModel, build_model, feature_shape, validate

__all__ = [
    "DTYPES",
    "ResNet",
    "SplitModel",
    "block_layout",
    "build_model",
    "channels_after_block",
    "feature_shape",
    "stride_after_block",
    "validate",
]
