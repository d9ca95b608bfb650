"""The learned entropy bottleneck at CPU scale: Fashion-MNIST, split after RB1, rate term in the loss.

    python -m bottlenet_jax.experiments.frontier          # baseline, every codec, 3 seeds (its docstring)
    python train.py --config=configs/fashion_mnist_entropy.py --workdir=/tmp/fm_entropy
    python eval.py --workdir=/tmp/fm_entropy               # top-1 and real entropy-coded bytes per image

Network: the demo's (configs/fashion_mnist_demo.py: the ResNet-18 layout, small stem, width 8). On
this project's 2-core CPU it trains ~7x faster than the ResNet-50 layout at width 8 of
configs/fashion_mnist.py (0.28 vs 2.1 s per step of 128 images) and reaches a higher top-1 (90.86 %
after 2 epochs), which is what lets the frontier experiment train every codec over three seeds.
RB1 features 28x28x8 -> reduction (k2
s2, C'=8, BatchNorm, no sigmoid) -> 14x14x8 rounded to integers and entropy-coded under the learned
factorized prior (codecs/entropy/factorized.py; rANS streams) -> restoration -> RB2..RB8.

rate_lambda weighs bits per image against the task loss (nats). The frontier experiment fine-tunes
this unit from a 2-epoch baseline for 2 epochs at rate_lambda 5e-5, 1e-4, 2e-4; its figures over three
seeds, with the command, commit and date: results/fashion_mnist/frontier/results.md.
Expected (that table, 3 seeds, header commit aea1a2d, 2 CPU cores, 2026-12-03): with distillation,
rate_lambda 1e-4 sends 370.0 ± 2.6 B per image at 90.01 ± 0.33 % top-1 (baseline 90.57 ± 0.42 %),
2e-4 sends 148.8 ± 23.5 B at 88.59 ± 0.86 %.
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
