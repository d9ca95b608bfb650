"""Lightweight codec (no retraining) on the Fashion-MNIST baseline, split after RB1.

    python -m bottlenet_jax.experiments.lightweight            # after experiments.fashion_mnist (its baseline)
    python -m bottlenet_jax.experiments.lightweight --quick    # smoke test (500 test images, 2 settings)

RB1's output is a ReLU (the residual block's last op), so the clip model's ReLU case applies.
Calibration: `--calib` training images through the edge half, no gradient step. Then for each N
(uniform on [0, c*]) and each lambda (ECSQ, N=16) the codec is calibrated and the frozen baseline is
evaluated with real range-coded bytes. Writes OUT/results.{csv,md} and OUT/accuracy_vs_rate.png
(with feature-JPEG and BottleNet points from results/fashion_mnist/results.csv when present).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import sys
import time

import jax
import ml_collections
import numpy as np

from bottlenet_jax import cli, parallel
from bottlenet_jax.codecs import lightweight as lw
from bottlenet_jax.codecs import make_codec
from bottlenet_jax.experiments import git_state, write_csv


def calibration_features(cfg, workdir, n):
    from bottlenet_jax.checkpoint import load_eval_state
    from bottlenet_jax.data import loader, records
    from bottlenet_jax.models import build_model
    from bottlenet_jax.steps import normalize

    c = ml_collections.ConfigDict(cfg.to_dict())
    c.eval_split, c.eval_examples, c.eval_batch_size = c.train_split, n, 256
    state = load_eval_state(workdir, parallel.make_mesh(jax.devices()[:1]))
    model = build_model(c, bn_axis_name=None)
    edge = jax.jit(
        lambda x: model.apply(
            {"params": state.params, "batch_stats": state.batch_stats}, normalize(x, c.mean, c.std), part="edge"
        )
    )
    data = records.open_prepared(c.dataset, c.data_dir)
    feats = [np.asarray(edge(b["image"]))[b["mask"]] for b in loader.eval_iterator(data, c)]
    return np.concatenate(feats)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="workdir/repro/baseline")
    p.add_argument("--out", default=None)
    p.add_argument("--calib", type=int, default=512)
    p.add_argument("--split_after", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--plot_only", action="store_true", help="redraw OUT's plot from OUT/results.csv (no evaluation)")
    a = p.parse_args(argv)
    a.commit = git_state()  # at start: the code that produced the numbers
    a.out = a.out or ("workdir/lightweight_quick" if a.quick else "results/fashion_mnist/lightweight")
    if a.plot_only:
        with open(os.path.join(a.out, "results.csv")) as f:
            rows = [
                {k: (float(v) if k in ("top1", "bits/element (bytes)") else v) for k, v in r.items()}
                for r in csv.DictReader(f)
            ]
        top_base = rows[0]["top1"] + float(rows[0]["loss vs baseline (pts)"]) / 100
        plot(
            rows, top_base, a.out, int(round(8 * float(rows[0]["bytes/sample mean"]) / rows[0]["bits/element (bytes)"]))
        )
        return print(f"redrew {a.out}/accuracy_vs_rate.png")
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    from bottlenet_jax.checkpoint import load_config
    from bottlenet_jax.evaluation import evaluate_workdir

    t0 = time.time()
    cfg = cli.guarded(load_config, a.baseline)
    if a.quick:
        cfg.eval_examples = 500
    cfg.split.update(after=a.split_after, unit=False)
    x = calibration_features(cfg, a.baseline, a.calib)
    p0, b = lw.fit_exponential(x)
    elements = int(np.prod(x.shape[1:]))
    print(
        f"calibration: {x.shape[0]} samples of {x.shape[1:]} ({elements} elements), zeros {100 * p0:.1f} %, "
        f"exponential scale b={b:.4f}"
    )
    base = ml_collections.ConfigDict(cfg.to_dict())
    base.split.after = 0
    top_base = cli.guarded(evaluate_workdir, a.baseline, base, None, ())[0]["top1"]
    settings = [("uniform", n, None) for n in ((2, 8) if a.quick else (2, 3, 4, 6, 8, 16))]
    settings += [("ECSQ", 16, lam * b * b) for lam in ((0.1,) if a.quick else (0.02, 0.05, 0.1, 0.2, 0.5))]
    rows = []
    for kind, n, lam in settings:
        settings, cal = lw.calibrate(x, n, lam)
        c = ml_collections.ConfigDict(cfg.to_dict())
        c.codec = ml_collections.ConfigDict(settings)
        r = cli.guarded(evaluate_workdir, a.baseline, c, None, ())[0]
        rows.append(
            {
                "quantizer": kind,
                "N": n,
                "levels used": len(settings["levels"]),
                "lambda/b^2": "" if lam is None else round(lam / (b * b), 3),
                "clip c": round(cal["clip"], 4),
                "c/b": round(cal["clip"] / b, 3),
                "top1": round(r["top1"], 5),
                "loss vs baseline (pts)": round(100 * (top_base - r["top1"]), 2),
                "bits/element (bytes)": round(8 * r["bytes_payload_mean"] / elements, 4),
                "bits/element (entropy, calib)": round(cal["entropy_bits"], 4),
                "bytes/sample mean": round(r["bytes_payload_mean"], 1),
                "side info bytes (once)": make_codec(c.codec.to_dict()).side_info_bytes,
                "examples": r["examples"],
            }
        )
        print(rows[-1], flush=True)
    write(rows, a, top_base, x.shape, p0, b, time.time() - t0, argv)


def write(rows, a, top_base, shape, p0, b, wall, argv):
    write_csv(os.path.join(a.out, "results.csv"), rows)
    commit, dirty = a.commit
    cols = list(rows[0])
    md = [
        f"# Lightweight codec (no retraining) on the Fashion-MNIST baseline, split after RB{a.split_after}",
        "",
        f"- command: `python -m bottlenet_jax.experiments.lightweight {' '.join(argv)}`",
        f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}; machine: {platform.node()} "
        f"({os.cpu_count()} CPU cores, jax {jax.__version__} "
        f"on {jax.devices()[0].platform}); date: {datetime.date.today().isoformat()}; wall {wall / 60:.1f} min",
        f"- baseline `{a.baseline}`: top-1 {100 * top_base:.2f} % with float features; calibration: {shape[0]} "
        f"training images, features {tuple(shape[1:])}, {100 * p0:.1f} % zeros, exponential b = {b:.4f}",
        "- rate: `len()` of each sample's range-coded stream (constriction), in bits per element; the calibration "
        "entropy is shown beside it; side info (tables, sent once per model) is not in the per-sample rate",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    md += ["| " + " | ".join(f"{100 * r[c]:.2f}" if c == "top1" else str(r[c]) for c in cols) + " |" for r in rows]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    plot(rows, top_base, a.out, int(np.prod(shape[1:])))
    print("\n".join(md))


def plot(rows, top_base, out, elements):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for kind, style in (("uniform", "o-"), ("ECSQ", "s--")):
        pts = sorted(
            (r["bits/element (bytes)"] * elements / 8, 100 * r["top1"]) for r in rows if r["quantizer"] == kind
        )
        if pts:
            ax.plot(*zip(*pts), style, label=f"lightweight, {kind} (no retraining)")
    ref = "results/fashion_mnist/results.csv"
    if os.path.exists(ref):
        with open(ref) as f:
            prev = list(csv.DictReader(f))
        for method, style in (
            ("RB1 JPEG, no retraining", "v:"),
            ("BottleNet RB1 (JPEG-aware)", "^-"),
            ("input image JPEG", "x-."),
        ):
            pts = sorted(
                (float(r["bytes_payload_mean"]), 100 * float(r["top1"])) for r in prev if r["method"] == method
            )
            if pts:
                ax.plot(*zip(*pts), style, label=method)
    ax.axhline(100 * top_base, color="k", ls=":", lw=0.8, label="baseline, float features")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per sample (real streams, mean)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy_vs_rate.png"), dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
