"""Every test process sees 4 CPU devices, so data-parallel code is exercised without accelerators."""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def feature_maps(rng, n, h, w, c, kind="mixed"):
    """Realistic [0,1] feature maps: ReLU-sparse blobs and smooth sigmoid fields, not white noise."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = np.empty((n, h, w, c), np.float32)
    for i in range(n):
        for j in range(c):
            f = sum(rng.normal() * np.sin(2 * np.pi * (rng.uniform(0.5, 3) * xx + rng.uniform(0.5, 3) * yy + rng.uniform()))
                    for _ in range(3))
            if kind == "sparse" or (kind == "mixed" and (i + j) % 2):
                out[i, :, :, j] = np.maximum(f - 0.8, 0) / 3
            else:
                out[i, :, :, j] = 1 / (1 + np.exp(-f))
    return np.clip(out, 0, 1)


@pytest.fixture(scope="session")
def mock_imagenet(tmp_path_factory):
    """A data_dir holding imagenet2012 records prepared from tfds.testing.mock_data (64 per split)."""
    import tensorflow_datasets as tfds
    from bottlenet_jax.data.prepare import prepare
    d = tmp_path_factory.mktemp("mock_tfds")
    with tfds.testing.mock_data(num_examples=64):
        prepare("imagenet2012", str(d), splits=("train", "validation"))
    return d


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def write_tiny_fashion_mnist(d, n_train=40, n_test=12):
    """Small random IDX files in Fashion-MNIST's layout (for builder and CLI tests)."""
    import gzip
    from bottlenet_jax.data.fashion_mnist import FILES
    r = np.random.default_rng(0)

    def write(path, arr):
        header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(x).to_bytes(4, "big") for x in arr.shape)
        with gzip.open(path, "wb") as f:
            f.write(header + arr.astype(np.uint8).tobytes())
    for split, n in (("train", n_train), ("test", n_test)):
        imgs, labs = FILES[split]
        write(os.path.join(d, imgs), r.integers(0, 256, (n, 28, 28)))
        write(os.path.join(d, labs), np.arange(n) % 10)
    return d
