"""The mean-scale hyperprior at CPU scale (Fashion-MNIST, RB1): the Entropic Student's unit with
codecs/entropy/hyperprior.py in place of the factorized prior.

    python train.py --config=configs/fashion_mnist_hyperprior.py --workdir=/tmp/fm_hp --config.num_epochs=1
    python eval.py --workdir=/tmp/fm_hp                   # top-1, rANS bytes per image, the rate estimate beside
    python train.py --config=configs/fashion_mnist_hyperprior.py --workdir=/tmp/fm_hp_s --config.codec.form=scale

Network and recipe: configs/fashion_mnist_entropic_student.py's (the demo's ResNet-18 layout, two
strided convs each side of the codec: RB1's 28x28x8 -> 7x7x8 features, a first stage training the
unit and the codec only). The codec: y -> integer hyper-analysis -> z (4x4x8) under a factorized
prior; integer hyper-synthesis -> per element a scale level and a mean; y coded under that Gaussian,
z and y in one rANS stream per sample that decodes identically on any machine. Its tables are
built from the parameters after training (no data read); no tables are fitted to the training
split, so the rate term prices exactly what is sent. Measured figures: results/README.md.
"""

import ml_collections

from bottlenet_jax.codecs import codec_settings
from configs import fashion_mnist_entropic_student


def get_config():
    c = fashion_mnist_entropic_student.get_config()
    c.codec = ml_collections.ConfigDict(codec_settings("hyperprior"))
    c.rate_lambda = 4e-4
    return c
