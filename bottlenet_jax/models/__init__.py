from bottlenet_jax.models.resnet import ResNet, block_layout, stride_after_block, channels_after_block
from bottlenet_jax.models.split import SplitModel, build_model, validate, feature_shape, DTYPES
