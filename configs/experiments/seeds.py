"""The demo's comparison over three seeds: BottleNet (RB1, JPEG q=30 in the loop) and the same unit
trained without the codec, against the input image (spec: bottlenet_jax/experiments/specs/bottlenet.py).

    python -m bottlenet_jax.experiments seeds                      # the demo's network and budget, seeds 0, 1, 2
    python -m bottlenet_jax.experiments seeds --config.seeds=0,1   # any seeds

Results: results/README.md.
"""

from configs.experiments import bottlenet


def get_config():
    c = bottlenet.get_config()
    c.base = "configs/fashion_mnist_demo.py"  # the ResNet-18 layout, width 8
    c.seeds = (0, 1, 2)
    c.baseline_epochs, c.finetune_epochs = 1.0, 0.5
    c.qualities = (10, 20, 30, 40, 50, 60, 70, 80, 90)
    c.split_points = (1,)
    c.workdir, c.out = "workdir/seeds", "results/fashion_mnist/seeds"
    return c
