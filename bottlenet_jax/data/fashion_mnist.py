"""Fashion-MNIST's four IDX files, found offline: $FASHION_MNIST_DIR, then the Debian package
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist). No TensorFlow here (the demo, the edge's
tests and the benchmarks read the files directly); the TFDS builder `fashion_mnist_local` that
prepares them as records is fashion_mnist_tfds.py, imported only by prepare.py.

    python -m bottlenet_jax.data.prepare fashion_mnist_local [--data_dir DIR]   # prepare once
"""

from __future__ import annotations

import gzip
import os

import numpy as np

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
HOW_TO_GET = (
    "Fashion-MNIST files not found: run `sudo apt-get install dataset-fashion-mnist`, or put the "
    "four *-ubyte.gz files in a folder and set FASHION_MNIST_DIR to it"
)


def local_dir() -> str | None:
    for d in (os.environ.get("FASHION_MNIST_DIR"), DEBIAN_DIR):
        if d and all(os.path.exists(os.path.join(d, f)) for pair in FILES.values() for f in pair):
            return d
    return None


def read_idx(path: str) -> np.ndarray:
    """IDX (big-endian header: magic, dims) -> uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)
