"""Plots of evaluation results (matplotlib, Agg): a codec sweep (eval.py) and a study's rate-accuracy
plot (experiments/report.py); kept out of the evaluation code."""

from __future__ import annotations

import csv
import os


def write_sweep(rows, out_dir, title, field):
    """OUT/sweep.csv (every row) and OUT/sweep.png (top-1 vs bytes per sample, one point per value)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "sweep.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, style in (("bytes_payload_mean", "o-"), ("bytes_full_mean", "s--")):
        if key in rows[0]:
            ax.plot([r[key] for r in rows], [100 * r["top1"] for r in rows], style, label=key.replace("_mean", ""))
    for r in rows:
        ax.annotate(f"{field[0]}{r[field]:g}", (r.get("bytes_payload_mean", 0), 100 * r["top1"]), fontsize=7)
    ax.set_xlabel("bytes per sample (mean)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "sweep.png"), dpi=120)
    plt.close(fig)


def rate_accuracy(
    curves: dict, stars: dict, bar, path: str, x_label: str = "bytes per image (real streams; log scale)"
):
    """A study's plot: per method its curve [(bytes, top-1 %)] (validation) and its starred points
    (test, at the chosen settings); `bar` (top-1 %) draws the baseline and 1 point below it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (name, pts) in enumerate(curves.items()):
        color, ls = f"C{i % 10}", "-" if i < 10 else "--"
        ax.plot(*zip(*sorted(pts)), marker="o", ms=3, lw=1, ls=ls, color=color, label=name)
        if stars.get(name):
            ax.plot(*zip(*stars[name]), "*", ms=10, color=color, mec="k")
    if bar is not None:
        ax.axhline(bar, color="k", lw=0.8, label="baseline (validation)")
        ax.axhline(bar - 1, color="k", ls=":", lw=0.8, label="1 point below")
        ax.set_ylim(bar - 8, bar + 1.5)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("top-1 % (lines: validation; stars: test at the chosen setting)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
