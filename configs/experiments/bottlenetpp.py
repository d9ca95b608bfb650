"""BottleNet++ on Fashion-MNIST: AWGN and binary-erasure channels, with and without the condition fed
to the encoder, against the features sent uncoded (spec: bottlenet_jax/experiments/specs/bottlenetpp.py).

    python -m bottlenet_jax.experiments bottlenetpp
    python -m bottlenet_jax.experiments bottlenetpp --config.quick=true

Results: results/README.md.
"""

import ml_collections

from configs.experiments import bottlenet


def get_config():
    c = bottlenet.get_config()
    c.spec = "bottlenetpp"
    for k in (
        "finetune_epochs",
        "split_epochs",
        "finetune_lr",
        "channels",
        "q_train",
        "identity",
        "qualities",
        "split_points",
    ):
        del c[k]
    c.baseline_config = "configs/fashion_mnist.py"  # the plain network (SGD, 2 epochs)
    c.base = "configs/fashion_mnist_bottlenetpp.py"  # the channel models' recipe (Adam, two stages, 1 epoch)
    c.split_after = 0  # 0: after the last block
    c.reduction = 64  # C' = C / reduction
    c.train_condition = ml_collections.ConfigDict(
        {"awgn": {"sigma": 0.1, "sigma_range": (0.0, 0.2)}, "bec": {"p": 0.01, "p_range": (0.0, 0.05)}}
    )
    c.conditions = ml_collections.ConfigDict(
        {"awgn": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5), "bec": (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1)}
    )
    c.workdir, c.out = "workdir/bottlenetpp", "results/fashion_mnist/bottlenetpp"
    return c
