"""Write tests/data/unit_maps.npz: what a trained BottleNet reduction unit sends, as uint8.

    make demo                                         # trains workdir/demo (Fashion-MNIST, RB1, C'=4)
    python tests/data/make_unit_maps.py [--workdir workdir/demo] [--n 128]

The first `n` Fashion-MNIST test images go through the trained edge half (backbone to RB1 + the
reduction unit, eval mode); its [0, 1] outputs are quantised to uint8 exactly as the JPEG codec
does. tests/test_jpeg_device.py codes these maps, which have the texture real training sends.
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=os.path.join(ROOT, "workdir", "demo"))
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "unit_maps.npz"))
    a = p.parse_args()
    import jax
    from bottlenet_jax.checkpoint import Checkpoints
    from bottlenet_jax.codecs.quantize import quantize_u8_np
    from bottlenet_jax.checkpoint import load_config
    from bottlenet_jax.models import build_model

    cfg = load_config(a.workdir)
    raw = Checkpoints(a.workdir).restore_raw()
    from bottlenet_jax.data.fashion_mnist import FILES, HOW_TO_GET, local_dir, read_idx
    folder = local_dir()
    if folder is None:
        sys.exit(f"error: {HOW_TO_GET}")
    images = read_idx(os.path.join(folder, FILES["test"][0]))[: a.n, :, :, None]
    x = (images.astype(np.float32) / 255 - np.float32(cfg.mean[0])) / np.float32(cfg.std[0])
    model = build_model(cfg, bn_axis_name=None)
    z = jax.jit(lambda v, x: model.apply(v, x, part="edge"))(
        {"params": raw["params"], "batch_stats": raw["batch_stats"]}, x)
    maps = quantize_u8_np(np.asarray(z))
    source = (f"{os.path.relpath(a.workdir, ROOT)} step {int(raw['step'])}, codec {cfg.codec.name} "
              f"q={cfg.codec.quality}, split after RB{cfg.split.after}")
    np.savez_compressed(a.out, maps=maps, source=source)
    print(f"wrote {a.out}: {maps.shape} uint8, mean {maps.mean():.1f}, {os.path.getsize(a.out)} bytes")


if __name__ == "__main__":
    main()
