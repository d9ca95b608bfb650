"""img/s of the training input pipeline (grain + OpenCV over prepared records) vs a bare decode.

    python benchmarks/input_pipeline.py                      # 1, 2 workers; 2 threads in-process (2 cores)
    python benchmarks/input_pipeline.py --workers 1,2,4,8,16 # a GPU host
    python benchmarks/input_pipeline.py --train              # + end to end: loader -> jitted train step
    python benchmarks/input_pipeline.py --smoke              # CI: seconds, figures meaningless

Generates `--examples` ImageNet-like JPEGs (500x375, q=90, ~95 KiB: smooth colour fields + noise)
and writes them as prepared records (no TensorFlow needed), then measures, in one process:
* bare: `cv2.imdecode` of each full file, one thread of calls, no crop/resize/batching (and the
  same loop in as many processes at once as the largest loader setting uses: the cores' scaling);
* loader: `data.loader.train_iterator` (random-resized crop, flip, `--res` px, batch `--batch`) with
  W worker processes x T decode threads each (W=0: in this process), after warm-up batches and
  the batches the workers hold ready (measured: `buffer_depth`), so neither worker start-up nor
  the buffer is timed.
Bare and loader rounds alternate (`--rounds`), and each ratio uses the median of all bare rounds:
the machines are shared and noisy. `--train` adds the end-to-end figure: the trainer's jitted step
(BottleNet RB1, `--codec`) fed from the loader vs the same step on one synthetic on-device batch.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def make_jpegs(n, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:375, 0:500] / 100.0
    out = []
    for _ in range(n):
        img = np.stack([np.sin(xx * rng.uniform(0.5, 3) + yy * rng.uniform(0.5, 3) + c) for c in range(3)], -1)
        img = np.clip(127 + 90 * img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def bare_rate(jpegs):
    t = time.perf_counter()
    for j in jpegs:
        cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
    return len(jpegs) / (time.perf_counter() - t)


def _bare_worker(jpegs, start, rates):
    start.wait()
    rates.put(bare_rate(jpegs))


def bare_parallel(jpegs, n):
    """Summed img/s of n processes running the bare loop at once: what the host's cores allow."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    start, rates = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_bare_worker, args=(jpegs, start, rates)) for _ in range(n)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # all started
    start.set()
    total = sum(rates.get() for _ in procs)
    for p in procs:
        p.join()
    return total


def buffer_depth(next_batch, settle: float = 2.0, fast: float = 2e-3) -> int:
    """How many batches a loader holds ready with nothing consuming: after `settle` s, draws until
    one waits for a batch being made: it takes longer than `fast` s and than 5x the median draw so
    far (a busy host slows buffered draws too, but far less than making a batch). grain's depth is
    more than its per_worker_buffer_size (an in-worker prefetch, a process queue, the main
    process's prefetch thread, one batch at each hand-off): 8-9 per worker were seen."""
    time.sleep(settle)
    took = []
    while True:
        t = time.perf_counter()
        next_batch()
        dt = time.perf_counter() - t
        if dt > max(fast, 5 * statistics.median(took) if took else fast):
            return len(took)
        took.append(dt)


def loader_rate(data, cfg, batches, warmup=2):
    """Sustained img/s of the loader with an instant consumer: after start-up (`warmup` batches)
    the batches it holds ready are measured and drawn untimed (`buffer_depth`), then at least 4x
    that many are timed (a first H200 measurement timed 6 buffered batches at 8 workers and read
    330,989 img/s)."""
    from bottlenet_jax.data import loader

    it = loader.train_iterator(data, cfg, process_index=0, process_count=1)
    for _ in range(warmup):
        next(it)
    depth = buffer_depth(lambda: next(it))
    n = max(batches, 4 * depth)
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    rate = n * cfg.batch_size / (time.perf_counter() - t)
    it.close()
    time.sleep(1.0)  # let the workers and prefetch threads wind down before the next measurement
    return rate


def fed_vs_synthetic(next_batch, step, synthetic, sync, global_batch: int, steps: int, rounds: int, depth: int):
    """(loader-fed img/s per round, synthetic img/s per round) of a compiled step, rounds alternating.

    Each loader-fed round first draws `depth` batches untimed (what the loader made while the
    synthetic block ran: at most its buffer), then times n = max(steps, 4 x depth) steps: if the
    loader is slower than the step its buffer is empty from the first timed step on, and had any of
    it remained the rate would be overstated by at most depth / n."""
    fed, synth = [], []

    def block(batch_of, n):
        t = time.perf_counter()
        out = None
        for _ in range(n):
            out = step(batch_of())
        sync(out)
        return n * global_batch / (time.perf_counter() - t)

    n = max(steps, 4 * depth)
    for _ in range(rounds):
        block(next_batch, depth)
        fed.append(block(next_batch, n))
        synth.append(block(lambda: synthetic, steps))
    return fed, synth


def stage_profile(data, jpegs, res, n=512):
    """ms per image of each stage of the loader's per-example work (one thread, in this process)."""
    from collections import defaultdict

    from bottlenet_jax.data import loader, records

    source, lo, hi = data.select("train")
    spent, out = defaultdict(float), np.empty((res, res, 3), np.uint8)
    t = time.perf_counter()
    recs = source.__getitems__([k % len(jpegs) for k in range(n)])  # one call per batch, as the loader reads
    t = _tick(spent, "read record", t)
    for k, rec in enumerate(recs):
        label, h, w, enc = records.unpack(rec)
        rng = np.random.default_rng([0, 0, k])
        box = loader.random_resized_crop_box(rng, h, w)
        t = _tick(spent, "seed + crop box", t)
        img = loader.decode_crop(enc, 3, box, res)
        t = _tick(spent, "decode (cv2.imdecode)", t)
        cv2.resize(img, (res, res), dst=out, interpolation=cv2.INTER_CUBIC)
        t = _tick(spent, "resize (bicubic)", t)
        cv2.cvtColor(out, cv2.COLOR_BGR2RGB, dst=out)
        if rng.random() < 0.5:
            cv2.flip(out, 1, dst=out)
        t = _tick(spent, "BGR->RGB + flip", t)
    return {k: 1e3 * v / n for k, v in spent.items()}


def _tick(spent, key, t0):
    t1 = time.perf_counter()
    spent[key] += t1 - t0
    return t1


def end_to_end(data, cfg, a):
    """(loader-fed img/s, synthetic img/s, how it was measured) of the trainer's step: the step is
    compiled (and warmed) on synthetic batches before the loader starts, the loader's buffer is
    measured, then alternating blocks (`fed_vs_synthetic`); every round is printed."""
    import jax
    from train_throughput import make_variant  # noqa: E402  (same folder)

    from bottlenet_jax import parallel
    from bottlenet_jax.data import loader

    mesh = parallel.make_mesh()
    v = make_variant(
        a.variant,
        argparse.Namespace(
            depth=getattr(a, "depth", 50),
            width=getattr(a, "width", 64),
            dtype=a.dtype,
            res=a.res,
            batch=a.batch // mesh.size,
            channels=8,
            quality=getattr(a, "quality", 90),  # train_throughput's: one compiled program for both
        ),
        mesh,
    )

    def step(batch):
        v["state"], m = v["step"](v["state"], batch)
        return m

    jax.block_until_ready(step(v["batch"]))  # compiled before the loader starts: no buffer fills during the compile
    it = loader.train_iterator(data, cfg, process_index=0, process_count=1)

    def next_batch():
        return parallel.shard_batch({k: b for k, b in next(it).items() if k in ("image", "label")}, mesh)

    next(it)  # the workers' start-up
    depth = buffer_depth(lambda: next(it))  # the loader's own draws (sharding is not the loader's time)
    fed, synth = fed_vs_synthetic(
        next_batch, step, v["batch"], jax.block_until_ready, v["global_batch"], a.steps, a.rounds, depth
    )
    it.close()
    n = max(a.steps, 4 * depth)
    how = (
        f"buffer measured at {depth} batches (drawn untimed each round); {n} loader-fed steps timed per round, "
        f"so a leftover buffer could overstate the rate by at most {depth}/{n} = {depth / max(n, 1):.1%}; rounds "
        f"fed {', '.join(f'{x:.0f}' for x in fed)} img/s, synthetic {', '.join(f'{x:.0f}' for x in synth)} img/s"
    )
    return statistics.median(fed), statistics.median(synth), how


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=1024)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batches", type=int, default=12, help="timed batches per loader round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--workers",
        default="1,2,0x2",
        help="comma-separated worker-process counts W, or WxT for T "
        "decode threads each (default 1 thread; W=0: in this process)",
    )
    p.add_argument("--train", action="store_true", help="also the end-to-end step rate (GPU host)")
    p.add_argument("--variant", default="rb1_jpeg_device", help="train_throughput.py variant for --train")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--steps", type=int, default=20, help="steps per block for --train")
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args()
    if a.smoke:
        a.examples, a.batch, a.res, a.batches, a.rounds, a.workers, a.steps = 64, 16, 64, 2, 1, "0,1x2", 2
        a.dtype = "float32"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bottlenet_jax.data import records
    from configs import default

    jpegs = make_jpegs(a.examples)
    tmp = tempfile.mkdtemp(prefix="bench_records_")
    root = records.write_prepared(
        os.path.join(tmp, "bench"),
        "bench",
        3,
        [str(i) for i in range(1000)],
        {"train": (((i % 1000, 375, 500, j) for i, j in enumerate(jpegs)), len(jpegs))},
    )
    data = records.Prepared(root)
    cfg = default.get_config()
    cfg.update(image_size=a.res, batch_size=a.batch, train_split="train")
    stages = stage_profile(data, jpegs, a.res)  # first, while nothing else runs
    counts = [tuple(int(x) for x in (w + "x1").split("x")[:2]) for w in a.workers.split(",")]
    bare, rates, par = [], {w: [] for w in counts}, []
    n_max = max(w * t for w, t in counts)
    for _ in range(a.rounds):
        if n_max > 1:
            par.append(bare_parallel(jpegs, n_max))
        for w in counts:
            bare.append(bare_rate(jpegs))
            cfg.data_workers, cfg.data_threads = w
            rates[w].append(loader_rate(data, cfg, a.batches))
    b = statistics.median(bare)
    print(
        f"# {platform.node()} | {os.cpu_count()} host cores | opencv {cv2.__version__} | {a.examples} JPEGs "
        f"500x375 q90, mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB | {a.res} px, batch {a.batch} | "
        f"median of {a.rounds} rounds"
    )
    print(f"{'pipeline':34s} {'img/s':>8s} {'x bare':>7s}")
    print(f"{'bare cv2.imdecode, 1 thread':34s} {b:8.0f} {1:7.2f}   (rounds: {', '.join(f'{x:.0f}' for x in bare)})")
    if par:
        m = statistics.median(par)
        print(
            f"{f'bare, {n_max} processes at once':34s} {m:8.0f} {m / b:7.2f}   (rounds: "
            f"{', '.join(f'{x:.0f}' for x in par)}; what the cores allow)"
        )
    for w, t in counts:
        r = statistics.median(rates[w, t])
        name = (f"loader, {w} worker process{'es' if w != 1 else ''}" if w else "loader, in-process") + f" x {t} thr"
        print(f"{name:34s} {r:8.0f} {r / b:7.2f}   (rounds: {', '.join(f'{x:.0f}' for x in rates[w, t])})")
    print(
        "where one example's time goes (one thread): "
        + ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
        + f" ms; sum {sum(stages.values()):.3f} ms vs bare decode {1e3 / b:.3f} ms"
    )
    if a.train:
        cfg.data_workers, cfg.data_threads = counts[-1]
        fed, synth, how = end_to_end(data, cfg, a)
        print(
            f"end to end ({a.variant}, {a.dtype}, loader {counts[-1][0]}x{counts[-1][1]}): loader-fed {fed:.0f} "
            f"img/s, synthetic {synth:.0f} img/s, ratio {fed / synth:.3f}; {how}"
        )
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
