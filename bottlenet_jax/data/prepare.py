"""Write a TFDS image-classification dataset as ArrayRecord files (the one step that needs TensorFlow).

    python -m bottlenet_jax.data.prepare DATASET [--data_dir DIR] [--splits train,validation]

DATASET is any TFDS name (imagenet2012, cifar10, ...) or `fashion_mnist_local` (offline, from the
Debian package's IDX files). TFDS first prepares its own copy if it has none (ImageNet needs the
manual download; the error says where to put it). The images are copied as TFDS stores them, with
their label and size, into ``{data_dir}/bottlenet_records/DATASET`` (see records.py); training reads
those with grain and OpenCV only. Re-running replaces a previous preparation atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from bottlenet_jax.data.records import prepare_command, records_dir, write_prepared  # noqa: E402
from bottlenet_jax.errors import DataError  # noqa: E402

tf.config.set_visible_devices([], "GPU")  # TF never reserves accelerator memory
IMAGENET_HELP = (
    "ImageNet (imagenet2012) is not prepared in {d}: download ILSVRC2012_img_train.tar and "
    "ILSVRC2012_img_val.tar from image-net.org into {m} (the TFDS manual dir), then run `{c}`"
)


def get_builder(name: str, data_dir: str | None = None):
    """The TFDS builder for `name`, prepared by TFDS (download/build) when that needs no manual step."""
    if name == "fashion_mnist_local":
        from bottlenet_jax.data import fashion_mnist_tfds  # noqa: F401  (registers the builder)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"dataset={name!r}: not a TFDS dataset name (e.g. imagenet2012, fashion_mnist_local, "
            f"cifar10); see tfds.list_builders()"
        ) from None
    if not builder.info.splits:  # not prepared yet (under tfds.testing.mock_data this is a no-op)
        try:
            builder.download_and_prepare()
        except FileNotFoundError as e:
            raise DataError(str(e).splitlines()[0]) from None
        except AssertionError as e:  # TFDS's "manual_dir should contain ..." for ImageNet
            if name.startswith("imagenet"):
                root = data_dir or "~/tensorflow_datasets"
                raise DataError(
                    IMAGENET_HELP.format(d=root, m=f"{root}/downloads/manual", c=prepare_command(name, data_dir))
                ) from None
            raise DataError(f"dataset={name!r} could not be prepared: {str(e).splitlines()[0]}") from None
        except Exception as e:
            raise DataError(
                f"dataset={name!r} could not be prepared: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            ) from None
    return builder


def _encoded_with_shape(builder, split):
    """(label, height, width, encoded image bytes) per example, in TFDS's order."""

    def shape(ex):
        img = ex["image"]
        hw = tf.cond(
            tf.io.is_jpeg(img),
            lambda: tf.io.extract_jpeg_shape(img)[:2],
            lambda: tf.shape(tf.io.decode_image(img, expand_animations=False), out_type=tf.int32)[:2],
        )
        return img, hw[0], hw[1], tf.cast(ex["label"], tf.int32)

    ds = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
    for img, h, w, label in tfds.as_numpy(ds.map(shape, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)):
        yield label, h, w, img


def prepare(name: str, data_dir: str | None = None, splits=None) -> str:
    """Write the dataset's splits as records; returns the directory. `splits`: default all of TFDS's."""
    builder = get_builder(name, data_dir)
    info_splits = {k: v.num_examples for k, v in builder.info.splits.items()}
    splits = list(splits or info_splits)
    if not splits:
        raise DataError(f"dataset={name!r}: TFDS lists no splits; pass --splits")
    feat, label = builder.info.features["image"], builder.info.features["label"]
    if not isinstance(feat, tfds.features.Image):
        raise DataError(f"dataset={name!r}: feature 'image' is {type(feat).__name__}, not an Image")
    names = list(label.names) if hasattr(label, "names") else [str(i) for i in range(label.num_classes)]
    return write_prepared(
        records_dir(name, data_dir),
        name,
        feat.shape[-1] or 3,
        names,
        {s: (_encoded_with_shape(builder, s), info_splits.get(s)) for s in splits},
        extra_meta={"tfds_version": str(builder.version)},
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("--data_dir", default=None, help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    p.add_argument("--splits", default=None, help="comma-separated (default: every split TFDS lists)")
    p.add_argument("--dry_run", action="store_true", help="check the arguments, then stop")
    a = p.parse_args(argv)
    if a.dry_run:
        return print(f"dry run: arguments ok (dataset {a.dataset}, data_dir {a.data_dir}, splits {a.splits})")
    try:
        root = prepare(a.dataset, a.data_dir, a.splits.split(",") if a.splits else None)
    except DataError as e:
        sys.exit(f"error: {e}")
    with open(os.path.join(root, "meta.json")) as f:
        meta = json.load(f)
    print(a.dataset, {k: v["num_examples"] for k, v in meta["splits"].items()}, "in", root)


if __name__ == "__main__":
    main()
