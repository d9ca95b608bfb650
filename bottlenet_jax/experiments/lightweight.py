"""Lightweight codec (no retraining) on the Fashion-MNIST baseline, at several split points.

    python -m bottlenet_jax.experiments.lightweight            # after experiments.fashion_mnist (its baseline)
    python -m bottlenet_jax.experiments.lightweight --quick    # smoke test (500 test images, 2 settings)

Where, if anywhere at this scale, does the paper's "< 1 point loss at <= 1 bit/element" hold? For
each split point (--splits; default RB1, RB4, RB8, RB14 of the ResNet-50 layout) the baseline is cut
there with no unit and no retraining. Every residual block ends in a ReLU, so the clip model's ReLU
case applies at each. Calibration: `--calib` training images through the edge half, no gradient
step. Then for each N (uniform on [0, c*]) and each lambda (ECSQ, N=16) the codec is calibrated and
the frozen baseline is evaluated with real range-coded bytes. Writes OUT/results.{csv,md} (per split:
the cheapest setting within 1 point, the best setting at <= 1 bit/element, then every row) and
OUT/accuracy_vs_rate.png (loss vs bits/element per split; bytes/sample with the feature-JPEG and
BottleNet points from results/fashion_mnist/results.csv when present).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import jax
import ml_collections
import numpy as np

from bottlenet_jax import cli, parallel
from bottlenet_jax.codecs import codec_settings, make_codec
from bottlenet_jax.codecs import lightweight as lw
from bottlenet_jax.experiments import git_state, write_csv
from bottlenet_jax.experiments.report import header


def calibration_features(cfg, workdir, n):
    from bottlenet_jax.checkpoint import load_eval_state
    from bottlenet_jax.data import records
    from bottlenet_jax.evaluation import edge_features

    c = ml_collections.ConfigDict(cfg.to_dict())
    c.eval_batch_size = 256
    state = load_eval_state(workdir, parallel.make_mesh(jax.devices()[:1]))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    data = records.open_prepared(c.dataset, c.data_dir)
    return np.concatenate(list(edge_features(c, variables, data, c.train_split, n)))


UNIFORM_N = (2, 3, 4, 6, 8, 16)
ECSQ_LAMBDAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # lambda / b^2, N = 16
TARGET_LOSS, TARGET_BITS = 1.0, 1.0  # the paper's operating point: < 1 point at <= 1 bit/element


def setting_name(r: dict) -> str:
    return f"{r['quantizer']} N={r['N']}" + (f" λ={r['lambda/b^2']}b²" if r["lambda/b^2"] != "" else "")


def sweep_split(cfg, a, k, top_base, settings=None):
    """Rows for every quantizer setting with the baseline cut after RB k; and the calibration facts.
    `settings`: (quantizer, N, lambda/b^2 or None) triples (default: this experiment's grid)."""
    from bottlenet_jax.evaluation import evaluate_workdir

    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.split.update(after=k, unit=False)
    x = calibration_features(cfg, a.baseline, a.calib)
    p0, b = lw.fit_exponential(x)
    elements = int(np.prod(x.shape[1:]))
    facts = {"split": f"RB{k}", "features": "x".join(map(str, x.shape[1:])), "zeros %": round(100 * p0, 1), "b": b}
    print(
        f"RB{k}: calibration {x.shape[0]} samples of {x.shape[1:]} ({elements} elements), zeros {100 * p0:.1f} %, "
        f"exponential scale b={b:.4f}",
        flush=True,
    )
    if settings is None:
        settings = [("uniform", n, None) for n in ((2, 8) if a.quick else UNIFORM_N)]
        settings += [("ECSQ", 16, lam) for lam in ((0.1,) if a.quick else ECSQ_LAMBDAS)]
    rows = []
    for kind, n, lam in settings:
        c = ml_collections.ConfigDict(cfg.to_dict())
        quantizer = "uniform" if lam is None else "ecsq"
        block = dict(num_levels=n, quantizer=quantizer, ecsq_lambda=lam or 0.0, fit_examples=a.calib)
        c.codec = ml_collections.ConfigDict(codec_settings("lightweight", **block))
        # the evaluation fits the codec's state on the same first `calib` training images (and keeps it
        # beside the baseline's checkpoint); the same calibration here gives its diagnostics
        state = lw.calibrate(x, n, quantizer, lam or 0.0)
        r = cli.guarded(evaluate_workdir, a.baseline, c, None, ())[0]
        sym = lw.quantize(x, state["levels"], state["thresholds"])
        rows.append(
            {
                "split": f"RB{k}",
                "elements": elements,
                "quantizer": kind,
                "N": n,
                "levels used": len(state["levels"]),
                "lambda/b^2": "" if lam is None else lam,
                "clip c": round(float(state["clip"]), 4),
                "c/b": round(float(state["clip"]) / b, 3),
                "top1": round(r["top1"], 5),
                "loss vs baseline (pts)": round(100 * (top_base - r["top1"]), 2),
                "bits/element (bytes)": round(8 * r["bytes_payload_mean"] / elements, 4),
                "bits/element (entropy, calib)": round(lw.entropy_bits(sym, len(state["levels"])), 4),
                "bytes/sample mean": round(r["bytes_payload_mean"], 1),
                "side info bytes (once)": make_codec(c.codec).side_info_bytes(state),
                "examples": r["examples"],
            }
        )
        print(rows[-1], flush=True)
    return rows, facts


def paper_points(rows):
    """Per split: the cheapest setting losing < TARGET_LOSS points, and the most accurate setting at
    <= TARGET_BITS bits/element (None where there is none)."""
    out = []
    for split in dict.fromkeys(r["split"] for r in rows):
        rs = [r for r in rows if r["split"] == split]
        ok = [r for r in rs if r["loss vs baseline (pts)"] < TARGET_LOSS]
        cheap = [r for r in rs if r["bits/element (bytes)"] <= TARGET_BITS]
        out.append(
            {
                "split": split,
                "within_loss": min(ok, key=lambda r: r["bits/element (bytes)"]) if ok else None,
                "within_bits": max(cheap, key=lambda r: r["top1"]) if cheap else None,
                "both": any(r in cheap for r in ok),
            }
        )
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="workdir/repro/baseline")
    p.add_argument("--out", default=None)
    p.add_argument("--calib", type=int, default=512)
    p.add_argument("--splits", default=None, help="residual blocks to cut after (default 1,4,8,14; 1,4 with --quick)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--plot_only", action="store_true", help="redraw OUT's plot from OUT/results.csv (no evaluation)")
    p.add_argument("--dry_run", action="store_true", help="check the arguments (and the baseline, if here), then stop")
    a = p.parse_args(argv)
    a.commit = git_state()  # at start: the code that produced the numbers
    a.out = a.out or ("workdir/lightweight_quick" if a.quick else "results/fashion_mnist/lightweight")
    try:
        splits = [int(k) for k in (a.splits or ("1,4" if a.quick else "1,4,8,14")).split(",")]
    except ValueError:
        p.error(f"--splits {a.splits!r}: expected residual block numbers separated by commas, e.g. 1,4,8")
    if a.plot_only:
        with open(os.path.join(a.out, "results.csv")) as f:
            rows = [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(f)]
        plot(rows, rows[0]["top1"] + rows[0]["loss vs baseline (pts)"] / 100, a.out)
        return print(f"redrew {a.out}/accuracy_vs_rate.png")
    cli.setup_logging()
    from bottlenet_jax.checkpoint import load_config
    from bottlenet_jax.evaluation import evaluate_workdir

    t0 = time.time()
    if a.dry_run and not os.path.exists(os.path.join(a.baseline, "config.json")):
        return print(f"dry run: arguments ok (splits {splits}); baseline {a.baseline} not here, not checked")
    cfg = cli.guarded(load_config, a.baseline)
    a.seed = cfg.seed
    if a.quick:
        cfg.eval_examples = 500
    from bottlenet_jax.models.split import validate

    for k in splits:  # every split point checked before any work
        c = ml_collections.ConfigDict(cfg.to_dict())
        c.split.update(after=k, unit=False)
        cli.guarded(validate, c)
    if a.dry_run:
        return print(f"dry run: baseline {a.baseline} and splits {splits} ok")
    base = ml_collections.ConfigDict(cfg.to_dict())
    base.split.update(after=0, unit=False)
    top_base = cli.guarded(evaluate_workdir, a.baseline, base, None, ())[0]["top1"]
    rows, facts, minutes = [], [], []
    for k in splits:
        t = time.time()
        r, f = sweep_split(cfg, a, k, top_base)
        rows += r
        facts.append(f)
        minutes.append((time.time() - t) / 60)
    write(rows, facts, a, top_base, time.time() - t0, minutes, argv)


def _num(v):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def write(rows, facts, a, top_base, wall, minutes, argv):
    write_csv(os.path.join(a.out, "results.csv"), rows)
    commit, dirty = a.commit
    cols = [c for c in rows[0] if c != "elements"]
    per_split = ", ".join(f"{f['split']} {m:.1f}" for f, m in zip(facts, minutes))
    md = header(
        "Lightweight codec (no retraining) on the Fashion-MNIST baseline, at several split points",
        f"python -m bottlenet_jax.experiments.lightweight {' '.join(argv)}",
        (commit, dirty),
    )[:-1] + [
        f"- wall {wall / 60:.1f} min (per split: {per_split} min)",
        f"- baseline `{a.baseline}` (trained with seed {a.seed}; one seed): top-1 {100 * top_base:.2f} % with "
        f"float features, {rows[0]['examples']} test images; calibration: {a.calib} training images per split",
        "- features at each split (the residual block's ReLU output): "
        + "; ".join(f"{f['split']} {f['features']}, {f['zeros %']} % zeros, b = {f['b']:.4f}" for f in facts),
        "- rate: `len()` of each sample's range-coded stream (constriction), in bits per element; the calibration "
        "entropy is shown beside it; side info (tables, sent once per model) is not in the per-sample rate",
        "",
        f"Per split: the cheapest setting within {TARGET_LOSS:g} point of the baseline, and the best at "
        f"<= {TARGET_BITS:g} bit/element.",
        "",
        "| split | features | < 1 pt loss: cheapest | bits/element | loss (pts) "
        "| <= 1 bit/element: best | bits/element | loss (pts) | both at once |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    name = setting_name
    for f, op in zip(facts, paper_points(rows)):
        cells = [f["split"], f["features"]]
        for r in (op["within_loss"], op["within_bits"]):
            cells += [name(r), str(r["bits/element (bytes)"]), str(r["loss vs baseline (pts)"])] if r else ["none"] * 3
        md.append("| " + " | ".join(cells + ["yes" if op["both"] else "no"]) + " |")
    md += ["", "All settings:", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(f"{100 * r[c]:.2f}" if c == "top1" else str(r[c]) for c in cols) + " |" for r in rows]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    plot(rows, top_base, a.out)
    print("\n".join(md))


def plot(rows, top_base, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, split in enumerate(dict.fromkeys(r["split"] for r in rows)):
        for kind, style in (("uniform", "o-"), ("ECSQ", "s--")):
            rs = [r for r in rows if r["split"] == split and r["quantizer"] == kind]
            rs.sort(key=lambda r: r["bits/element (bytes)"])
            if rs:
                kw = dict(color=f"C{i}", label=f"{split}, {kind}")
                ax.plot([r["bits/element (bytes)"] for r in rs], [r["loss vs baseline (pts)"] for r in rs], style, **kw)
                bx.plot([r["bytes/sample mean"] for r in rs], [100 * r["top1"] for r in rs], style, **kw)
    ax.axhline(TARGET_LOSS, color="k", ls=":", lw=0.8)
    ax.axvline(TARGET_BITS, color="k", ls=":", lw=0.8)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("bits per element (range-coded bytes)")
    ax.set_ylabel("top-1 loss vs baseline (points)")
    ax.set_title("lightweight codec, no retraining (dotted: < 1 pt at <= 1 bit)", fontsize=9)
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
                bx.plot(*zip(*pts), style, color="gray", label=method, lw=0.8)
    bx.axhline(100 * top_base, color="k", ls=":", lw=0.8, label="baseline, float features")
    bx.set_xscale("log")
    bx.set_xlabel("bytes per sample (real streams, mean)")
    bx.set_ylabel("test top-1 (%)")
    for x in (ax, bx):
        x.grid(alpha=0.3, which="both")
        x.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy_vs_rate.png"), dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
