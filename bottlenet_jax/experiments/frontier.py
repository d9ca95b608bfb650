"""The rate–accuracy frontier of every codec against the input image (Fashion-MNIST), over seeds.

    python -m bottlenet_jax.experiments.frontier [--seeds 0,1,2] [--lambdas 1e-4,2e-4,4e-4,1e-3]
    python -m bottlenet_jax.experiments.frontier --quick          # smoke test: toy steps, 1 seed
    python -m bottlenet_jax.experiments.frontier --plot_only      # redraw OUT from OUT/results.csv
    python -m bottlenet_jax.experiments.frontier --framing_only   # OUT/framing.md: JPEG without its framing

Per seed, in WORKDIR/seed<k> (re-running resumes: a finished seed's rows.json is reused, a
finished run is only re-evaluated), on the network of --config (configs/fashion_mnist_entropy.py):
  baseline      the plain network trained from scratch (--baseline_epochs);
  input image   the test images themselves as JPEG at --input_qualities, classified by the baseline;
  BottleNet     RB1 unit with JPEG q=--jpeg_q in the loop (C' = each of --jpeg_channels), fine-tuned
                from the baseline (--finetune_epochs), then evaluated at each of --qualities;
  lightweight   the baseline cut after RB1 with no unit and no retraining: clip model + uniform /
                ECSQ quantiser + range coder, calibrated on 512 training images (a few settings);
  entropy       the learned entropy bottleneck at RB1 (--config's unit and recipe: stage1_steps,
                distill.feature_weight), fine-tuned from the baseline at each rate_lambda of --lambdas,
                without and/or with distillation from the baseline (--distill both|off|on; "off" drops
                the logit and the feature terms alike).
Models are selected on the validation split held out from training; the test split is evaluated
once per model and setting. Bytes are `len()` of real streams (abbreviated JPEG streams on both
JPEG sides, range-coded streams for the other two), mean over the test images.

Operating point of a method in a seed: its cheapest measured setting within 1 point of that seed's
baseline top-1. Writes OUT/results.md (header: command, commit, machine, date, wall; the operating
points mean ± sd over seeds and their byte ratios per seed; every setting mean ± sd), results.csv
(every row) and frontier.png (bytes per sample on a log axis vs top-1). A table holding fewer seeds
than asked is marked PARTIAL.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys
import time

import ml_collections
import numpy as np

from bottlenet_jax import cli
from bottlenet_jax.experiments import git_state, machine, write_csv

INPUT = "input image JPEG"
TOLERANCE = 0.01  # "within 1 point of the baseline"


def run_configs(a, seed: int) -> dict:
    """name -> (config, workdir) of every trained run of one seed."""
    from bottlenet_jax.codecs import codec_settings

    wd = os.path.join(a.workdir, f"seed{seed}")
    ent = cli.load_config_file(a.config, *a.overrides)
    ent.seed = seed
    base = ml_collections.ConfigDict(ent.to_dict())
    base.split.update(after=0, unit=False, layers=1, hidden=0)  # the comparators keep BottleNet's one-conv unit
    base.codec = ml_collections.ConfigDict(codec_settings("identity"))
    base.rate_lambda = 0.0
    base.stage1_steps = 0  # the entropy recipe's first stage (unit only) and distillation are its own
    base.distill.update(teacher="", feature_weight=0.0)
    base.num_epochs = a.baseline_epochs
    runs = {"baseline": base}

    def finetune(c):
        c = ml_collections.ConfigDict(c.to_dict())
        c.init_from = os.path.join(wd, "baseline")
        c.num_epochs = a.finetune_epochs
        c.learning_rate = a.finetune_lr
        c.warmup_epochs = 0.05
        return c

    for ch in a.jpeg_channels:
        c = finetune(base)
        c.split.update(after=ent.split.after, unit=True, channels=ch, stride=2, kernel=2, layers=1, hidden=0)
        c.codec = ml_collections.ConfigDict(codec_settings("jpeg", quality=a.jpeg_q))
        runs[f"jpeg_c{ch}"] = c
    for lam in a.lambdas:
        for kd in {"both": (False, True), "on": (True,), "off": (False,)}[a.distill]:
            c = finetune(ent)
            c.rate_lambda = lam
            if kd:
                c.distill.teacher = os.path.join(wd, "baseline")
            else:  # without a teacher: no logit and no feature distillation
                c.distill.feature_weight = 0.0
            runs[f"entropy{'_kd' if kd else ''}_l{lam:g}"] = c
    if a.quick:
        for c in runs.values():
            c.num_train_steps, c.eval_examples, c.eval_every_steps = 3, 500, 3
    return {k: (c, os.path.join(wd, k)) for k, c in runs.items()}


def method_of(name: str, cfg) -> tuple[str, str]:
    if name.startswith("jpeg_c"):
        return f"BottleNet JPEG C'={cfg.split.channels}", ""
    kd = "_kd" in name
    return ("entropy bottleneck + distillation" if kd else "entropy bottleneck"), f"λ={cfg.rate_lambda:g}"


def row(seed, method, setting, s, **extra) -> dict:
    return {
        "seed": seed,
        "method": method,
        "setting": setting,
        "top1": round(float(s["top1"]), 5),
        "bytes": round(float(s["bytes_payload_mean"]), 2),
        "bytes_full": round(float(s.get("bytes_full_mean", s["bytes_payload_mean"])), 2),
        "rate_estimate_bytes": round(float(s.get("rate_estimate_bytes_mean", float("nan"))), 2),
        "examples": int(s.get("examples", 0)),
        **extra,
    }


def run_seed(a, seed: int) -> list[dict]:
    """Train what is missing, evaluate everything; the rows of one seed (cached in rows.json)."""
    from bottlenet_jax import train_lib
    from bottlenet_jax.checkpoint import write_json
    from bottlenet_jax.evaluation import evaluate_workdir, input_image_jpeg

    runs = run_configs(a, seed)
    cache = os.path.join(a.workdir, f"seed{seed}", "rows.json")
    key = {k: c.to_dict() for k, (c, _) in runs.items()}
    if os.path.exists(cache):
        with open(cache) as f:
            saved = json.load(f)
        if saved["runs"] == json.loads(json.dumps(key, default=str)):
            print(f"seed {seed}: all runs finished and evaluated before ({cache})", flush=True)
            return saved["rows"]
    rows = []
    for i, (name, (cfg, wd)) in enumerate(runs.items()):
        print(f"### seed {seed}, run {i + 1}/{len(runs)}: {name}", flush=True)
        s = cli.guarded(train_lib.train_and_evaluate, cfg, wd)
        if name == "baseline":
            raw, *jpeg = cli.guarded(input_image_jpeg, cfg, wd, a.input_qualities)
            rows.append(row(seed, "baseline (raw image)", "", raw))
            rows += [row(seed, INPUT, f"q={r['q']}", r) for r in jpeg]
            rows += lightweight_rows(a, cfg, wd, seed, raw["top1"])
        elif name.startswith("jpeg_c"):
            for r in cli.guarded(evaluate_workdir, wd, None, None, a.qualities, False):
                rows.append(row(seed, method_of(name, cfg)[0], f"q={r['quality']}", r))
        else:
            rows.append(row(seed, *method_of(name, cfg), s))
    write_json(cache, {"runs": key, "rows": rows})
    return rows


def lightweight_rows(a, base_cfg, base_wd, seed, top_base) -> list[dict]:
    """The lightweight codec at the entropy model's split point, on the baseline, no retraining
    (its best settings at RB1 in results/fashion_mnist/lightweight: uniform N=2..6, ECSQ)."""
    from bottlenet_jax.experiments import lightweight

    k = cli.load_config_file(a.config, *a.overrides).split.after
    settings = LIGHTWEIGHT[:1] if a.quick else LIGHTWEIGHT
    ns = argparse.Namespace(baseline=base_wd, calib=64 if a.quick else 512, quick=a.quick)
    out = []
    for r in lightweight.sweep_split(base_cfg, ns, k, top_base, settings)[0]:
        s = {"top1": r["top1"], "bytes_payload_mean": r["bytes/sample mean"], "examples": r["examples"]}
        out.append(row(seed, f"lightweight RB{k}, no retraining", lightweight.setting_name(r), s))
    return out


# (quantizer, N, lambda / b^2 or None)
LIGHTWEIGHT = [("uniform", 2, None), ("uniform", 4, None), ("uniform", 6, None), ("ECSQ", 16, 0.1), ("ECSQ", 16, 0.3)]


# ----------------------------------------------------------------------------- summaries
def operating_points(rows: list[dict]) -> dict:
    """{seed: {method: the cheapest row within TOLERANCE of that seed's baseline (None: none is)}}."""
    out = {}
    for seed in sorted({r["seed"] for r in rows}):
        rs = [r for r in rows if r["seed"] == seed]
        base = next(r["top1"] for r in rs if r["method"].startswith("baseline"))
        per = {}
        for m in dict.fromkeys(r["method"] for r in rs if not r["method"].startswith("baseline")):
            ok = [r for r in rs if r["method"] == m and r["top1"] >= base - TOLERANCE - 1e-9]
            per[m] = min(ok, key=lambda r: r["bytes"]) if ok else None
        out[seed] = per
    return out


def mean_sd(v):
    v = np.asarray(v, float)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if v.size > 1 else 0.0


def ratios(ops: dict, method: str, reference: str) -> list[float]:
    """Per seed: bytes of `method`'s operating point / `reference`'s (inf where the method has
    none, 0 where only the reference has none)."""
    out = []
    for per in ops.values():
        m, r = per.get(method), per.get(reference)
        out.append(float("inf") if m is None else 0.0 if r is None else m["bytes"] / r["bytes"])
    return out


def is_jpeg(method: str) -> bool:
    return method == INPUT or method.startswith("BottleNet JPEG")


def ratio_table(ops: dict) -> list[str]:
    """Markdown rows: each entropy method's bytes over each JPEG method's, per seed, mean ± sd."""
    methods = list(dict.fromkeys(m for per in ops.values() for m in per))
    md = [
        "| ratio | " + " | ".join(f"seed {s}" for s in ops) + " | mean ± sd | mean + 2 sd |",
        "|---" * (len(ops) + 3) + "|",
    ]
    for m in [m for m in methods if m.startswith("entropy")]:
        for ref in [INPUT, *[r for r in methods if r != INPUT and is_jpeg(r)]]:
            r = ratios(ops, m, ref)
            ms = mean_sd(r) if all(np.isfinite(r)) else (float("inf"), float("nan"))
            md.append(
                f"| {m} / {ref} | "
                + " | ".join(f"{v:.3f}" for v in r)
                + f" | {ms[0]:.3f} ± {ms[1]:.3f} | {ms[0] + 2 * ms[1]:.3f} |"
            )
    return md


def without_framing(rows: list[dict]) -> list[str]:
    """The ratios again with JPEG's fixed framing left out of the JPEG methods' bytes.

    An abbreviated stream (default tables) is FRAMING_BYTES of SOI, frame header, scan header and EOI,
    fixed by the tile's shape, plus the scan: a receiver that knows the shape could rebuild them as it
    rebuilds the tables. The range-coded stream has no framing to drop. Subtracting a constant keeps
    each method's operating point where it was."""
    from bottlenet_jax.codecs.jfif import FRAMING_BYTES

    ops = operating_points(rows)
    for per in ops.values():
        for m, r in per.items():
            if r is not None and is_jpeg(m):
                per[m] = {**r, "bytes": r["bytes"] - FRAMING_BYTES}
    return [
        f"## The same ratios with JPEG's {FRAMING_BYTES} B of fixed framing not counted",
        "",
        f"Each abbreviated JPEG stream (default tables) is {FRAMING_BYTES} B of SOI, frame header, scan header and "
        "EOI, fixed by the tile's shape, plus its scan; a receiver could rebuild them as it rebuilds the tables. "
        "Here they are subtracted from every JPEG method's bytes (the operating points do not move). The "
        "range-coded stream has no framing; its length is whole 32-bit words (up to 3 B of padding), left in.",
        "",
        *ratio_table(ops),
    ]


def write_framing(a, argv):
    """OUT/framing.md from OUT/results.csv: no training, its provenance that of OUT/results.md."""
    commit, dirty = git_state()
    md = [
        f"# Frontier ratios without JPEG's fixed framing ({a.out})",
        "",
        f"- command: `python -m bottlenet_jax.experiments.frontier {' '.join(argv)}`",
        f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}; date {datetime.date.today().isoformat()}",
        f"- from {a.out}/results.csv, as measured by the command, commit and machine in {a.out}/results.md",
        "",
        *without_framing(read_rows(a.out)),
    ]
    with open(os.path.join(a.out, "framing.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


def read_rows(out: str) -> list[dict]:
    with open(os.path.join(out, "results.csv")) as f:
        return [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(f)]


def summarise(rows: list[dict]) -> list[dict]:
    keys = list(dict.fromkeys((r["method"], r["setting"]) for r in rows))
    out = []
    for method, setting in keys:
        sel = [r for r in rows if r["method"] == method and r["setting"] == setting]
        t, b = mean_sd([r["top1"] for r in sel]), mean_sd([r["bytes"] for r in sel])
        out.append({"method": method, "setting": setting, "n": len(sel), "top1": t, "bytes": b})
    return out


def entropy_unit(a) -> str:
    """The entropy runs' reduction unit in words (the comparators' unit is BottleNet's one conv)."""
    from bottlenet_jax.models.split import feature_shape

    c = cli.load_config_file(a.config, *a.overrides)
    s = c.split
    convs = f"{s.layers} strided convs ({s.hidden or 'input'} wide between)" if s.layers > 1 else "one conv"
    h, w, ch = feature_shape(c)
    ctx = c.codec.get("fit_context", "")
    tables = f"tables fitted per {ctx} to the training split's symbols" if ctx else "the density's tables"
    return (
        f"RB{s.after} -> {convs}, k{s.kernel} s{s.stride}, C'={s.channels} -> {h}x{w}x{ch} symbols per image; {tables}"
    )


def report(rows, a, argv, wall, trained_before) -> list[str]:
    commit, dirty = a.commit
    seeds = sorted({r["seed"] for r in rows})
    ops = operating_points(rows)
    methods = list(dict.fromkeys(m for per in ops.values() for m in per))
    partial = len(seeds) < len(a.seeds)
    md = [
        "# Rate–accuracy frontier of every codec against the input image (Fashion-MNIST)"
        + (f" — PARTIAL: {len(seeds)} of {len(a.seeds)} seeds" if partial else ""),
        "",
        f"- command: `python -m bottlenet_jax.experiments.frontier {' '.join(argv)}`".rstrip(),
        f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}",
        f"- machine: {machine()}",
        f"- date: {datetime.date.today().isoformat()}; wall {wall / 60:.1f} min; seeds {', '.join(map(str, seeds))}"
        + (
            f"; trained by an earlier invocation and only re-evaluated or reused here: {trained_before}"
            if trained_before
            else ""
        ),
        f"- protocol: the module docstring of bottlenet_jax/experiments/frontier.py; config `{a.config}`; baseline "
        f"{a.baseline_epochs:g} epochs, fine-tunes {a.finetune_epochs:g} epoch(s) from it; models selected on the "
        f"validation split held out from training, the test split ({rows[0]['examples']} images) evaluated once per "
        "model and setting",
        f"- entropy unit: {entropy_unit(a)}",
        "- bytes: mean `len()` per test image of the real payload (abbreviated JPEG stream / range-coded stream)",
        f"- operating point: per seed, a method's cheapest measured setting within {100 * TOLERANCE:g} point of "
        "that seed's baseline (selection on the test split, as every frontier point is a test measurement)",
        "",
        "## Operating points within 1 point of the baseline",
        "",
        "| method | seeds with one | bytes/sample (mean ± sd) | top-1 % (mean ± sd) | settings chosen |",
        "|---|---|---|---|---|",
    ]
    base = [r for r in rows if r["method"].startswith("baseline")]
    bt = mean_sd([r["top1"] for r in base])
    md.append(
        f"| baseline (raw image) | {len(base)} | {base[0]['bytes']:.0f} | {100 * bt[0]:.2f} ± {100 * bt[1]:.2f} | |"
    )
    for m in methods:
        got = [per[m] for per in ops.values() if per.get(m)]
        if not got:
            md.append(f"| {m} | 0 of {len(ops)} | none within 1 point | | |")
            continue
        b, t = mean_sd([r["bytes"] for r in got]), mean_sd([r["top1"] for r in got])
        chosen = ", ".join(f"{r['setting']}" for r in got)
        md.append(
            f"| {m} | {len(got)} of {len(ops)} | {b[0]:.1f} ± {b[1]:.1f} | "
            f"{100 * t[0]:.2f} ± {100 * t[1]:.2f} | {chosen} |"
        )
    md += ["", "## Byte ratios at the operating points, per seed (smaller: fewer bytes than the reference)", ""]
    md += ratio_table(ops)
    md += ["", *without_framing(rows)]
    md += [
        "",
        "## Every setting (mean ± sd over seeds)",
        "",
        "| method | setting | seeds | top-1 % | bytes/sample |",
        "|---|---|---|---|---|",
    ]
    for s in summarise(rows):
        md.append(
            f"| {s['method']} | {s['setting']} | {s['n']} | {100 * s['top1'][0]:.2f} ± {100 * s['top1'][1]:.2f} | "
            f"{s['bytes'][0]:.1f} ± {s['bytes'][1]:.1f} |"
        )
    return md


def plot(rows, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = {
        INPUT: ("^-.", "C0"),
        "lightweight": ("v:", "C4"),
        "BottleNet JPEG": ("o-", "C1"),
        "entropy": ("s-", "C3"),
    }
    for i, m in enumerate(dict.fromkeys(s["method"] for s in summary if not s["method"].startswith("baseline"))):
        pts = sorted((s for s in summary if s["method"] == m), key=lambda s: s["bytes"][0])
        fmt, color = next((v for k, v in styles.items() if m.startswith(k)), ("x-", f"C{i}"))
        if "distillation" in m:
            fmt, color = "D--", "C2"
        if m.startswith("BottleNet JPEG") and "C'=4" in m:
            color = "C5"
        ax.errorbar(
            [s["bytes"][0] for s in pts],
            [100 * s["top1"][0] for s in pts],
            xerr=[s["bytes"][1] for s in pts],
            yerr=[100 * s["top1"][1] for s in pts],
            fmt=fmt,
            color=color,
            capsize=2,
            ms=4,
            lw=1,
            label=m,
        )
    base = next(s for s in summary if s["method"].startswith("baseline"))
    mu, sd = 100 * base["top1"][0], 100 * base["top1"][1]
    ax.axhspan(mu - sd, mu + sd, color="k", alpha=0.1, label="baseline, raw image (mean ± sd)")
    ax.axhline(mu - 100 * TOLERANCE, color="k", ls=":", lw=0.8, label="1 point below the baseline")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per sample (real streams, mean over the test images; log scale)")
    ax.set_ylabel("test top-1 (%)")
    lo = min(100 * s["top1"][0] for s in summary)
    ax.set_ylim(max(lo - 1, mu - 15), mu + 1.5)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "frontier.png"), dpi=130)
    plt.close(fig)


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    floats = lambda s: [float(v) for v in s.split(",")]
    ints = lambda s: [int(v) for v in s.split(",")]
    p.add_argument("--config", default="configs/fashion_mnist_entropy.py")
    p.add_argument("--seeds", type=ints, default=[0, 1, 2])
    p.add_argument("--workdir", default="workdir/frontier")
    p.add_argument("--out", default=None, help="default results/fashion_mnist/frontier (--quick: WORKDIR/results)")
    p.add_argument("--baseline_epochs", type=float, default=2.0)
    p.add_argument("--finetune_epochs", type=float, default=2.0)
    p.add_argument("--finetune_lr", type=float, default=0.05)
    p.add_argument("--lambdas", type=floats, default=[1e-4, 2e-4, 4e-4, 1e-3])
    p.add_argument("--distill", choices=["both", "on", "off"], default="both", help="entropy with/without teacher")
    p.add_argument("--jpeg_channels", type=ints, default=[2, 4])
    p.add_argument("--jpeg_q", type=int, default=30)
    p.add_argument("--qualities", type=ints, default=[10, 30, 50, 70, 90])
    p.add_argument("--input_qualities", type=ints, default=[5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95])
    p.add_argument("--quick", action="store_true", help="3 steps per run, 500 test images, one seed: a smoke test")
    p.add_argument("--plot_only", action="store_true")
    p.add_argument(
        "--framing_only",
        action="store_true",
        help="write OUT/framing.md (the ratios without JPEG's fixed framing) from OUT/results.csv; no training",
    )
    p.add_argument("--dry_run", action="store_true", help="build and check every run's config, then stop (no data)")
    return p


def _num(v):
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    overrides, rest = cli.split_overrides(argv)  # --config.KEY=VALUE: on --config, as everywhere
    try:
        a = p.parse_args(rest)
    except ValueError as e:
        p.error(str(e))
    a.overrides = overrides
    if a.quick:
        a.seeds, a.lambdas, a.jpeg_channels, a.qualities = a.seeds[:1], a.lambdas[:1], a.jpeg_channels[:1], [30]
        a.input_qualities, a.workdir = [30], a.workdir + "_quick"
    a.out = a.out or (os.path.join(a.workdir, "results") if a.quick else "results/fashion_mnist/frontier")
    if a.plot_only:
        plot(read_rows(a.out), a.out)
        return print(f"redrew {a.out}/frontier.png")
    if a.framing_only:
        return write_framing(a, argv)
    cli.setup_logging()
    a.commit = git_state()
    from bottlenet_jax.train_lib import validate_config

    for seed in a.seeds:  # every config built and checked before any training
        for cfg, _ in cli.guarded(run_configs, a, seed).values():
            cli.guarded(validate_config, cfg)
    if a.dry_run:
        n = len(run_configs(a, a.seeds[0]))
        return print(f"dry run: {n} runs per seed x {len(a.seeds)} seeds, every config ok")
    t0, rows, before = time.time(), [], []
    for seed in a.seeds:
        done = [k for k, (_, wd) in run_configs(a, seed).items() if os.path.exists(os.path.join(wd, "test.json"))]
        before += [f"seed{seed}/{k}" for k in done]
        rows += run_seed(a, seed)
        os.makedirs(a.out, exist_ok=True)
        write_csv(os.path.join(a.out, "results.csv"), rows)
        md = report(rows, a, argv, time.time() - t0, ", ".join(before))
        with open(os.path.join(a.out, "results.md"), "w") as f:
            f.write("\n".join(md) + "\n")
        plot(rows, a.out)
        print("\n".join(md[:40]), flush=True)
    print(f"wrote {a.out}/results.md, results.csv, frontier.png ({(time.time() - t0) / 60:.1f} min)")


if __name__ == "__main__":
    main()
