"""img/s of the tf.data ImageNet-style train pipeline on JPEG inputs (is input or codec the limit?).

    python benchmarks/input_pipeline.py [--batch 256] [--res 224] [--batches 30] [--examples 512]

Generates `--examples` random-content JPEGs of ImageNet-like size (500x375, q=90) once, feeds them
through the same preprocessing as training (stateless random-resized crop via
`decode_and_crop_jpeg`, flip, normalise, batch) and reports images/s after one warm-up batch,
next to the raw `tf.io.decode_jpeg` rate on the same files for scale.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--examples", type=int, default=512)
    a = p.parse_args()
    import tensorflow as tf
    from bottlenet_jax.data import input_pipeline as ip
    from configs import default
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500] / 100.0
    jpegs = []
    for i in range(a.examples):  # smooth content + noise: realistic JPEG sizes and decode cost
        img = np.stack([np.sin(xx * rng.uniform(0.5, 3) + yy * rng.uniform(0.5, 3) + c) for c in range(3)], -1)
        img = np.clip(127 + 90 * img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        jpegs.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    cfg = default.get_config()
    cfg.image_size = a.res
    ds = tf.data.Dataset.from_tensor_slices({"image": jpegs, "label": np.arange(a.examples) % 1000})
    ds = ds.cache().repeat().enumerate()
    ds = ds.map(lambda i, ex: ip._preprocess(ex, i, cfg, True, True), num_parallel_calls=tf.data.AUTOTUNE)
    it = ds.batch(a.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
    next(it)
    t = time.perf_counter()
    for _ in range(a.batches):
        next(it)
    pipe = a.batches * a.batch / (time.perf_counter() - t)
    t = time.perf_counter()
    for j in jpegs:
        tf.io.decode_jpeg(j)
    dec = len(jpegs) / (time.perf_counter() - t)
    print(f"# {os.cpu_count()} host cores | tf {tf.__version__} | {a.examples} JPEGs 500x375 q90, mean "
          f"{np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB")
    print(f"train pipeline (crop+flip+normalise, {a.res}px, batch {a.batch}): {pipe:.0f} img/s")
    print(f"bare tf.io.decode_jpeg, one thread of calls:            {dec:.0f} img/s")


if __name__ == "__main__":
    main()
