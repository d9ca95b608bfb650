"""`make demo`: train BottleNet (RB1, JPEG in the loop) on real Fashion-MNIST, evaluate, compare.

    python -m bottlenet_jax.demo [--workdir workdir/demo] [--steps N]

Prints test top-1, the features' bytes/sample (full JFIF file and abbreviated stream) and, for
comparison, the same test images sent as JPEG at the same quality (and raw: 784 bytes).
Re-running resumes (or just re-evaluates) the run in --workdir.
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from bottlenet_jax import cli
from bottlenet_jax.codecs import jpeg


def input_jpeg_bytes(data, cfg, quality: int):
    """Mean bytes of each eval image (as the model sees it) JPEG-compressed by cv2 at `quality`
    (full file, abbreviated stream), and its raw size."""
    from bottlenet_jax.data import loader
    full, abbr = [], []
    for batch in loader.eval_iterator(data, cfg):
        for img in batch["image"][batch["mask"]]:
            ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            full.append(enc.size)
            abbr.append(len(jpeg.abbreviate(enc.tobytes(), optimize=False)))
    return float(np.mean(full)), float(np.mean(abbr)), int(img.size)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="workdir/demo")
    p.add_argument("--steps", type=int, default=-1, help="train steps (default: the config's 1 epoch)")
    a = p.parse_args(argv)
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    from configs import fashion_mnist
    from bottlenet_jax import train_lib
    from bottlenet_jax.data import records

    cfg = fashion_mnist.get_config()
    cfg.num_train_steps = a.steps
    t0 = time.time()
    s = cli.guarded(train_lib.train_and_evaluate, cfg, a.workdir)
    q = cfg.codec.quality
    img_full, img_abbr, raw = input_jpeg_bytes(cli.guarded(records.open_prepared, cfg.dataset, cfg.data_dir), cfg, q)
    print(f"\n=== BottleNet demo: Fashion-MNIST test split ({s['examples']} images), split after RB{cfg.split.after}, "
          f"C'={cfg.split.channels}, stride {cfg.split.stride}, JPEG q={q}; {time.time() - t0:.0f} s ===")
    print(f"test top-1 accuracy         : {100 * s['top1']:.2f} %")
    print(f"feature bytes/sample        : {s['bytes_payload_mean']:.1f} (abbreviated stream), "
          f"{s['bytes_full_mean']:.1f} (full JFIF)   [median {s['bytes_payload_median']:.0f}, p95 {s['bytes_payload_p95']:.0f}]")
    print(f"input image JPEG q={q} bytes : {img_abbr:.1f} (abbreviated stream), {img_full:.1f} (full JFIF); raw {raw}")


if __name__ == "__main__":
    main()
