"""The lightweight codec (no retraining) at four split points of the Fashion-MNIST baseline (spec:
bottlenet_jax/experiments/specs/lightweight.py).

    python -m bottlenet_jax.experiments lightweight
    python -m bottlenet_jax.experiments lightweight --config.split_points=1,4 --config.quick=true

Results: results/README.md.
"""

from configs.experiments import bottlenet


def get_config():
    c = bottlenet.get_config()
    c.spec = "lightweight"
    for k in ("finetune_epochs", "split_epochs", "finetune_lr", "channels", "q_train", "identity", "qualities"):
        del c[k]
    c.calib = 512
    c.uniform_levels = (2, 3, 4, 6, 8, 16)
    c.ecsq_lambdas = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # lambda / b^2, N = 16
    c.workdir, c.out = "workdir/lightweight", "results/fashion_mnist/lightweight"
    return c
