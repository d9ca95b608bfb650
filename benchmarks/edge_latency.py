"""The edge as a deployer measures it: batch-1 latency image -> payload on one core, and the
process's peak memory, for the edge without JAX (edge.onnx in onnxruntime + the codec's numpy
encoder: bottlenet_jax.edge) against the JAX path (the exported JAX edge half + the codec's JAX
encode), measured in one run.

    python benchmarks/edge_latency.py --export export/demo export/entropy   # exports made with --onnx
    python benchmarks/edge_latency.py --smoke                               # CI: a random-init export

Needs onnxruntime and, for --smoke, jax2onnx (`make test-onnx` builds .venv-onnx with both; run the
script with its python). Each (export, runtime) runs in a fresh process pinned to one core
(os.sched_setaffinity; ONNX Runtime with one intra-op thread, XLA's pool on that core), so its
peak RSS (VmHWM: imports, weights, the runtime's arenas) is its own: what the process
costs a device. The ONNX process asserts that jax was never imported. Per image: uint8 [1, H, W, C]
-> normalise -> edge half -> codec -> payload bytes (no CRC framing, no network), `--n` test images
one at a time after `--warm` unmeasured ones; the first call (compile or session warm-up) and the
load time are printed apart. Both runtimes encode the same images: the payloads' SHA-256 is
printed per runtime (they differ only where a feature of edge.onnx lands within ~1e-6 of a rounding
boundary: tests/test_onnx_edge.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def images(shape, n):
    """The first `n` Fashion-MNIST test images when the export takes 28x28x1 and the files are here,
    else random uint8 images (numpy only: the ONNX child must not import the training package)."""
    if tuple(shape) == (28, 28, 1):
        import gzip

        for d in ("/usr/share/datasets/fashion-mnist", os.path.expanduser("~/.cache/fashion-mnist")):
            path = os.path.join(d, "t10k-images-idx3-ubyte.gz")
            if os.path.exists(path):
                with gzip.open(path) as f:
                    return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:n]
    return np.random.default_rng(0).integers(0, 256, (n, *shape), np.uint8)


def peak_rss_mib() -> float:
    """This process's peak resident set since its exec (VmHWM). Not getrusage's ru_maxrss: Linux
    carries that over exec from the forking parent, so a child of a big parent reads the parent's."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB -> MiB


def child(runtime: str, export: str, n: int, warm: int) -> None:
    """One (runtime, export) measured in this process; prints one JSON line."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    t0 = time.perf_counter()
    with open(os.path.join(export, "manifest.json")) as f:
        shape = json.load(f)["input_shape"]
    imgs = images(shape, n + warm)
    if runtime == "onnx":
        from bottlenet_jax.edge import EdgeRuntime

        edge = EdgeRuntime(export, threads=1)
        encode = edge.encode
    else:
        from bottlenet_jax.export import Half, load_codec, load_manifest

        m = load_manifest(export)
        half, (codec, state) = Half(export, "edge"), load_codec(export)
        mean, std = np.asarray(m["mean"], np.float32), np.asarray(m["std"], np.float32)

        def encode(u8):  # the edge client's JAX path (serve/client.py)
            x = (np.asarray(u8, np.float32) / np.float32(255.0) - mean) / std
            return codec.encode(np.asarray(half(x)), state=state)

    load_s = time.perf_counter() - t0
    t = time.perf_counter()
    out = encode(imgs[:1])
    first_ms = 1e3 * (time.perf_counter() - t)
    for i in range(1, warm):
        out += encode(imgs[i : i + 1])
    ms, digest = [], hashlib.sha256()
    for i in range(warm, warm + n):
        t = time.perf_counter()
        p = encode(imgs[i : i + 1])
        ms.append(1e3 * (time.perf_counter() - t))
        digest.update(p[0])
    if runtime == "onnx":
        assert "jax" not in sys.modules, "the ONNX edge imported jax"
    rss = peak_rss_mib()
    print(
        json.dumps(
            dict(
                load_s=load_s,
                first_ms=first_ms,
                median_ms=float(np.median(ms)),
                p95_ms=float(np.percentile(ms, 95)),
                rss_mib=rss,
                sha=digest.hexdigest()[:12],
                jax="jax" in sys.modules,
            )
        )
    )


def measure(runtime: str, export: str, n: int, warm: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", runtime, export, str(n), str(warm)],
        capture_output=True,
        text=True,
        env=env,
    )
    if p.returncode:
        raise SystemExit(f"{runtime} on {export} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def smoke_export(out: str) -> str:
    """A random-init export of the demo's config with edge.onnx (figures meaningless)."""
    import jax
    import jax.numpy as jnp

    from bottlenet_jax.export import export_variables
    from bottlenet_jax.models import build_model
    from configs import fashion_mnist_demo

    cfg = fashion_mnist_demo.get_config()
    v = build_model(cfg, bn_axis_name=None).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    export_variables(cfg, v, out, onnx=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", nargs="+", default=[])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--warm", type=int, default=20)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child[0], a.child[1], int(a.child[2]), int(a.child[3]))
    if a.smoke:
        a.n, a.warm = 20, 3
        a.export = [smoke_export(os.path.join(tempfile.mkdtemp(prefix="edge_latency_"), "export"))]
    if not a.export:
        p.error("give --export DIR [DIR ...] (exports made with --onnx) or --smoke")
    import onnxruntime

    print(
        f"# {os.uname().nodename} | one core per process | onnxruntime {onnxruntime.__version__} | "
        f"batch 1, {a.n} images after {a.warm} warm-up | peak RSS = the process's VmHWM"
    )
    print(
        f"{'export (codec)':34s} {'runtime':8s} {'median ms':>9s} {'p95 ms':>7s} {'first ms':>9s} "
        f"{'load s':>7s} {'peak RSS':>9s}  payloads"
    )
    for export in a.export:
        with open(os.path.join(export, "manifest.json")) as f:
            m = json.load(f)
        if not m.get("edge_onnx"):
            raise SystemExit(f"{export}: has no edge.onnx (export it with --onnx)")
        r = {rt: measure(rt, export, a.n, a.warm) for rt in ("jax", "onnx")}
        name = f"{os.path.basename(os.path.normpath(export))} ({m['codec']['name']})"
        for rt, x in r.items():
            print(
                f"{name:34s} {rt:8s} {x['median_ms']:9.2f} {x['p95_ms']:7.2f} {x['first_ms']:9.0f} "
                f"{x['load_s']:7.2f} {x['rss_mib']:7.0f} MiB  sha256 {x['sha']}"
            )
        j, o = r["jax"], r["onnx"]
        print(
            f"{'':34s} ONNX/JAX: latency {o['median_ms'] / j['median_ms']:.2f}x, peak RSS "
            f"{o['rss_mib'] / j['rss_mib']:.2f}x; payloads {'identical' if o['sha'] == j['sha'] else 'DIFFER'}"
        )


if __name__ == "__main__":
    main()
