"""Tiny everything, for tests on `tfds.testing.mock_data` ImageNet (see tests/test_train.py).

    pytest tests/test_train.py

Expected: finishes in well under a minute on 2 CPU cores; accuracy is meaningless (random data).
"""

from configs import default


def get_config():
    c = default.get_config()
    c.model.update(depth=18, width=8, stem="imagenet", num_classes=1000)
    c.split.update(after=2, unit=True, channels=4, kernel=2, stride=2)
    c.codec.update(quality=50)
    c.train_split = "train[16:]"
    c.validation_split = "train[:16]"
    c.image_size = 64
    c.batch_size = 8
    c.eval_batch_size = 8
    c.num_train_steps = 4
    c.eval_examples = 16
    c.data_workers = 0
    c.data_threads = 2
    c.warmup_epochs = 0.0
    c.checkpoint_every_steps = 2
    c.eval_every_steps = 4
    c.log_every_steps = 1
    return c
