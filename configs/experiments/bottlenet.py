"""BottleNet at four split points on Fashion-MNIST, JPEG-aware vs identity-trained units, against the
input image (spec: bottlenet_jax/experiments/specs/bottlenet.py).

    python -m bottlenet_jax.experiments bottlenet                      # the ResNet-50 layout, 1 seed
    python -m bottlenet_jax.experiments bottlenet --config.quick=true  # toy size (CI)

Results: results/README.md.
"""

import ml_collections

from bottlenet_jax import cli


def get_config():
    c = ml_collections.ConfigDict()
    c.spec = "bottlenet"
    c.base = "configs/fashion_mnist.py"  # the ResNet-50 layout, width 8
    net = cli.load_config_file(c.base)
    for k in ("dataset", "train_split", "validation_split", "image_size", "mean", "std", "preprocess"):
        c[k] = net[k]
    c.data_dir = ml_collections.config_dict.placeholder(str)
    c.test_split, c.num_classes, c.overrides = net.eval_split, net.model.num_classes, ()
    c.seeds = (0,)
    c.baseline_epochs, c.finetune_epochs, c.split_epochs, c.finetune_lr = 2.0, 1.0, 0.5, 0.05
    c.channels, c.q_train = 2, 30
    c.identity = True  # the same unit trained with the identity codec: what the codec in the loop buys
    c.qualities = (10, 30, 50, 70, 90)
    c.split_points = (1, 4, 8, 14)
    c.tolerance = 0.01
    c.workdir, c.out, c.quick = "workdir/bottlenet", "results/fashion_mnist/bottlenet", False
    return c
