"""TFDS + tf.data input pipelines (the only part of the project that needs TensorFlow).

* Any TFDS image-classification dataset by name and `data_dir`; `fashion_mnist_local` builds from
  local IDX files (data/fashion_mnist.py).
* ImageNet-style train preprocessing: random-resized crop (`stateless_sample_distorted_bounding_box`
  + `decode_and_crop_jpeg`, so only the crop is decoded) and flip; eval: centre crop. `small`:
  flip only, for 28-64 px datasets.
* Deterministic and resumable: shuffling has a fixed seed, augmentation is seeded by the global
  example index, and a restart skips `start_step` batches of records *before* decoding, so a resumed
  run sees exactly the examples an uninterrupted one would.
* Multi-host: each process reads its own even slice of the split and builds batch/process_count.
* TF never sees an accelerator (it would reserve its memory).
"""
from __future__ import annotations

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

tf.config.set_visible_devices([], "GPU")
tf.config.set_visible_devices([], "TPU") if tf.config.list_physical_devices("TPU") else None

CROP_PADDING = 32
IMAGENET_HELP = ("ImageNet (imagenet2012) is not prepared in {d}: download ILSVRC2012_img_train.tar and "
                 "ILSVRC2012_img_val.tar from image-net.org into {m} (the TFDS manual dir), then run "
                 "`python -m bottlenet_jax.data.prepare imagenet2012 --data_dir {d}`")


class DataError(RuntimeError):
    """The dataset is unknown or not available here; the message says what to do."""


def get_builder(name: str, data_dir: str | None = None):
    """The prepared TFDS builder for `name` (prepared on first use when that needs no manual step)."""
    if name == "fashion_mnist_local":
        from bottlenet_jax.data import fashion_mnist  # noqa: F401  (registers the builder)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"dataset={name!r}: not a TFDS dataset name (e.g. imagenet2012, fashion_mnist_local, "
                        f"cifar10); see tfds.list_builders()") from None
    if not builder.info.splits:  # not prepared yet (under tfds.testing.mock_data this is a no-op)
        try:
            builder.download_and_prepare()
        except FileNotFoundError as e:
            raise DataError(str(e).splitlines()[0]) from None
        except AssertionError as e:  # TFDS's "manual_dir should contain ..." for ImageNet
            if name.startswith("imagenet"):
                root = data_dir or "~/tensorflow_datasets"
                raise DataError(IMAGENET_HELP.format(d=root, m=f"{root}/downloads/manual")) from None
            raise DataError(f"dataset={name!r} could not be prepared: {str(e).splitlines()[0]}") from None
        except Exception as e:
            raise DataError(f"dataset={name!r} could not be prepared: {type(e).__name__}: "
                            f"{(str(e).splitlines() or [''])[0]}") from None
    return builder


def num_examples(builder, split: str) -> int | None:
    try:
        return builder.info.splits[split].num_examples
    except KeyError:
        return None


def _image_is_encoded(builder) -> bool:
    feat = builder.info.features["image"]
    return isinstance(feat, tfds.features.Image) and feat.shape[-1] == 3


def _normalize(image, cfg):
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(cfg.mean, tf.float32)) / tf.constant(cfg.std, tf.float32)


def _random_resized_crop(jpeg, size, seed):
    shape = tf.io.extract_jpeg_shape(jpeg)
    begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.zeros([0, 0, 4], tf.float32), seed=seed, min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    y, x, _ = tf.unstack(begin)
    h, w, _ = tf.unstack(crop)
    image = tf.io.decode_and_crop_jpeg(jpeg, tf.stack([y, x, h, w]), channels=3)
    return tf.image.resize(image, [size, size], method="bicubic")


def _center_crop(jpeg, size):
    shape = tf.io.extract_jpeg_shape(jpeg)
    h, w = shape[0], shape[1]
    side = tf.cast(size / (size + CROP_PADDING) * tf.cast(tf.minimum(h, w), tf.float32), tf.int32)
    window = tf.stack([(h - side + 1) // 2, (w - side + 1) // 2, side, side])
    image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
    return tf.image.resize(image, [size, size], method="bicubic")


def _preprocess(example, index, cfg, train, encoded):
    seed = tf.stack([tf.constant(cfg.seed, tf.int64), index])
    image = example["image"]
    if encoded and cfg.preprocess == "imagenet":
        image = _random_resized_crop(image, cfg.image_size, seed) if train else _center_crop(image, cfg.image_size)
    else:
        if encoded:
            image = tf.io.decode_image(image, channels=3, expand_animations=False)
        if image.shape[0] != cfg.image_size:
            image = tf.image.resize(image, [cfg.image_size, cfg.image_size])
    if train:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    out = {"image": _normalize(image, cfg), "label": tf.cast(example["label"], tf.int32)}
    if not train:
        out["index"] = tf.cast(index, tf.int32)  # eval: seeds per-batch channel noise
    return out


def _read(builder, split, encoded):
    split = tfds.even_splits(split, n=jax.process_count())[jax.process_index()] if jax.process_count() > 1 else split
    decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None
    return builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)


def train_iterator(builder, cfg, start_step: int = 0):
    """Endless iterator of host-local numpy batches {'image', 'label'}, resumable at `start_step`."""
    local = cfg.batch_size // jax.process_count()
    encoded = _image_is_encoded(builder)
    ds = _read(builder, cfg.train_split, encoded)
    if cfg.cache:
        ds = ds.cache()
    ds = ds.shuffle(cfg.shuffle_buffer, seed=cfg.seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().skip(start_step * local)
    ds = ds.map(lambda i, ex: _preprocess(ex, i, cfg, True, encoded), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def eval_iterator(builder, cfg):
    """Each example once; the last batch is padded to full size with mask=0 rows."""
    local = cfg.eval_batch_size // jax.process_count()
    encoded = _image_is_encoded(builder)
    ds = _read(builder, cfg.eval_split, encoded)
    if cfg.eval_examples > 0:
        ds = ds.take(cfg.eval_examples // jax.process_count())
    ds = ds.enumerate().map(lambda i, ex: _preprocess(ex, i, cfg, False, encoded),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for batch in ds.batch(local).prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        n = batch["label"].shape[0]
        pad = local - n
        batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
        batch["mask"] = np.arange(local) < n
        yield batch


def label_names(builder) -> list[str]:
    feat = builder.info.features["label"]
    return list(feat.names) if hasattr(feat, "names") else [str(i) for i in range(feat.num_classes)]
