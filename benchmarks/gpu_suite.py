"""One prepared accelerator run: every open GPU figure, each stage time-boxed, files flat in one folder.

    python benchmarks/gpu_suite.py --out DIR --commit HASH --stages env,train,loader,anchor   # <= 9 min
    python benchmarks/gpu_suite.py --smoke --out /tmp/gpu_smoke  # any CPU, toy sizes, < 3 min (make smoke)

Each stage runs in a process of its own with a time budget; one that fails or runs out of time is
reported in summary.md and the next one runs; one whose wheels are not importable is skipped at once,
naming them. Within a stage the figures with targets come first, so a stage cut short keeps them.
Stages (budget on the GPU / with --smoke):
  env      GPU, driver, host cores, versions, commit                                      15 s / 60 s
  hyper    the hyperprior's eval graph on the accelerator (its integer networks at float32 HIGHEST
           precision, the rANS byte count) vs the numpy path on the host: z's symbols, scale levels,
           means, residuals, y_hat and bytes of 4,096 feature maps of two shapes: mismatches   35 s / 90 s
  exact    jpeg_device (on the accelerator) vs cv2 on 2,048 tiles: 28, 56, 112 and 224 px square,
           q = 1, 50, 95, 100, optimize off and on: differing pixels and byte counts     110 s / 90 s
  train    the trainer's jitted step, ResNet-50 224^2 bf16 batch 256: plain, rb1_identity and
           rb1_jpeg_device (img/s, ratios to plain and to rb1_identity, profile.txt: top ops by device
           time in 5 traced steps), then rb1_entropy, rb1_jpeg_device_opt and rb1_jpeg_host (process
           pool), each timed beside plain and rb1_identity                                300 s / 240 s
  codec    the codec alone, batch 256, RB1 maps 28x28xC' and 56x56xC', C' = 1, 4, 8, 16:
           ms per batch, host (16 spawned processes, one pool) vs device                 40 s / 60 s
  loader   2,048 generated 500x375 q90 JPEGs as prepared records: the loader-fed train step vs
           synthetic batches (16 workers), then loader img/s at 16, 8, 4, 2, 1 workers   150 s / 90 s
  anchor   plain ResNet-50 against MLPerf v4.0's ~7,900 img/s per H200: the latency-hiding
           scheduler at batch 256, then batch 512, each in its own process                70 s / 60 s
All seven stages need 12.0 min of budget, more than one 10-minute command: a ResNet-50 variant compiles in
36-51 s on the H200's host. A 15-minute device session runs the stages still open (the first line).
The stages share one persistent compilation cache (a temp dir), so the loader stage's step, the train
stage's rb1_jpeg_device program, is not compiled twice.
Writes DIR/{env,hyper,exact,train,profile,codec,loader,anchor}.txt and DIR/summary.md (9 files, flat:
what the device tool brings back). Needs jax, flax, optax, orbax, opencv and the wheels of
`make gpu-wheels` (ml_collections, grain, array_record, constriction, ...); no TensorFlow.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

# name -> (budget s on the accelerator, budget s with --smoke)
STAGES = {
    "env": (15, 60),
    "hyper": (35, 90),
    "exact": (110, 90),
    "train": (300, 240),  # 6 ResNet-50 compiles at 36-51 s; smoke: 4 small ones on a slow, busy 2-core CPU
    "codec": (40, 60),
    "loader": (150, 90),
    "anchor": (70, 60),
}


def say(*parts):
    print(*parts, flush=True)


def result(key: str, value):
    """One headline figure: the parent copies these lines into summary.md."""
    say(f"RESULT {key}: {value}")


# ----------------------------------------------------------------------------- stages
def stage_env(a):
    import cv2
    import jax

    if a.smoke:
        say("smoke run: toy sizes on this machine's default backend; figures meaningless")
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        smi = "nvidia-smi not found"
    versions = {}
    for mod in (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "orbax.checkpoint",
        "numpy",
        "ml_collections",
        "grain",
        "constriction",
    ):
        try:
            versions[mod] = getattr(__import__(mod, fromlist=["_"]), "__version__", "?")
        except ImportError:
            versions[mod] = "missing"
    versions["cv2"] = cv2.__version__
    d = jax.devices()
    say(f"commit: {a.commit}")
    say(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    say(f"host: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    say(f"nvidia-smi: {smi}")
    say(f"jax devices: {len(d)} x {getattr(d[0], 'device_kind', d[0].platform)} ({d[0].platform})")
    say("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    say(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    result("machine", f"{len(d)} x {getattr(d[0], 'device_kind', d[0].platform)}, {os.cpu_count()} host cores; {smi}")
    result("versions", f"jax {versions['jax']}, flax {versions['flax']}, cv2 {versions['cv2']}; commit {a.commit}")


def test_tiles(rng, n, size):
    """n grey tiles of one size: noise, smooth fields, stripes and feature-like sparse maps."""
    import numpy as np

    yy, xx = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            img = rng.integers(0, 256, (size, size))
        elif kind == 1:
            a, b, c = rng.uniform(-1, 1, 3)
            img = 128 + 127 * np.tanh(a * xx / 5 + b * yy / 5 + c) + 40 * np.sin(xx / rng.uniform(2, 9) + yy / 7)
        elif kind == 2:
            img = np.where(((xx + (i % 3) * yy) // (1 + i % 8)) % 2 == 0, 255, 0)
        else:
            f = sum(
                rng.normal() * np.sin(xx / rng.uniform(1, 8) + yy / rng.uniform(1, 8) + rng.uniform(0, 6))
                for _ in range(3)
            )
            img = 255 * np.maximum(f - 0.8, 0) / 3
        out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return np.stack(out)


def stage_hyper(a):
    """Decodable anywhere: the accelerator's graph must give the host's integers exactly."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bottlenet_jax.codecs import codec_settings, make_codec
    from bottlenet_jax.codecs.entropy import hyper_streams

    platform_ = jax.devices()[0].platform
    n = 64 if a.smoke else 2048
    rng = np.random.default_rng(0)
    total = {k: 0 for k in ("qz", "r", "level", "mean", "bytes", "y_hat")}
    count = 0
    for shape in ((7, 7, 8), (14, 14, 8)):
        codec = make_codec(codec_settings("hyperprior"))
        p = jax.device_get(codec.init_params(jax.random.key(1), shape))
        for net in ("ha", "hs"):  # weights away from init, of both signs and near their bounds
            p[net] = {
                k: np.asarray(v) * 3 + rng.normal(0, 0.5, np.shape(v)).astype(np.float32) for k, v in p[net].items()
            }
        state = codec.fit(p, ())
        y = (rng.normal(0, 1, (n, *shape)) * np.linspace(0.3, 6, shape[-1])).astype(np.float32)
        y[: n // 4] = np.round(y[: n // 4] * 16) / 16 + np.float32(1 / 32)  # on rounding boundaries
        s = codec.structure(shape)
        t = time.perf_counter()
        graph = jax.jit(lambda y: (s.symbols(y, state, jnp), codec(y, train=False, params=p, state=state)))
        (qz, r, level, mean), (y_hat, stats) = jax.device_get(graph(y))
        t_graph = time.perf_counter() - t
        want = dict(zip(("qz", "r", "level", "mean"), s.symbols(y, state)))
        want["bytes"] = hyper_streams.stream_bytes_np(want["qz"], want["r"], want["level"], state, codec.precision)
        want["y_hat"] = hyper_streams.dequantize(want["r"], want["mean"])
        got = {"qz": qz, "r": r, "level": level, "mean": mean, "bytes": stats["bytes_payload"], "y_hat": y_hat}
        for k in total:
            total[k] += int(np.sum(np.asarray(got[k]) != np.asarray(want[k])))
        count += n
        say(f"{'x'.join(map(str, shape))}: {n} maps on {platform_}, compile + run {t_graph:.1f} s; mismatches {total}")
    result(
        "hyperprior exactness",
        f"{count} maps on {platform_} vs the host's numpy: " + ", ".join(f"{v} {k}" for k, v in total.items()),
    )


def stage_exact(a):
    import cv2
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bottlenet_jax.codecs.jpeg.xla import jpeg_device

    sizes = (8,) if a.smoke else (28, 56, 112, 224)
    per = 8 if a.smoke else 64
    qualities = (1, 50, 95, 100)
    say(f"jpeg_device on {jax.devices()[0].platform} vs cv2 {cv2.__version__}: {per} tiles per size, q {qualities}")
    say(
        f"{'tile':>8} {'optimize':>8} {'tiles':>6} {'pixels differ':>14} {'bytes differ':>13} "
        f"{'compile s':>10} {'ms/batch':>9}"
    )
    rng = np.random.default_rng(0)
    code = jax.jit(jpeg_device, static_argnames="optimize")
    total = diff_px = diff_b = 0
    for size in sizes:
        imgs = test_tiles(rng, per, size)
        for optimize in (False, True):
            t = time.perf_counter()
            lowered = code.lower(jnp.asarray(imgs), jnp.int32(50), optimize=optimize)
            compiled = lowered.compile()
            t_compile = time.perf_counter() - t
            px = nb = 0
            runs = []
            for q in qualities:
                t = time.perf_counter()
                dec, nbytes = jax.block_until_ready(compiled(jnp.asarray(imgs), jnp.int32(q)))
                runs.append(time.perf_counter() - t)
                dec, nbytes = np.asarray(dec), np.asarray(nbytes)
                params = [cv2.IMWRITE_JPEG_QUALITY, q, cv2.IMWRITE_JPEG_OPTIMIZE, int(optimize)]
                for i, img in enumerate(imgs):
                    enc = cv2.imencode(".jpg", img, params)[1]
                    px += int((cv2.imdecode(enc, cv2.IMREAD_UNCHANGED) != dec[i]).sum())
                    nb += int(enc.size != nbytes[i])
            n = len(imgs) * len(qualities)
            total, diff_px, diff_b = total + n, diff_px + px, diff_b + nb
            say(f"{size:>5}^2 {str(optimize):>8} {n:>6} {px:>14} {nb:>13} {t_compile:>10.1f} {1e3 * min(runs):>9.2f}")
    result(
        "exactness",
        f"{total} tiles on {jax.devices()[0].platform}: {diff_px} differing pixels, {diff_b} byte mismatches",
    )


def stage_train(a):
    """The three variants with targets first (compiled, timed, profiled, reported), then the others one by
    one, each timed in rounds beside plain and rb1_identity: a stage that runs out of time keeps what
    matters most. Compiling dominates: 36-51 s per ResNet-50 variant on the H200's host (2026-12-04);
    compiling them side by side in threads was slower still."""
    import jax
    import train_throughput as tt

    from bottlenet_jax import parallel

    first = ["plain", "rb1_identity", "rb1_jpeg_device"]
    later = ["rb1_entropy", "rb1_jpeg_device_opt", "rb1_jpeg_host_proc"]
    if a.smoke:  # compiling dominates on CPU: the entropy codec's path (the others: train_throughput --smoke, tests)
        later = ["rb1_entropy"]
        args = argparse.Namespace(depth=18, width=4, dtype="float32", res=32, batch=4, channels=8, quality=90)
        steps, rounds = 4, 2
    else:
        args = argparse.Namespace(depth=50, width=64, dtype="bfloat16", res=224, batch=256, channels=8, quality=90)
        steps, rounds = 24, 3
    mesh = parallel.make_mesh(jax.devices()[:1])
    say(f"ResNet-{args.depth} width {args.width}, {args.res}^2, {args.dtype}, batch {args.batch}, 1 device, C'=8, q=90")
    vs = {}

    def build(n):
        t = time.perf_counter()
        try:
            vs[n] = tt.make_variant(n, args, mesh)
            tt.run_steps(vs[n], 2)
        except Exception as e:  # one variant failing must not lose the others
            say(f"{n}: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            vs.pop(n, None)
            return False
        say(f"compiled + warmed {n} in {time.perf_counter() - t:.1f} s")
        return True

    def timed(names, report):
        """Time `names` in alternating rounds; ratios within this phase only."""
        phase = {n: [] for n in names}
        for _ in range(rounds):
            for n in names:
                phase[n] += tt.run_steps(vs[n], max(1, steps // rounds))
        tt.print_table({n: vs[n] for n in names}, phase)
        med = {n: statistics.median(t) for n, t in phase.items()}
        for n in report:
            rel = [f"{med[r] / med[n]:.3f} of {r}" for r in ("plain", "rb1_identity") if r in med and r != n]
            img_s = f"{vs[n]['global_batch'] / med[n]:.0f} img/s"
            result(f"train {n}", img_s + (f" ({', '.join(rel)})" if rel else ""))
        return med

    core = [n for n in first if build(n)]
    med = timed(core, core)
    sections = []
    if "rb1_identity" in med and "rb1_jpeg_device" in med:
        share = f"{100 * (1 - med['rb1_identity'] / med['rb1_jpeg_device']):.2f} %"
        result("device JPEG share of the step (vs rb1_identity)", share)
        sections.append(f"device JPEG's share of the step, by step time vs rb1_identity: {share}")
    for n in ("rb1_jpeg_device",) if a.smoke else ("rb1_identity", "rb1_jpeg_device"):
        if n in vs:
            profile(a, vs, n, med[n], sections)
    for n in later:
        if build(n):
            med_n = timed([r for r in ("plain", "rb1_identity") if r in vs] + [n], [n])
            if n == "rb1_entropy" and not a.smoke:
                profile(a, vs, n, med_n[n], sections)
            vs.pop(n)  # frees its device memory before the next one compiles


def profile(a, vs, n, step_s, sections):
    """Trace 5 steps of variant n; add the top ops by device time to profile.txt (rewritten each time).
    The profiler has never run on this GPU image: a failure is reported and skipped, and the stage
    goes on to the variants after it."""
    import jax
    import train_throughput as tt

    try:
        d = tempfile.mkdtemp(prefix=f"trace_{n}_")
        with jax.profiler.trace(d, create_perfetto_trace=True):
            tt.run_steps(vs[n], 5)
        sections.append(f"## {n}: 5 steps, median step {1e3 * step_s:.2f} ms\n{tt.summarize_trace(d)}")
    except Exception as e:  # noqa: BLE001 - any profiler failure: say which, keep the stage
        why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        say(f"profile of {n} failed, skipped ({why})")
        sections.append(f"## {n}: profile failed ({why})")
    with open(os.path.join(a.out, "profile.txt"), "w") as f:
        f.write("\n\n".join(sections) + "\n")


def stage_codec(a):
    import jax
    import numpy as np
    from codec_throughput import maps, median_time

    from bottlenet_jax.codecs import JpegCodec
    from bottlenet_jax.codecs.jpeg.tiling import grid_shape

    batch, runs = (16, 3) if a.smoke else (256, 10)
    workers = os.cpu_count() or 1
    host = JpegCodec(quality=90, backend="host", pool="processes", workers=workers)
    dev = JpegCodec(quality=90, backend="device")
    say(
        f"batch {batch}, q=90, grid layout; host: {workers} spawned processes (one pool for all sizes); "
        f"median of {runs}"
    )
    say(f"{'maps':>10} {'tile':>9} {'host ms':>8} {'device ms':>10} {'host/device':>12}")
    rng = np.random.default_rng(0)
    for s in (8,) if a.smoke else (28, 56):
        for c in (1, 8) if a.smoke else (1, 4, 8, 16):
            x = jax.device_put(maps(rng, batch, s, c))
            f_host, f_dev = jax.jit(lambda v: host(v)), jax.jit(lambda v: dev(v))
            th = median_time(lambda: jax.block_until_ready(f_host(x)), runs)
            td = median_time(lambda: jax.block_until_ready(f_dev(x)), runs)
            rows, cols = grid_shape(c)
            say(f"{s:>3}x{s}x{c:<3} {rows * s:>4}x{cols * s:<4} {1e3 * th:>8.2f} {1e3 * td:>10.2f} {th / td:>12.2f}")
            if c == 8 and s == (8 if a.smoke else 28):
                result(f"codec {s}x{s}x8 batch", f"host {1e3 * th:.2f} ms, device {1e3 * td:.2f} ms")


def stage_loader(a):
    import input_pipeline as ip

    from bottlenet_jax.data import records
    from configs import default

    n, batch, res, batches = (64, 16, 64, 2) if a.smoke else (2048, 256, 224, 6)
    counts = (0, 1, 2) if a.smoke else (1, 2, 4, 8, 16)
    t = time.perf_counter()
    fork = multiprocessing.get_context("fork")  # the children only run numpy + cv2, ~20 ms an image
    with concurrent.futures.ProcessPoolExecutor(min(16, os.cpu_count() or 1), mp_context=fork) as pool:
        jpegs = [j for part in pool.map(ip.make_jpegs, [64] * (n // 64), range(n // 64)) for j in part]
    tmp = tempfile.mkdtemp(prefix="suite_records_")
    root = records.write_prepared(
        os.path.join(tmp, "bench"),
        "bench",
        3,
        [str(i) for i in range(1000)],
        {"train": (((i % 1000, 375, 500, j) for i, j in enumerate(jpegs)), len(jpegs))},
    )
    data = records.Prepared(root)
    say(f"{n} JPEGs 500x375 q90 written as records in {time.perf_counter() - t:.1f} s; {res} px, batch {batch}")
    cfg = default.get_config()
    cfg.update(image_size=res, batch_size=batch, train_split="train", data_threads=1)
    # the loader-fed step first (it has a target), then the worker sweep from the most workers down:
    # a stage that runs out of time keeps the figures that matter most
    cfg.data_workers = counts[-1]
    e2e = argparse.Namespace(variant="rb1_jpeg_device", dtype="float32" if a.smoke else "bfloat16", res=res)
    e2e.batch, e2e.rounds, e2e.steps = batch, 1 if a.smoke else 2, 2 if a.smoke else 8
    e2e.depth, e2e.width = (18, 4) if a.smoke else (50, 64)
    fed, synth, how = ip.end_to_end(data, cfg, e2e)
    say(f"loader-fed step {fed:.0f} img/s, synthetic {synth:.0f} img/s, ratio {fed / synth:.3f}; {how}")
    result("loader-fed step / synthetic", f"{fed / synth:.3f} ({fed:.0f} vs {synth:.0f} img/s, {counts[-1]} workers)")
    bare = ip.bare_rate(jpegs[:256])
    say(f"bare cv2.imdecode, 1 thread: {bare:.0f} img/s")
    say(f"{'workers':>8} {'img/s':>8} {'x bare':>7}")
    for w in reversed(counts):
        cfg.data_workers = w
        rs = [ip.loader_rate(data, cfg, batches, warmup=1) for _ in range(2)]  # two rounds, both printed
        say(
            f"{w:>8} {statistics.median(rs):>8.0f} {statistics.median(rs) / bare:>7.2f}   (rounds: "
            f"{', '.join(f'{r:.0f}' for r in rs)})"
        )
        result(f"loader {w} workers", f"{statistics.median(rs):.0f} img/s (rounds {', '.join(f'{r:.0f}' for r in rs)})")


# (train stage: batch 256, default flags). Only flags every recent XLA knows: an unknown one aborts.
ANCHOR_SETTINGS = {
    "batch 256, latency-hiding scheduler": (256, "--xla_gpu_enable_latency_hiding_scheduler=true"),
    "batch 512": (512, ""),
}
# Measured already (benchmarks/README.md: 6,900 img/s at batch 512 on the H200, 2026-12-04): not run again,
# so the one open anchor figure gets the stage's whole budget.
ANCHOR_DONE = ("batch 512",)


def stage_anchor(a):
    """Each setting in its own process (XLA flags are read once per process)."""
    say("plain ResNet-50 224^2 bf16, synthetic batches; MLPerf Training v4.0 H200 (MXNet + DALI): ~7,900 img/s")
    settings = [(n, v) for n, v in ANCHOR_SETTINGS.items() if n not in ANCHOR_DONE]
    for name, (batch, flags) in settings[:1] if a.smoke else settings:
        cmd = [sys.executable, os.path.join(HERE, "train_throughput.py"), "--variants", "plain", "--devices", "1"]
        if a.smoke:
            cmd += ["--batch", "4", "--res", "32", "--depth", "18", "--width", "4", "--dtype", "float32"]
            cmd += ["--steps", "4", "--rounds", "1", "--warmup", "1"]
        else:
            cmd += ["--batch", str(batch), "--steps", "12", "--rounds", "2"]
        env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()}
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(10, a.deadline - time.time()))
            out, err, rc = p.stdout, p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:  # cut: what the child printed so far is kept
            out, err, rc = _text(e.stdout), _text(e.stderr), "timeout"
        for line in out.splitlines():  # the child's own figures, into anchor.txt
            say(f"  | {line}")
        row = [ln for ln in out.splitlines() if ln.startswith("plain ")]
        img_s = row[0].split()[1] if row else f"failed (rc {rc}: {err.strip().splitlines()[-1:]})"
        say(f"{name}: {img_s} img/s ({time.perf_counter() - t:.0f} s with compile)")
        result(f"anchor {name}", f"{img_s} img/s")


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


STAGE_FNS = {
    "env": stage_env,
    "hyper": stage_hyper,
    "exact": stage_exact,
    "train": stage_train,
    "codec": stage_codec,
    "loader": stage_loader,
    "anchor": stage_anchor,
}


# ----------------------------------------------------------------------------- driver
# modules a stage imports that the device image lacks (the wheels of `make gpu-wheels`)
NEEDS = {
    "train": ("ml_collections", "constriction"),
    "loader": ("ml_collections", "grain", "array_record"),
    "anchor": ("ml_collections",),
}


def missing(name) -> list[str]:
    import importlib.util

    return [m for m in NEEDS.get(name, ()) if importlib.util.find_spec(m) is None]


def run_stage(name, a) -> dict:
    budget = STAGES[name][1 if a.smoke else 0]
    lack = missing(name)
    if lack:  # seconds of device time saved, and the reason in one line
        status = f"skipped: {', '.join(lack)} not importable by {sys.executable} (python -m pip install .whl/*.whl)"
        print(f"[{name}] {status}", flush=True)
        return {"stage": name, "status": status, "wall": 0.0, "budget": budget, "results": [], "tail": []}
    cmd = [sys.executable, os.path.abspath(__file__), "--stage", name, "--out", a.out, "--commit", a.commit]
    cmd += ["--smoke"] if a.smoke else []
    t0 = time.time()
    with open(os.path.join(a.out, f"{name}.txt"), "w") as f:
        p = subprocess.Popen(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "SUITE_DEADLINE": str(t0 + budget)},
        )
        try:
            rc = p.wait(timeout=budget)
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            status = f"timed out after {budget} s (killed; what it printed is kept)"
    wall = time.time() - t0
    with open(os.path.join(a.out, f"{name}.txt")) as f:
        text = f.read()
    results = [ln[len("RESULT ") :] for ln in text.splitlines() if ln.startswith("RESULT ")]
    tail = [ln for ln in text.splitlines() if ln.strip()][-1:] if status != "ok" else []
    print(f"[{name}] {status} in {wall:.0f} s (budget {budget} s)", flush=True)
    return {"stage": name, "status": status, "wall": wall, "budget": budget, "results": results, "tail": tail}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="a folder; every file goes directly in it")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset, in this order")
    p.add_argument("--smoke", action="store_true", help="toy sizes on any machine (CI): checks the suite runs")
    p.add_argument("--commit", default=None, help="the commit measured (default: git rev-parse, if .git is here)")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    if a.commit is None:
        g = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        a.commit = g.stdout.strip() or "unknown (pass --commit)"
    if a.stage:  # a child: run one stage
        a.deadline = float(os.environ.get("SUITE_DEADLINE", time.time() + 600))
        STAGE_FNS[a.stage](a)
        return
    stages = [s for s in a.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        p.error(f"--stages: unknown {', '.join(unknown)}; valid: {', '.join(STAGES)}")
    # One persistent compilation cache for the stages' processes: the loader stage's step is the train
    # stage's rb1_jpeg_device program, found there instead of compiled again (~40 s on the H200's host).
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="gpu_suite_jax_cache_"))
    t0 = time.time()
    done = [run_stage(s, a) for s in stages]
    lines = [
        f"# GPU suite{' (smoke: toy sizes, figures meaningless)' if a.smoke else ''}",
        "",
        f"- command: `python benchmarks/gpu_suite.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- commit: {a.commit}; date {time.strftime('%Y-%m-%d', time.gmtime())}; wall {time.time() - t0:.0f} s",
        "",
        "| stage | status | wall s / budget | headline figures |",
        "|---|---|---|---|",
    ]
    for d in done:
        figs = "<br>".join(d["results"]) or (" ".join(d["tail"]) if d["tail"] else "")
        lines.append(f"| {d['stage']} | {d['status']} | {d['wall']:.0f} / {d['budget']} | {figs} |")
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if any(d["status"] != "ok" for d in done):
        sys.exit(1)


if __name__ == "__main__":
    main()
