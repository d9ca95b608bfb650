"""`fashion_mnist_local`: a TFDS builder for Fashion-MNIST that works offline (prepare.py imports it;
TensorFlow is needed only here and there).

It reads the four IDX files from, in order: $FASHION_MNIST_DIR, the Debian package
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), and only then tries TFDS's own download
of the official files. Same features as TFDS's `fashion_mnist` (28x28x1 uint8 image, 10-class label).

    python -m bottlenet_jax.data.prepare fashion_mnist_local [--data_dir DIR]   # prepare once
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from bottlenet_jax.data.fashion_mnist import FILES, HOW_TO_GET, LABELS, URL, local_dir, read_idx


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST from local IDX files (see module docstring)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(28, 28, 1)), "label": tfds.features.ClassLabel(names=LABELS)}
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager):
        d = local_dir()
        if d:
            paths = {s: [os.path.join(d, f) for f in pair] for s, pair in FILES.items()}
        else:
            try:
                got = dl_manager.download({f: URL + f for pair in FILES.values() for f in pair})
            except Exception as e:  # no network: say how to get the files, in one line
                raise FileNotFoundError(f"{HOW_TO_GET} (download failed: {type(e).__name__})") from None
            paths = {s: [os.fspath(got[f]) for f in pair] for s, pair in FILES.items()}
        return {s: self._generate_examples(*p) for s, p in paths.items()}

    def _generate_examples(self, images_path, labels_path):
        images, labels = read_idx(images_path), read_idx(labels_path)
        for i, (img, lab) in enumerate(zip(images, labels)):
            yield i, {"image": img[..., None], "label": int(lab)}
