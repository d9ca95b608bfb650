"""The ResNet-50 layout at CPU scale on real Fashion-MNIST (28x28 grey): BottleNet after RB1, JPEG in the loop.

    python train.py --config=configs/fashion_mnist.py --workdir=/tmp/fmnist    # BottleNet from scratch
    python -m bottlenet_jax.experiments bottlenet --dry_run                     # the study that uses it

ResNet-50 layout (bottleneck blocks, small stem, base width 8): RB1 features 28x28x32 -> reduction
(k2 s2, C'=2) -> 14x14x2 -> JPEG q=30 (tiled 28x28) -> restoration -> RB2..RB16. Model selection on
train[:5000] (held out), training on the other 55,000, the test split once. Measured figures, each
with its command, commit and date: results/README.md.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.model.update(depth=50, width=8, stem="small", num_classes=10)
    c.split.update(after=1, unit=True, channels=2, kernel=2, stride=2)
    c.codec.update(quality=30)
    c.dataset = "fashion_mnist_local"
    c.train_split = "train[5000:]"
    c.validation_split = "train[:5000]"  # model selection; the test split is evaluated once, at the end
    c.eval_split = "test"
    c.image_size = 28
    c.preprocess = "small"
    c.mean = (0.286,)
    c.std = (0.353,)
    c.data_workers = 0  # 28x28 PNGs decode in microseconds: two threads here, no worker start-up
    c.data_threads = 2
    c.batch_size = 128
    c.eval_batch_size = 500
    c.num_epochs = 1.0
    c.learning_rate = 0.2
    c.weight_decay = 5e-5
    c.warmup_epochs = 0.1
    c.checkpoint_every_steps = 200
    c.log_every_steps = 20
    return c
