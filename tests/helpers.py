
from configs import default


def small_config(**split):
    """A BottleNet ResNet small enough for CPU tests (ResNet-50 layout, width 4, 32 px)."""
    c = default.get_config()
    c.model.update(depth=50, width=4, stem="small", num_classes=10)
    c.split.update(after=1, unit=True, channels=3, kernel=2, stride=2)
    c.split.update(**split)
    c.codec.update(name="jpeg", quality=30)
    c.image_size = 32
    c.num_train_steps = 10
    c.warmup_epochs = 0.0
    return c
