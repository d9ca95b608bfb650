"""Plots of evaluation results (matplotlib, Agg): kept out of the evaluation code."""

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
