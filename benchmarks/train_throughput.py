"""Training-step throughput with the codec in the loop, all variants alternating in ONE process.

    python benchmarks/train_throughput.py --batch 256 --res 224 --dtype bfloat16        # GPU: the issue's setting
    python benchmarks/train_throughput.py --smoke                                        # CPU, < 1 min (CI)

Variants (default: the first four): plain ResNet-50; BottleNet RB1 (C'=8, stride 2) with the
identity codec, host JPEG (`jpeg`, backend host, thread pool), device JPEG (`jpeg`, backend device:
libjpeg's integer pipeline in XLA, bit-identical to the host codec, per-sample bytes on every step);
`--variants` adds `rb1_jpeg_host_proc` (host JPEG, process pool) and `rb1_jpeg_device_opt` (device
JPEG with optimized Huffman tables). The jitted data-parallel train step (jit + shard_map, exactly
the trainer's) runs on synthetic on-device batches (input pipeline excluded). `--profile DIR`
writes a `jax.profiler` trace of a few steps of each variant (open in TensorBoard / Perfetto).
Rounds alternate the variants so machine noise hits all alike; img/s is the median over all timed
steps (each blocked on its result), and the ratio is to the plain model's. The mean columns count
occasional slow steps too.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from bottlenet_jax import parallel  # noqa: E402
from bottlenet_jax.codecs import codec_settings  # noqa: E402
from bottlenet_jax.models import build_model  # noqa: E402
from bottlenet_jax.steps import compile_steps
from bottlenet_jax.train_lib import create_train_state  # noqa: E402
from configs import default  # noqa: E402

VARIANTS = {
    "plain": dict(after=0, codec="identity"),
    "rb1_identity": dict(after=1, codec="identity"),
    "rb1_jpeg_host": dict(after=1, codec="jpeg"),
    "rb1_jpeg_host_proc": dict(after=1, codec="jpeg", pool="processes"),
    "rb1_jpeg_device": dict(after=1, codec="jpeg", backend="device"),
    "rb1_jpeg_device_opt": dict(after=1, codec="jpeg", backend="device", optimize=True),
}
DEFAULT_VARIANTS = ["plain", "rb1_identity", "rb1_jpeg_host", "rb1_jpeg_device"]


def make_variant(name, a, mesh):
    v = VARIANTS[name]
    c = default.get_config()
    c.model.update(depth=a.depth, width=a.width, dtype=a.dtype, num_classes=1000)
    c.model.stem = "imagenet" if a.res >= 64 else "small"
    c.split.update(after=v["after"], unit=True, channels=a.channels, kernel=2, stride=2)
    jpeg_settings = dict(
        pool=v.get("pool", "threads"),
        backend=v.get("backend", "host"),
        optimize=v.get("optimize", False),
        quality=a.quality,
    )
    c.codec = ml_collections.ConfigDict(codec_settings(v["codec"], **(jpeg_settings if v["codec"] == "jpeg" else {})))
    c.image_size = a.res
    c.batch_size = a.batch * mesh.size
    c.warmup_epochs = 0.0
    model = build_model(c)
    state, tx = create_train_state(c, model, 3, 1000, 10_000)
    state = parallel.replicate(state, mesh)
    p_train, _ = compile_steps(model, tx, mesh, c)
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch(
        {
            "image": rng.integers(0, 256, (c.batch_size, a.res, a.res, 3), np.uint8),
            "label": rng.integers(0, 1000, c.batch_size).astype(np.int32),
        },
        mesh,
    )
    return {"state": state, "step": p_train, "batch": batch, "global_batch": c.batch_size}


def run_steps(v, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        v["state"], m = v["step"](v["state"], v["batch"])
        jax.block_until_ready((v["state"].step, m))
        times.append(time.perf_counter() - t)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256, help="per device")
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--devices", type=int, default=0, help="0 = all")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--steps", type=int, default=24, help="timed steps per variant (>= 20)")
    p.add_argument("--rounds", type=int, default=4, help="alternations; steps are split across rounds")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--profile", default="", help="write a jax.profiler trace of 5 steps per variant here")
    p.add_argument("--smoke", action="store_true", help="CPU smoke: 32 px, batch 4, width 8, 20 steps")
    a = p.parse_args()
    if a.smoke:
        a.batch, a.res, a.width, a.dtype, a.steps, a.rounds, a.warmup = 4, 32, 8, "float32", 20, 2, 1
    devices = jax.devices()[: a.devices] if a.devices else jax.devices()
    mesh = parallel.make_mesh(devices)
    d0 = devices[0]
    print(
        f"# {platform.node()} | {len(devices)} x {getattr(d0, 'device_kind', d0.platform)} | jax {jax.__version__} | "
        f"ResNet-{a.depth} width {a.width} {a.res}x{a.res} {a.dtype} | batch {a.batch}/device | "
        f"JPEG q={a.quality}, C'={a.channels}"
    )
    vs = {}
    for name in a.variants:
        t = time.perf_counter()
        vs[name] = make_variant(name, a, mesh)
        run_steps(vs[name], a.warmup)
        print(f"compiled + warmed {name} in {time.perf_counter() - t:.1f} s", flush=True)
    if a.profile:
        with jax.profiler.trace(a.profile):
            for n in vs:
                with jax.profiler.TraceAnnotation(f"variant {n}"):
                    run_steps(vs[n], 5)
        print(f"profile written to {a.profile}")
    times = {n: [] for n in vs}
    per_round = max(1, -(-a.steps // a.rounds))
    for _ in range(a.rounds):
        for n in vs:
            times[n] += run_steps(vs[n], per_round)
    print(f"\n{'variant':<20} {'img/s':>9} {'ms/step':>8} {'vs plain':>9} {'mean ms':>8} {'mean vs plain':>14}")
    ref = None
    for n in vs:
        med, mean = statistics.median(times[n]), statistics.fmean(times[n])
        ref = ref or ((med, mean) if n == "plain" else None)
        r_med, r_mean = (ref[0] / med, ref[1] / mean) if ref else (float("nan"), float("nan"))
        print(
            f"{n:<20} {vs[n]['global_batch'] / med:>9.1f} {1e3 * med:>8.2f} {r_med:>9.3f} {1e3 * mean:>8.2f} "
            f"{r_mean:>14.3f}"
        )


if __name__ == "__main__":
    main()
