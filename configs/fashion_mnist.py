"""`make demo`: BottleNet on real Fashion-MNIST (28x28 grey), bottleneck after RB1, JPEG in the loop.

    python train.py --config=configs/fashion_mnist.py --workdir=/tmp/fmnist_demo

CPU-sized ResNet-50 layout (bottleneck blocks, small stem, base width 8): RB1 features 28x28x32
-> reduction (k2 s2, C'=4) -> 14x14x4 -> JPEG q=50 (tiled 28x28) -> restoration -> RB2..RB16.
Expected on 2 CPU cores (~6 min, 1 epoch): test top-1 about 0.80-0.85 at ~250-300 bytes/sample
(abbreviated stream); the input image JPEG'd at the same quality is ~400 bytes (full file ~700).
"""
from configs import default


def get_config():
    c = default.get_config()
    c.model.update(depth=50, width=8, stem="small", num_classes=10)
    c.split.update(after=1, unit=True, channels=4, kernel=2, stride=2)
    c.codec.update(name="jpeg", quality=50)
    c.dataset = "fashion_mnist_local"
    c.train_split = "train"
    c.eval_split = "test"
    c.image_size = 28
    c.preprocess = "small"
    c.mean = (0.286,)
    c.std = (0.353,)
    c.cache = True
    c.shuffle_buffer = 60000
    c.batch_size = 128
    c.eval_batch_size = 500
    c.num_epochs = 1.0
    c.learning_rate = 0.2
    c.weight_decay = 5e-5
    c.warmup_epochs = 0.1
    c.checkpoint_every_steps = 200
    c.log_every_steps = 20
    return c
