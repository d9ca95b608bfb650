"""The learned entropy bottleneck at CPU scale: Fashion-MNIST, split after RB1, rate term in the loss.

    python train.py --config=configs/fashion_mnist_entropy.py --workdir=/tmp/fm_entropy
    python eval.py --workdir=/tmp/fm_entropy               # top-1 and real entropy-coded bytes per image

Network: the demo's (configs/fashion_mnist_demo.py: the ResNet-18 layout, small stem, width 8).
RB1 features 28x28x8 -> reduction (k2 s2, C'=8, BatchNorm, no sigmoid) -> 14x14x8 rounded to
integers and entropy-coded under the learned factorized prior (codecs/entropy/factorized.py; rANS
streams) -> restoration -> RB2..RB8. rate_lambda weighs bits per image against the task loss
(nats); the frontier study sweeps it (configs/experiments/frontier.py). Measured figures:
results/README.md.
"""

import ml_collections

from bottlenet_jax.codecs import codec_settings
from configs import fashion_mnist_demo


def get_config():
    c = fashion_mnist_demo.get_config()
    c.split.update(after=1, unit=True, channels=8, kernel=2, stride=2)
    c.codec = ml_collections.ConfigDict(codec_settings("entropy"))
    c.rate_lambda = 3e-4
    c.num_epochs = 2.0
    return c
