"""Training-step throughput with the codec in the loop, all variants alternating in ONE process.

    python benchmarks/train_throughput.py --batch 256 --res 224 --dtype bfloat16        # GPU: the issue's setting
    python benchmarks/train_throughput.py --smoke                                        # CPU, < 1 min (CI)
    python benchmarks/train_throughput.py --smoke --variants rb1_identity rb1_entropy   # the entropy codec's cost
    python benchmarks/train_throughput.py --depth 18 --width 8 --res 28 --batch 128 --dtype float32 \
        --variants rb1_identity rb1_entropy rb1_hyperprior        # the Fashion-MNIST network, on a CPU

Variants (default: the first four): plain ResNet-50; BottleNet RB1 (C'=8, stride 2) with the
identity codec, host JPEG (`jpeg`, backend host, thread pool), device JPEG (`jpeg`, backend device:
libjpeg's integer pipeline in XLA, bit-identical to the host codec, per-sample bytes on every step);
`--variants` adds `rb1_jpeg_host_proc` (host JPEG, process pool), `rb1_jpeg_device_opt` (device
JPEG with optimized Huffman tables), `rb1_entropy` (the learned entropy bottleneck with its rate
term in the loss: no host callback in a train step) and `rb1_hyperprior` (the mean-scale
hyperprior: its integer hyper networks simulated in float32, the rate of z and of y). The
jitted data-parallel train step (jit + shard_map, exactly the trainer's) runs on synthetic
on-device batches (input pipeline excluded). `--profile FILE` traces a few steps of each variant
and writes a text summary to FILE (top ops by device time, the codec's share; `--trace_dir` keeps
the raw trace too). Rounds alternate the variants so machine noise hits all alike; img/s is the
median over all timed steps (each blocked on its result); the ratios are to the plain model's and
to the identity unit's. The mean columns count occasional slow steps too.
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
    "rb1_entropy": dict(after=1, codec="entropy", rate_lambda=1e-4),
    "rb1_hyperprior": dict(after=1, codec="hyperprior", rate_lambda=1e-4),
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
    c.rate_lambda = v.get("rate_lambda", 0.0)
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


def summarize_trace(trace_dir: str, top: int = 15) -> str:
    """Text summary of the newest jax.profiler trace under trace_dir (written with
    create_perfetto_trace=True): device time per op name (GPU streams; on a CPU the XLA work on host
    threads), and the share of ops whose name or metadata mentions the codec."""
    import collections
    import glob
    import gzip
    import json

    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))
    if not paths:
        return f"no perfetto trace under {trace_dir}"
    with gzip.open(paths[-1]) as f:
        t = json.load(f)
    events = t["traceEvents"] if isinstance(t, dict) else t
    procs = {e["pid"]: e["args"].get("name", "") for e in events if e.get("ph") == "M" and e["name"] == "process_name"}
    device = {pid for pid, n in procs.items() if n.startswith("/device:")}
    runtime = (
        "$",
        "PjitFunction",
        "PjRt",
        "CommonPjRt",
        "Execute",
        "ThunkExecutor",
        "ParseArguments",
        "Handle",
        "Alloc",
    )
    per, count = collections.Counter(), collections.Counter()
    codec = 0.0
    for e in events:
        if e.get("ph") != "X" or (device and e["pid"] not in device) or (not device and e["name"].startswith(runtime)):
            continue
        per[e["name"]] += e.get("dur", 0.0)
        count[e["name"]] += 1
        text = e["name"] + " " + " ".join(str(v) for v in (e.get("args") or {}).values())
        if any(k in text.lower() for k in ("codec", "jpeg", "entropy")):
            codec += e.get("dur", 0.0)
    total = sum(per.values()) or 1.0
    where = "device streams" if device else "host threads (no device process in the trace)"
    lines = [f"{total / 1e3:.1f} ms of op time on {where}; ops naming the codec: {100 * codec / total:.1f} %"]
    lines += [
        f"  {100 * v / total:5.1f} %  {v / 1e3:8.2f} ms  x{count[k]:<5d} {k[:90]}" for k, v in per.most_common(top)
    ]
    return "\n".join(lines)


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
    p.add_argument("--profile", default="", help="write a text summary of a trace of 5 steps per variant to this file")
    p.add_argument("--trace_dir", default="", help="keep the raw jax.profiler trace here (default: a temp dir)")
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
        import tempfile

        summary = []
        for n in vs:
            d = a.trace_dir and os.path.join(a.trace_dir, n) or tempfile.mkdtemp(prefix=f"trace_{n}_")
            with jax.profiler.trace(d, create_perfetto_trace=True):
                run_steps(vs[n], 5)
            summary.append(f"## {n} (5 steps)\n{summarize_trace(d)}")
        with open(a.profile, "w") as f:
            f.write("\n\n".join(summary) + "\n")
        print(f"profile summary written to {a.profile}")
    times = {n: [] for n in vs}
    per_round = max(1, -(-a.steps // a.rounds))
    for _ in range(a.rounds):
        for n in vs:
            times[n] += run_steps(vs[n], per_round)
    print_table(vs, times)


def print_table(vs, times):
    """img/s per variant and its ratios to plain and to rb1_identity (median and mean step times)."""
    print(
        f"\n{'variant':<20} {'img/s':>9} {'ms/step':>8} {'vs plain':>9} {'vs identity':>12} {'mean ms':>8} "
        f"{'mean vs plain':>14}"
    )
    nan = float("nan")
    med = {n: statistics.median(t) for n, t in times.items()}
    mean = {n: statistics.fmean(t) for n, t in times.items()}
    for n in vs:
        vs_plain = med["plain"] / med[n] if "plain" in med else nan
        vs_ident = med["rb1_identity"] / med[n] if "rb1_identity" in med else nan
        m_plain = mean["plain"] / mean[n] if "plain" in mean else nan
        print(
            f"{n:<20} {vs[n]['global_batch'] / med[n]:>9.1f} {1e3 * med[n]:>8.2f} {vs_plain:>9.3f} {vs_ident:>12.3f} "
            f"{1e3 * mean[n]:>8.2f} {m_plain:>14.3f}"
        )


if __name__ == "__main__":
    main()
