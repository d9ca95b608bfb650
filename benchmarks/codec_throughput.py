"""Per-batch JPEG time inside a jitted function (host and device backends) vs a bare cv2 loop; the
entropy codec's transport beside JPEG's.

    python benchmarks/codec_throughput.py                       # the grid below, ratios printed
    python benchmarks/codec_throughput.py --batch 128 --size 28 --channels 8 --runs 30
    python benchmarks/codec_throughput.py --transport --entropy-export E --jpeg-export J --hyperprior-export H
    python benchmarks/codec_throughput.py --smoke               # seconds, for CI (both parts)

For each (batch, map size, C'): median wall time of `jit(codec)(x)` (quantize on device, ONE
pure_callback, chunked pool of threads or of spawned processes, back to device), of the host
function alone on numpy (the thread pool, no device round trip), and of a single-threaded bare
`cv2.imencode`+`cv2.imdecode` loop over the same tiled uint8 images; ratio = jit / bare (< 1 means
the pool more than pays for the callback). The device backend (`jpeg_xla.jpeg_device`, the same
bits computed in XLA) is timed the same way, `jit dev ms`. Then pool scaling 1..cores for one size.
All numbers come from one run of this script: compare ratios, not absolute times across machines.

`--transport`: what a client's encode and a server's decode cost per sample, `codec.encode` /
`codec.decode` of each export (its edge half's features of the first Fashion-MNIST test images; with
no exports, synthetic features and tables fitted to them), for JPEG, the entropy codec's rANS and
range streams and the hyperprior: batch 1 and 256, on one core (the process pinned to one CPU, cv2 at one
thread) and on all (the batch cut into one part per core, coded in threads); bytes per sample and
the ratios to JPEG's time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from bottlenet_jax.codecs import JpegCodec, codec_settings, make_codec  # noqa: E402
from bottlenet_jax.codecs.jpeg.codec import jpeg_roundtrip_np  # noqa: E402
from bottlenet_jax.codecs.jpeg.host import POOLS, host_workers  # noqa: E402
from bottlenet_jax.codecs.jpeg.tiling import tile  # noqa: E402
from bottlenet_jax.codecs.quantize import quantize_u8_np  # noqa: E402


def maps(rng, b, s, c):
    """Feature-like maps: smooth sigmoid fields, half of them ReLU-sparse."""
    yy, xx = np.meshgrid(np.linspace(0, 1, s), np.linspace(0, 1, s), indexing="ij")
    fx, fy, ph = (rng.uniform(0.5, 3, (b, 1, 1, c)) for _ in range(3))
    f = 2 * np.sin(2 * np.pi * (fx * xx[None, :, :, None] + fy * yy[None, :, :, None] + ph))
    f = f + 0.3 * rng.normal(size=f.shape)
    out = 1 / (1 + np.exp(-f))
    out[::2] = np.maximum(out[::2] - 0.6, 0) * 2.5
    return np.clip(out, 0, 1).astype(np.float32)


def median_time(fn, runs):
    fn()  # warm-up (compile)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bare_loop(u8, quality, layout):
    imgs = tile(u8, layout)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]

    def run():
        for img in imgs:
            ok, enc = cv2.imencode(".jpg", img, params)
            cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)

    return run


def measure(b, s, c, quality, runs, threads=0, layout="grid", pools=POOLS, host=True):
    """{pool | "device": jit seconds}, host-function seconds (threads) or None, bare-loop seconds or None."""
    x = maps(np.random.default_rng(0), b, s, c)
    xd = jax.device_put(x)
    t_jit = {}
    codecs = {pool: JpegCodec(quality=quality, layout=layout, workers=threads, pool=pool) for pool in pools}
    if host:
        codecs["device"] = JpegCodec(quality=quality, layout=layout, backend="device")
    for name, codec in codecs.items():
        f = jax.jit(lambda x, codec=codec: codec(x))  # x_hat and the byte counts, as training uses them
        t_jit[name] = median_time(lambda: jax.block_until_ready(f(xd)), runs)
    if not host:
        return t_jit, None, None
    u8 = quantize_u8_np(x)
    t_host = median_time(lambda: jpeg_roundtrip_np(u8, quality, layout, workers=threads), runs)
    return t_jit, t_host, median_time(bare_loop(u8, quality, layout), runs)


def transport_inputs(a, batch):
    """{name: (codec, state, features [batch, h, w, C])} and where the features come from."""
    out = {}
    exports = {"jpeg": a.jpeg_export, "entropy": a.entropy_export, "hyperprior": a.hyperprior_export}
    if all(exports.values()):
        from serve_load import export_images

        from bottlenet_jax.export import Half, load_codec, load_manifest

        for name, d in exports.items():
            codec, state = load_codec(d)
            out[name] = (codec, state, np.asarray(Half(d, "edge")(export_images(load_manifest(d), batch))))
        source = f"Fashion-MNIST test images through {', '.join(exports.values())}"
    else:
        rng = np.random.default_rng(0)
        codec = make_codec(codec_settings("entropy", fit_context="neighbours"))
        y = lambda n: np.round(rng.laplace(0, 0.35, (n, 14, 14, 8))).astype(np.float32)  # noqa: E731
        params = codec.init_params(jax.random.key(0), (14, 14, 8))
        out["entropy"] = (codec, codec.fit(params, [y(512)]), y(batch))
        out["jpeg"] = (JpegCodec(quality=30), {}, maps(rng, batch, 14, 2))
        hyper = make_codec(codec_settings("hyperprior"))
        state = hyper.fit(hyper.init_params(jax.random.key(0), (7, 7, 8)), ())
        out["hyperprior"] = (hyper, state, rng.normal(0, 0.6, (batch, 7, 7, 8)).astype(np.float32))
        source = "synthetic features (no exports given; the hyperprior at its init)"
    codec, state, y = out["entropy"]
    out["entropy"] = (make_codec({**codec.settings(), "stream": "rans"}), state, y)
    out["entropy range"] = (make_codec({**codec.settings(), "stream": "range"}), state, y)
    return {k: out[k] for k in ("jpeg", "entropy", "entropy range", "hyperprior")}, source


def transport(a):
    """The --transport table (module docstring)."""
    cv2.setNumThreads(1)
    cores = sorted(os.sched_getaffinity(0))
    inputs, source = transport_inputs(a, 256)
    print(f"\n# transport: codec.encode / codec.decode per sample; {source}; median of {a.runs}")
    print(
        f"{'codec':<14} {'map':>8} {'B/sample':>9} {'batch':>5} {'cores':>5} {'encode ms':>10} {'decode ms':>10} "
        f"{'enc/JPEG':>9} {'dec/JPEG':>9}"
    )
    for batch, n_cores in ((256, 1), (1, 1), (256, len(cores))):
        os.sched_setaffinity(0, cores[:n_cores])
        pool = concurrent.futures.ThreadPoolExecutor(n_cores)
        times = {}
        for name, (codec, state, y) in inputs.items():
            parts = np.array_split(y[:batch], n_cores)
            payloads = [codec.encode(p, state=state) for p in parts]
            enc = lambda: list(pool.map(lambda p: codec.encode(p, state=state), parts))  # noqa: E731
            dec = lambda: list(  # noqa: E731
                pool.map(lambda pl, p: codec.decode(pl, p.shape, state=state), payloads, parts)
            )
            runs = a.runs if batch > 1 else 10 * a.runs
            times[name] = (median_time(enc, runs) / batch, median_time(dec, runs) / batch)
            nbytes = np.mean([len(b) for pl in payloads for b in pl])
            te, td = times[name]
            je, jd = times.get("jpeg", (np.nan, np.nan))
            label = "entropy rans" if name == "entropy" else name
            print(
                f"{label:<14} {'x'.join(map(str, y.shape[1:])):>8} {nbytes:>9.1f} {batch:>5} {n_cores:>5} "
                f"{1e3 * te:>10.4f} {1e3 * td:>10.4f} {te / je:>9.2f} {td / jd:>9.2f}",
                flush=True,
            )
        pool.shutdown()
    os.sched_setaffinity(0, cores)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--size", type=int, nargs="+", default=[28, 56])
    p.add_argument("--channels", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--smoke", action="store_true", help="tiny grid, 3 runs (CI)")
    p.add_argument("--transport", action="store_true", help="only the entropy-vs-JPEG transport table")
    p.add_argument("--entropy-export", default="", help="an entropy export for --transport")
    p.add_argument("--jpeg-export", default="", help="a JPEG export for --transport")
    p.add_argument("--hyperprior-export", default="", help="a hyperprior export for --transport")
    a = p.parse_args()
    if a.smoke:
        a.batch, a.size, a.channels, a.runs = [32], [28], [4], 3
    if a.transport:
        return transport(a)
    print(
        f"# {platform.node()} | {platform.processor() or platform.machine()} | {host_workers()} host threads | "
        f"jax {jax.__version__} on {jax.devices()[0].platform} | cv2 {cv2.__version__} | q={a.quality} | "
        f"median of {a.runs}"
    )
    print(
        f"{'batch':>5} {'map':>5} {'C':>3} {'jit thr ms':>11} {'jit proc ms':>12} {'jit dev ms':>11} "
        f"{'host thr ms':>12} {'bare cv2 ms':>12} {'thr/bare':>9} {'proc/bare':>10} {'dev/bare':>9}"
    )
    for b in a.batch:
        for s in a.size:
            for c in a.channels:
                tj, th, tb = measure(b, s, c, a.quality, a.runs)
                print(
                    f"{b:>5} {s:>4}² {c:>3} {1e3 * tj['threads']:>11.2f} {1e3 * tj['processes']:>12.2f} "
                    f"{1e3 * tj['device']:>11.2f} {1e3 * th:>12.2f} {1e3 * tb:>12.2f} {tj['threads'] / tb:>9.2f} "
                    f"{tj['processes'] / tb:>10.2f} {tj['device'] / tb:>9.2f}",
                    flush=True,
                )
    b, s, c = a.batch[-1], a.size[0], a.channels[-1]
    print(f"\n# pool scaling, batch {b}, {s}x{s}x{c}: jit ms")
    print(f"{'workers':>7} {'threads':>9} {'processes':>10} {'thr speed-up':>13} {'proc speed-up':>14}")
    base = None
    for t in range(1, host_workers() + 1):
        tj, _, _ = measure(b, s, c, a.quality, a.runs, threads=t, host=False)
        base = base or tj["threads"]
        print(
            f"{t:>7} {1e3 * tj['threads']:>9.2f} {1e3 * tj['processes']:>10.2f} {base / tj['threads']:>13.2f} "
            f"{base / tj['processes']:>14.2f}",
            flush=True,
        )
    if a.smoke:
        transport(a)


if __name__ == "__main__":
    main()
