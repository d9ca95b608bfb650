"""`make demo`: BottleNet (JPEG) vs the input image, on real Fashion-MNIST, on 2 CPU cores.

    make demo                       # python -m bottlenet_jax.demo (this config)
    python -m bottlenet_jax.demo --entropy_config configs/fashion_mnist_entropy.py --hyperprior_config ""
    python train.py --config=configs/fashion_mnist_demo.py --workdir=/tmp/fm_demo    # BottleNet from scratch

Network: the ResNet-18 layout (basic blocks, small stem, base width 8), several times faster per
step on a CPU than the ResNet-50 layout of configs/fashion_mnist.py. RB1 features 28x28x8 ->
reduction (k2 s2, C'=2) -> 14x14x2 -> JPEG q=30 (tiled 28x28) -> restoration -> RB2..RB8. Model
selection on train[:5000] (held out), training on the other 55,000, the test split once. What
`make demo` printed, with its commit and date: results/fashion_mnist/demo_history.md.
"""

from configs import fashion_mnist


def get_config():
    c = fashion_mnist.get_config()
    c.model.update(depth=18, width=8)
    return c
