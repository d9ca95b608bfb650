"""BottleNet's central claim, checked at small scale on real Fashion-MNIST (one command).

    python -m bottlenet_jax.experiments.fashion_mnist            # full run (wall time: see its results.md)
    python -m bottlenet_jax.experiments.fashion_mnist --quick    # smoke test of the whole script (CI)

--quick trains each model a few steps, evaluates 500 test images and uses the ResNet-18 layout
(QUICK_DEPTH below); add --depth 50 to smoke-test the full run's layout.

Runs, on the train/test split, with a CPU-sized ResNet-50 layout (small stem, base width 8):
  1. baseline (no bottleneck) from scratch;
  2. "JPEG on RB1 features without retraining": the baseline's RB1 features, per-sample min-max to
     8 bit (8 bytes side info counted), JPEG at each q, decoded, fed to the rest;
  3. BottleNet after RB1 (C', stride from --channels/--stride), fine-tuned from the baseline with JPEG
     at q_train in the loop, evaluated at each q;
  4. the same unit trained with the identity codec, evaluated with JPEG (what compression-aware
     training buys);
  5. reference: the 28x28 input image JPEG'd at each q (bytes, and the baseline's accuracy on it);
  6. split points RB1, RB4, RB8, RB14 at q_train (stride 2 where the features are even, else 1;
     RB4..RB14 fine-tuned for --split_epochs, RB1 is run 3).
Writes OUT/results.csv, OUT/results.md (header: command, commit, machine, date), OUT/*.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import ml_collections

from bottlenet_jax import cli
from bottlenet_jax.codecs import codec_settings, make_codec
from bottlenet_jax.experiments import git_state, write_csv
from bottlenet_jax.experiments.report import header

QUALITIES = (10, 30, 50, 70, 90)
# --quick's default depth. A few-step run is nearly all tracing and XLA compiling, which grow with the
# number of blocks: the quick run took 2.0-2.3 min with ResNet-50's 16 bottleneck blocks and 1.15 min
# with ResNet-18's 8 basic blocks (2 CPU cores, idle). Every stage of the script runs either way.
QUICK_DEPTH = 18


def base_config(a):
    c = cli.load_config_file(a.config, *a.overrides)
    c.model.width = a.width
    c.model.depth = a.depth
    c.split.after = 0
    c.codec = ml_collections.ConfigDict(codec_settings("identity"))
    c.seed = a.seed
    c.checkpoint_every_steps = 10_000
    c.eval_every_steps = 10_000_000  # evaluate at the end only
    c.log_every_steps = 50
    if a.quick:
        c.eval_examples = 500
    return c


def bottlenet_config(a, base, after, codec, stride=None):
    c = ml_collections.ConfigDict(base.to_dict())
    from bottlenet_jax.models.resnet import size_after_block

    h = size_after_block(c.image_size, c.model.depth, c.model.stem, after)
    c.split.update(
        after=after,
        unit=True,
        channels=a.channels,
        kernel=2 if (stride or 2) == 2 else 3,
        stride=stride or (2 if h % 2 == 0 else 1),
    )
    c.codec = ml_collections.ConfigDict(codec_settings(codec, **({"quality": a.q_train} if codec == "jpeg" else {})))
    c.init_from = os.path.join(a.workdir, "baseline")
    c.num_epochs = a.finetune_epochs
    c.learning_rate = a.finetune_lr
    c.warmup_epochs = 0.05
    if a.quick:
        c.num_train_steps = 4
    return c


def train(name, cfg, a):
    """Train (or resume) one model; returns (workdir, its final test summary)."""
    from bottlenet_jax import train_lib

    t = time.time()
    print(f"\n### {name}: training in {a.workdir}/{name}", flush=True)
    summary = cli.guarded(train_lib.train_and_evaluate, cfg, os.path.join(a.workdir, name))
    if not summary:  # already trained (resumed at its last step): evaluate the saved weights
        from bottlenet_jax.evaluation import evaluate_workdir

        summary = cli.guarded(evaluate_workdir, os.path.join(a.workdir, name), cfg, None, ())[0]
    print(f"### {name}: {time.time() - t:.0f} s", flush=True)
    return os.path.join(a.workdir, name), summary


def sweep(method, trained, cfg, qualities, rows, codec_over=None):
    """Rows for each q; the training's own final evaluation (same weights, same codec) is reused
    for q = the trained quality instead of compiling and running it again."""
    from bottlenet_jax.evaluation import evaluate_workdir

    workdir, summary = trained
    c = ml_collections.ConfigDict(cfg.to_dict())
    if codec_over:
        c.codec = ml_collections.ConfigDict(codec_settings(**codec_over))
    field = make_codec(c.codec).sweep_field
    reuse = c.codec.name == cfg.codec.name and bool(summary)
    todo = [q for q in qualities if not (reuse and q == cfg.codec[field])]
    found = {r[field]: r for r in (cli.guarded(evaluate_workdir, workdir, c, None, todo, False) if todo else [])}
    if reuse and cfg.codec[field] in qualities:
        found[cfg.codec[field]] = summary
    for q in qualities:
        rows.append(
            {
                "method": method,
                "split": f"RB{c.split.after}",
                "C'": c.split.channels if c.split.unit else "",
                "stride": c.split.stride if c.split.unit else "",
                "q": q,
                **_pick(found[q]),
            }
        )


def _pick(r):
    return {
        k: round(r[k], 5) if isinstance(r.get(k), float) else r.get(k, "")
        for k in (
            "top1",
            "examples",
            "bytes_payload_mean",
            "bytes_payload_median",
            "bytes_full_mean",
            "bytes_full_median",
        )
    }


def input_jpeg_rows(a, cfg, workdir, qualities, rows):
    """The baseline on JPEG'd input images: bytes of each image and the accuracy it still gives."""
    from bottlenet_jax.evaluation import input_image_jpeg

    for r in input_image_jpeg(cfg, workdir, qualities):
        q = r.pop("q")
        rows.append(
            {
                "method": "input image JPEG" if q else "input image raw",
                "split": "input",
                "C'": "",
                "stride": "",
                "q": q or "",
                **{k: round(v, 5) if isinstance(v, float) else v for k, v in r.items()},
            }
        )


def write_outputs(rows, a, wall, argv):
    write_csv(os.path.join(a.out, "results.csv"), rows)
    commit, dirty = a.commit
    head = header(
        f"Fashion-MNIST reproduction of BottleNet ({'quick smoke run' if a.quick else 'full run'})",
        f"python -m bottlenet_jax.experiments.fashion_mnist {' '.join(argv)}",
        (commit, dirty),
    )[:-1] + [
        f"- wall time {wall / 60:.1f} min; seed {a.seed} (one seed: a second did not fit the time budget)",
        f"- model: ResNet-{a.depth} layout, small stem, base width {a.width}; bottleneck C'={a.channels}, "
        f"q_train={a.q_train}; top-1 on {rows[0]['examples']} test images",
        "- bytes: per sample, `len()` of real payloads; 'abbr' = abbreviated JPEG stream (tables fixed by q "
        "dropped), 'full' = complete JFIF file; min-max side info (8 B) included where used",
        f"- checkpoints: {_selection(a.validation_split)}",
        "",
    ]
    cols = [
        "method",
        "split",
        "C'",
        "stride",
        "q",
        "top1",
        "bytes_payload_mean",
        "bytes_payload_median",
        "bytes_full_mean",
        "bytes_full_median",
    ]
    names = ["method", "split", "C'", "stride", "q", "top-1 %", "abbr mean", "abbr median", "full mean", "full median"]
    table = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for r in rows:
        table.append("| " + " | ".join(f"{100 * r[c]:.2f}" if c == "top1" else str(r[c]) for c in cols) + " |")
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(head + table) + "\n")
    plot(rows, a.out)
    print("\n".join(table))


def _selection(validation_split):
    if validation_split:
        return (
            f"each model's best validation top-1 on {validation_split} (held out from training); the test split "
            "is evaluated once per model, on that checkpoint"
        )
    return "each model's last step (no validation split: nothing selected)"


def plot(rows, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, style in (
        ("BottleNet RB1 (JPEG-aware)", "o-"),
        ("BottleNet RB1 (identity-trained)", "s--"),
        ("RB1 JPEG, no retraining", "v:"),
        ("input image JPEG", "^-."),
    ):
        pts = sorted((r["bytes_payload_mean"], 100 * r["top1"], r["q"]) for r in rows if r["method"] == method)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=method)
            for x, y, q in pts:
                ax.annotate(f"q{q}", (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    base = [r for r in rows if r["method"] == "baseline"]
    if base:
        ax.axhline(100 * base[0]["top1"], color="k", lw=0.8, ls=":", label="baseline (float features)")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per sample (abbreviated stream, mean)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy_vs_bytes.png"), dpi=130)
    plt.close(fig)
    sp = [r for r in rows if r["method"] == "BottleNet split point"]
    if sp:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax2 = ax.twinx()
        ax.bar([r["split"] for r in sp], [r["bytes_payload_mean"] for r in sp], color="C0", alpha=0.6)
        ax2.plot([r["split"] for r in sp], [100 * r["top1"] for r in sp], "o-", color="C3")
        ax.set_ylabel("bytes/sample (abbr, mean)", color="C0")
        ax2.set_ylabel("top-1 (%)", color="C3")
        ax.set_title(f"split point at q={sp[0]['q']}", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "split_point.png"), dpi=130)
        plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/fashion_mnist.py", help="the base config (a file path)")
    p.add_argument(
        "--quick", action="store_true", help="few steps, 500 test images: checks the script, not the figures"
    )
    p.add_argument("--out", default=None)
    p.add_argument("--workdir", default=None)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=None, help=f"ResNet depth (default 50; {QUICK_DEPTH} with --quick)")
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--q_train", type=int, default=30)
    p.add_argument("--baseline_epochs", type=float, default=2.0)
    p.add_argument("--finetune_epochs", type=float, default=1.0)
    p.add_argument("--split_epochs", type=float, default=0.5, help="fine-tuning epochs for RB4/RB8/RB14")
    p.add_argument("--finetune_lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry_run", action="store_true", help="build and check every config, then stop (no data)")
    overrides, rest = cli.split_overrides(argv)  # --config.KEY=VALUE: on --config, as everywhere
    a = p.parse_args(rest)
    a.overrides = overrides
    a.depth = a.depth or (QUICK_DEPTH if a.quick else 50)
    a.commit = git_state()  # at start: the code that produced the numbers
    a.out = a.out or ("workdir/repro_quick/results" if a.quick else "results/fashion_mnist")
    a.workdir = a.workdir or ("workdir/repro_quick" if a.quick else "workdir/repro")
    cli.setup_logging()
    t0 = time.time()
    qualities = (a.q_train,) if a.quick else QUALITIES
    base = cli.guarded(base_config, a)
    if a.dry_run:
        from bottlenet_jax.train_lib import validate_config

        checks = [base] + [bottlenet_config(a, base, k, "jpeg") for k in ((1, 4) if a.quick else (1, 4, 8, 14))]
        return print("dry run:", "; ".join(cli.guarded(validate_config, c) for c in checks))
    a.validation_split = base.validation_split
    base.num_epochs = a.baseline_epochs
    if a.quick:
        base.num_train_steps = 6
    rows = []
    bwd, r = train("baseline", base, a)
    rows.append({"method": "baseline", "split": "none", "C'": "", "stride": "", "q": "", **_pick(r)})
    raw_rb1 = ml_collections.ConfigDict(base.to_dict())
    raw_rb1.split.update(after=1, unit=False)
    sweep("RB1 JPEG, no retraining", (bwd, None), raw_rb1, qualities, rows, {"name": "jpeg", "minmax": True})
    aware = bottlenet_config(a, base, 1, "jpeg")
    sweep("BottleNet RB1 (JPEG-aware)", train("rb1_jpeg", aware, a), aware, qualities, rows)
    ident = bottlenet_config(a, base, 1, "identity")
    sweep("BottleNet RB1 (identity-trained)", train("rb1_identity", ident, a), ident, qualities, rows, {"name": "jpeg"})
    input_jpeg_rows(a, base, bwd, qualities, rows)
    for k in (4,) if a.quick else (4, 8, 14):
        c = bottlenet_config(a, base, k, "jpeg")
        c.num_epochs = a.split_epochs
        sweep("BottleNet split point", train(f"rb{k}_jpeg", c, a), c, (a.q_train,), rows)
    rows += [
        dict(r, method="BottleNet split point")
        for r in rows
        if r["method"] == "BottleNet RB1 (JPEG-aware)" and r["q"] == a.q_train
    ]
    rows.sort(
        key=lambda r: (
            [
                "baseline",
                "input image raw",
                "input image JPEG",
                "RB1 JPEG, no retraining",
                "BottleNet RB1 (identity-trained)",
                "BottleNet RB1 (JPEG-aware)",
                "BottleNet split point",
            ].index(r["method"])
            * 100
            + (int(r["split"][2:]) if r["split"].startswith("RB") and r["method"] == "BottleNet split point" else 0)
        )
    )
    write_outputs(rows, a, time.time() - t0, argv)
    print(
        f"\nwrote {a.out}/results.md, results.csv, accuracy_vs_bytes.png, split_point.png "
        f"({(time.time() - t0) / 60:.1f} min)"
    )


if __name__ == "__main__":
    main()
