"""Plain ResNet-50 v1.5 on ImageNet (no split, no bottleneck): the accuracy reference.

    python train.py --config=configs/resnet50_baseline.py --workdir=/tmp/r50 --config.data_dir=/path/tfds

Expected: ~76 % top-1 after 90 epochs (torchvision's recipe); not measured on our machine.
"""

import ml_collections

from bottlenet_jax.codecs import codec_settings
from configs import default


def get_config():
    c = default.get_config()
    c.model.dtype = "bfloat16"
    c.split.after = 0
    c.codec = ml_collections.ConfigDict(codec_settings("identity"))
    return c
