"""Write tests/data/entropy_maps.npz: what a trained entropy bottleneck sends, and its parameters.

    python train.py --config=configs/fashion_mnist_entropy.py --workdir=WORKDIR   # or a frontier run
    python tests/data/make_entropy_maps.py --workdir WORKDIR [--n 1000]

The first `n` Fashion-MNIST test images go through the trained edge half (backbone to RB1 + the
reduction unit, eval mode); the codec's symbols round(y - median) are stored as int16, with the
codec's parameters (density_* and medians). tests/test_entropy.py checks the graph's rate estimate
against the real range-coded streams of these maps.
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "entropy_maps.npz"))
    a = p.parse_args()
    import jax

    from bottlenet_jax.checkpoint import Checkpoints, load_config
    from bottlenet_jax.codecs.entropy import factorized as entropy
    from bottlenet_jax.data import loader, records
    from bottlenet_jax.models import build_model
    from bottlenet_jax.steps import normalize

    cfg = load_config(a.workdir)
    cfg.eval_examples, cfg.eval_split = a.n, "test"
    raw = Checkpoints(a.workdir).restore_raw()
    variables = {"params": raw["params"], "batch_stats": raw["batch_stats"]}
    model = build_model(cfg, bn_axis_name=None)
    edge = jax.jit(lambda x: model.apply(variables, normalize(x, cfg.mean, cfg.std), part="edge"))
    data = records.open_prepared(cfg.dataset, cfg.data_dir)
    y = np.concatenate([np.asarray(edge(b["image"]))[b["mask"]] for b in loader.eval_iterator(data, cfg)])
    codec = jax.device_get(raw["params"]["codec"])
    med = np.asarray(codec["medians"], np.float32)
    sym = entropy.quantize_np(y, med.ravel())
    assert np.abs(sym).max() < 2**15
    density = {f"density_{k}": np.asarray(v, np.float32) for k, v in codec["density"].items()}
    np.savez_compressed(a.out, symbols=sym.astype(np.int16), medians=med, **density)
    print(f"wrote {a.out}: {sym.shape} symbols (|q| <= {np.abs(sym).max()}), {os.path.getsize(a.out)} bytes")


if __name__ == "__main__":
    main()
