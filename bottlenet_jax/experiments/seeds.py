"""The demo's comparison over several seeds, with spread: is BottleNet's saving larger than seed noise?

    python -m bottlenet_jax.experiments.seeds [--seeds 0,1,2] [--out results/fashion_mnist/seeds]

Runs `bottlenet_jax.demo --identity` (baseline from scratch; BottleNet fine-tuned from it with JPEG
in the loop; the same unit fine-tuned with the identity codec and evaluated with that JPEG; the test
images themselves JPEG'd at several qualities and classified by the baseline) once per seed, each
in WORKDIR/seed<k> (re-running resumes), and writes OUT/results.md (per-seed rows, mean ± sd;
header: command, commit, machine, date, wall time, runs resumed), OUT/results.csv and
OUT/accuracy_vs_bytes.png (mean ± sd of both axes). Model selection uses the validation split held
out from training; the test split is evaluated once per model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from bottlenet_jax import demo
from bottlenet_jax.experiments import git_state, write_csv
from bottlenet_jax.experiments.report import header

MATCHED = "input image JPEG at BottleNet's accuracy"


def per_seed_rows(r: dict) -> list[dict]:
    rows = [
        {
            "seed": r["seed"],
            "method": "baseline (raw image)",
            "q": "",
            "top1": r["baseline"]["top1"],
            "bytes": r["inputs"][0]["bytes_payload_mean"],
        }
    ]
    rows += [
        {
            "seed": r["seed"],
            "method": "input image JPEG",
            "q": x["q"],
            "top1": x["top1"],
            "bytes": x["bytes_payload_mean"],
        }
        for x in r["inputs"][1:]
    ]
    s = r["bottlenet"]
    rows.append(
        {
            "seed": r["seed"],
            "method": f"BottleNet RB{r['split_after']} C'={r['channels']}",
            "q": r["quality"],
            "top1": s["top1"],
            "bytes": s["bytes_payload_mean"],
        }
    )
    if r.get("identity"):
        rows.append(
            {
                "seed": r["seed"],
                "method": f"BottleNet RB{r['split_after']} C'={r['channels']}, identity-trained",
                "q": r["quality"],
                "top1": r["identity"]["top1"],
                "bytes": r["identity"]["bytes_payload_mean"],
            }
        )
    if r.get("entropy"):
        rows.append(
            {
                "seed": r["seed"],
                "method": f"entropy bottleneck RB{r['split_after']} C'={r['entropy_channels']}",
                "q": f"λ={r['rate_lambda']:g}",
                "top1": r["entropy"]["top1"],
                "bytes": r["entropy"]["bytes_payload_mean"],
            }
        )
    m = r["matched"]
    rows.append(
        {
            "seed": r["seed"],
            "method": MATCHED,
            "q": m["q"] if m else "none",
            "top1": m["top1"] if m else float("nan"),
            "bytes": m["bytes_payload_mean"] if m else float("nan"),
        }
    )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """mean ± sd (ddof=1) over seeds of each (method, q) row; the matched row by method only."""
    keys = []
    for r in rows:
        k = (r["method"], r["q"] if r["method"] != MATCHED else "")
        if k not in keys:
            keys.append(k)
    out = []
    for method, q in keys:
        sel = [r for r in rows if r["method"] == method and (q == "" or r["q"] == q)]
        t, b = np.array([r["top1"] for r in sel], float), np.array([r["bytes"] for r in sel], float)
        out.append(
            {
                "method": method,
                "q": ", ".join(str(r["q"]) for r in sel) if method == MATCHED else q,
                "n": len(sel),
                "top1_mean": float(np.nanmean(t)),
                "top1_sd": float(np.nanstd(t, ddof=1)) if len(sel) > 1 else 0.0,
                "bytes_mean": float(np.nanmean(b)),
                "bytes_sd": float(np.nanstd(b, ddof=1)) if len(sel) > 1 else 0.0,
            }
        )
    return out


def plot(summary, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    inp = [r for r in summary if r["method"] == "input image JPEG"]
    ax.errorbar(
        [r["bytes_mean"] for r in inp],
        [100 * r["top1_mean"] for r in inp],
        xerr=[r["bytes_sd"] for r in inp],
        yerr=[100 * r["top1_sd"] for r in inp],
        fmt="^-.",
        capsize=2,
        label="input image JPEG (baseline)",
    )
    for r in inp:
        ax.annotate(
            f"q{r['q']}", (r["bytes_mean"], 100 * r["top1_mean"]), fontsize=6, xytext=(2, 2), textcoords="offset points"
        )
    bn = [r for r in summary if r["method"].startswith("BottleNet")]
    for r, (fmt, color) in zip(bn, (("o", "C3"), ("s", "C2"))):
        ax.errorbar(
            [r["bytes_mean"]],
            [100 * r["top1_mean"]],
            xerr=[r["bytes_sd"]],
            yerr=[100 * r["top1_sd"]],
            fmt=fmt,
            capsize=3,
            color=color,
            label=f"{r['method']}, q{r['q']}",
        )
    base = [r for r in summary if r["method"] == "baseline (raw image)"][0]
    ax.axhspan(
        100 * (base["top1_mean"] - base["top1_sd"]),
        100 * (base["top1_mean"] + base["top1_sd"]),
        color="k",
        alpha=0.1,
        label="baseline, raw image (mean ± sd)",
    )
    ax.set_xlabel("bytes per sample (abbreviated JPEG stream, mean over test images)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy_vs_bytes.png"), dpi=130)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--workdir", default="workdir/seeds")
    p.add_argument("--out", default="results/fashion_mnist/seeds")
    p.add_argument("--dry_run", action="store_true", help="build and check every seed's configs, then stop")
    a, rest = p.parse_known_args(argv)
    if a.dry_run:
        for seed in [int(s) for s in a.seeds.split(",")]:
            print("dry run:", demo.validate(demo.parse([*rest, "--seed", str(seed)])))
        return
    commit, dirty = git_state()
    t0, rows, walls, earlier = time.time(), [], [], []
    for seed in [int(s) for s in a.seeds.split(",")]:
        d = demo.parse([*rest, "--identity", "--seed", str(seed), "--workdir", os.path.join(a.workdir, f"seed{seed}")])
        r = demo.run(d)
        demo.report(r)
        rows += per_seed_rows(r)
        walls.append(r["minutes"])
        earlier += [f"seed{seed}/{n}" for n in r["trained_before"]]
    summary = summarise(rows)
    os.makedirs(a.out, exist_ok=True)
    write_csv(os.path.join(a.out, "results.csv"), rows)
    head = header(
        "BottleNet vs the input image as JPEG, over seeds (Fashion-MNIST)",
        f"python -m bottlenet_jax.experiments.seeds {' '.join(argv)}",
        (commit, dirty),
    )[:-1] + [
        f"- wall {(time.time() - t0) / 60:.1f} min "
        f"(per seed: {', '.join(f'{w:.1f}' for w in walls)} min); seeds {a.seeds}"
        + (f"; trained by an earlier run and only re-evaluated here: {', '.join(earlier)}" if earlier else ""),
        "- protocol: `python -m bottlenet_jax.demo --identity` per seed (its docstring): baseline trained from "
        "scratch, BottleNet fine-tuned from it with JPEG in the loop, the same unit fine-tuned with the identity "
        "codec and evaluated with that JPEG; models selected on the validation split held out "
        f"from training ({r['validation_split']}), the {r['eval_split']} split ({r['bottlenet']['examples']} images) "
        "evaluated once per model",
        "- bytes: mean `len()` of the abbreviated JPEG stream per test image (tables fixed by q dropped, both sides)",
        "",
        "| method | q | seeds | test top-1 % (mean ± sd) | bytes/sample (mean ± sd) |",
        "|---|---|---|---|---|",
    ]
    table = [
        f"| {r['method']} | {r['q']} | {r['n']} | {100 * r['top1_mean']:.2f} ± {100 * r['top1_sd']:.2f} | "
        f"{r['bytes_mean']:.1f} ± {r['bytes_sd']:.1f} |"
        for r in summary
    ]
    per = ["", "Per seed:", "", "| seed | method | q | test top-1 % | bytes/sample |", "|---|---|---|---|---|"]
    per += [f"| {r['seed']} | {r['method']} | {r['q']} | {100 * r['top1']:.2f} | {r['bytes']:.1f} |" for r in rows]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(head + table + per) + "\n")
    plot(summary, a.out)
    print("\n".join(table))
    print(f"\nwrote {a.out}/results.md, results.csv, accuracy_vs_bytes.png ({(time.time() - t0) / 60:.1f} min)")


if __name__ == "__main__":
    main()
