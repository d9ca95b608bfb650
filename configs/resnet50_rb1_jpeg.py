"""The BottleNet paper's ImageNet setting: ResNet-50, bottleneck after RB1, JPEG in the loop.

Fine-tunes from torchvision ImageNet weights (`--config.init_from`: a .pth or .npz file).

    python train.py --config=configs/resnet50_rb1_jpeg.py --workdir=/tmp/rb1_jpeg \
        --config.init_from=/path/resnet50-11ad3fa6.pth --config.data_dir=/path/tfds

RB1 features 56x56x256 -> reduction (k2 s2, C'=8) -> 28x28x8 -> JPEG q=90 -> restoration. JPEG runs
on the accelerator (codec.backend=device): the same pixels and byte counts as cv2, bit for bit,
without the host round trip that slows the host backend (benchmarks/README.md: the GPU figures).
Expected: not measured here (no ImageNet or accelerator on our machine). The paper reports about
316 bytes/image with negligible top-1 loss vs the 76.1 % baseline; our Fashion-MNIST studies
(results/README.md) are the evidence we can regenerate.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.model.dtype = "bfloat16"
    c.split.update(after=1, unit=True, channels=8, kernel=2, stride=2)
    c.codec.update(quality=90, backend="device")
    c.num_epochs = 10.0
    c.learning_rate = 0.01
    c.warmup_epochs = 0.5
    c.stage1_steps = 5000
    return c
