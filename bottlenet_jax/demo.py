"""`make demo`: BottleNet's point on real Fashion-MNIST, in one command on a CPU.

    python -m bottlenet_jax.demo [--config configs/fashion_mnist.py] [--workdir workdir/demo]
        [--baseline_epochs 1] [--finetune_epochs 0.5] [--identity]

1. trains the plain network (no bottleneck) — the baseline;
2. fine-tunes BottleNet (the config's split, reduction unit and JPEG quality in the loop) from it;
3. sends the test images themselves as JPEG at several qualities to the baseline: the cheapest
   quality whose accuracy reaches BottleNet's is the input image's payload at matched accuracy.
Prints the three side by side: top-1 and bytes per sample (abbreviated JPEG streams, the tables a
quality fixes dropped, on both sides; full JFIF files in brackets). Model selection uses the
config's validation split (held out from training); the test split is evaluated once per model.
--identity adds the ablation (off by default, to keep `make demo` within its time): the same unit
fine-tuned the same way but with the identity codec, then evaluated with the JPEG it never saw —
what training with JPEG in the loop buys.
Re-running resumes (or just re-evaluates) the runs in --workdir.
"""

from __future__ import annotations

import argparse
import os
import time

import ml_collections

from bottlenet_jax import cli

INPUT_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def configs(path: str, a):
    bottlenet = cli.load_config_file(path)
    base = ml_collections.ConfigDict(bottlenet.to_dict())
    base.split.update(after=0, unit=False)
    base.codec = ml_collections.ConfigDict(dict(name="identity"))
    base.num_epochs = a.baseline_epochs
    base.seed = bottlenet.seed = a.seed
    bottlenet.init_from = os.path.join(a.workdir, "baseline")
    bottlenet.num_epochs = a.finetune_epochs
    bottlenet.learning_rate = a.finetune_lr
    bottlenet.warmup_epochs = 0.05
    return base, bottlenet


def identity_trained(bottlenet):
    """The BottleNet config with the identity codec in the loop (same unit, init, epochs, seed)."""
    ident = ml_collections.ConfigDict(bottlenet.to_dict())
    ident.codec = ml_collections.ConfigDict(dict(name="identity"))
    return ident


def matched(bottlenet_top1: float, inputs: list[dict]) -> dict | None:
    """The cheapest input-image JPEG whose top-1 reaches BottleNet's (None if none does)."""
    ok = [r for r in inputs if r["q"] is not None and r["top1"] >= bottlenet_top1]
    return min(ok, key=lambda r: r["bytes_payload_mean"]) if ok else None


def run(a) -> dict:
    """Train/evaluate the three and return their figures (also written to WORKDIR/demo.json)."""
    from absl import logging

    from bottlenet_jax import train_lib
    from bottlenet_jax.checkpoint import write_json
    from bottlenet_jax.evaluation import evaluate_workdir, input_image_jpeg

    logging.set_verbosity(logging.WARNING)
    t0 = time.time()
    base, bn = cli.guarded(configs, a.config, a)
    # runs that had finished before this call: their training time is not in this call's minutes
    done_before = [
        n for n in ("baseline", "bottlenet", "identity") if os.path.exists(os.path.join(a.workdir, n, "test.json"))
    ]
    print(f"### 1/3 baseline (no bottleneck), {a.baseline_epochs:g} epoch(s), seed {a.seed}", flush=True)
    b = cli.guarded(train_lib.train_and_evaluate, base, os.path.join(a.workdir, "baseline"))
    print(
        f"### 2/3 BottleNet RB{bn.split.after}, C'={bn.split.channels}, stride {bn.split.stride}, "
        f"JPEG q={bn.codec.quality} in the loop, fine-tuned {a.finetune_epochs:g} epoch(s)",
        flush=True,
    )
    s = cli.guarded(train_lib.train_and_evaluate, bn, os.path.join(a.workdir, "bottlenet"))
    ident = None
    if a.identity:
        print("### 2b/3 the same unit fine-tuned with the identity codec, evaluated with that JPEG", flush=True)
        wd = os.path.join(a.workdir, "identity")
        cli.guarded(train_lib.train_and_evaluate, identity_trained(bn), wd)
        ident = cli.guarded(evaluate_workdir, wd, bn)[0]
    print("### 3/3 the test images themselves as JPEG, classified by the baseline", flush=True)
    inputs = cli.guarded(input_image_jpeg, base, os.path.join(a.workdir, "baseline"), INPUT_QUALITIES)
    out = {
        "seed": a.seed,
        "baseline": b,
        "bottlenet": s,
        "identity": ident,
        "inputs": inputs,
        "matched": matched(s["top1"], inputs),
        "minutes": (time.time() - t0) / 60,
        "trained_before": done_before,
        "dataset": bn.dataset,
        "eval_split": bn.eval_split,
        "validation_split": bn.validation_split,
        "split_after": bn.split.after,
        "channels": bn.split.channels,
        "stride": bn.split.stride,
        "quality": bn.codec.quality,
    }
    write_json(os.path.join(a.workdir, "demo.json"), out)
    return out


def report(r: dict) -> None:
    raw, b, s = r["inputs"][0], r["baseline"], r["bottlenet"]

    def line(name, top1, abbr, full):
        return f"{name:44s} {100 * top1:6.2f} %  {abbr:8.1f} B  [{full:.1f}]"

    print(
        f"\n=== BottleNet demo: {r['dataset']} {r['eval_split']} split ({s['examples']} images), models selected on "
        f"{r['validation_split'] or 'the last step'}, seed {r['seed']}; {r['minutes']:.1f} min ==="
    )
    print(f"{'':44s} {'top-1':>8s}  {'bytes/sample':>10s} [full JFIF]")
    print(line("baseline, raw image sent", b["top1"], raw["bytes_payload_mean"], raw["bytes_full_mean"]))
    for q in r["inputs"][1:]:
        print(line(f"baseline, input image JPEG q={q['q']}", q["top1"], q["bytes_payload_mean"], q["bytes_full_mean"]))
    name = f"BottleNet RB{r['split_after']} features, JPEG q={r['quality']}"
    print(line(name, s["top1"], s["bytes_payload_mean"], s["bytes_full_mean"]))
    if r.get("identity"):
        i = r["identity"]
        print(
            line(
                "  the same unit identity-trained, same JPEG", i["top1"], i["bytes_payload_mean"], i["bytes_full_mean"]
            )
        )
    m = r["matched"]
    if m is None:
        print(
            f"\nno input-image JPEG quality reaches BottleNet's {100 * s['top1']:.2f} %: at every quality tried "
            f"the image costs accuracy that BottleNet's {s['bytes_payload_mean']:.1f} B payload keeps"
        )
    else:
        ratio = m["bytes_payload_mean"] / s["bytes_payload_mean"]
        print(
            f"\nat matched accuracy: BottleNet sends {s['bytes_payload_mean']:.1f} B ({100 * s['top1']:.2f} %); the "
            f"input image needs JPEG q={m['q']}, {m['bytes_payload_mean']:.1f} B ({100 * m['top1']:.2f} %): "
            f"{ratio:.2f}x {'more' if ratio > 1 else 'less (BottleNet does not win here)'}"
        )


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/fashion_mnist.py", help="the BottleNet config (a file path)")
    p.add_argument("--workdir", default="workdir/demo")
    p.add_argument("--baseline_epochs", type=float, default=1.0)
    p.add_argument("--finetune_epochs", type=float, default=0.5)
    p.add_argument("--finetune_lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--identity", action="store_true", help="also the identity-trained unit (the ablation)")
    return p


def main(argv=None):
    report(run(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
