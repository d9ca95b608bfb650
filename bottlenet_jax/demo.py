"""`make demo`: BottleNet's point on real Fashion-MNIST, in one command on a CPU.

    python -m bottlenet_jax.demo [--config configs/fashion_mnist_demo.py] [--workdir workdir/demo]
        [--entropy_config configs/fashion_mnist_entropic_student.py]
        [--hyperprior_config configs/fashion_mnist_hyperprior.py] [--baseline_epochs 1]
        [--finetune_epochs 0.5] [--identity]

1. trains the plain network (no bottleneck) — the baseline;
2. fine-tunes BottleNet (the config's split, reduction unit and JPEG quality in the loop) from it;
3. fine-tunes the two learned codecs the same way (each config's unit, codec and rate_lambda; its
   first stage shortened to DEMO_STAGE1_STEPS for the demo's half epoch): the factorized entropy
   bottleneck of --entropy_config (its integer tables fitted to the training split's symbols after
   training) and the mean-scale hyperprior of --hyperprior_config (its tables built from its
   parameters); each codec's state is sent once: its size is printed. "" leaves a codec out;
4. sends the test images themselves as JPEG at several qualities to the baseline: the cheapest
   quality whose accuracy reaches a split model's is the input image's payload at matched accuracy.
Prints them side by side: top-1 and bytes per sample (abbreviated JPEG streams, the tables a
quality fixes dropped, on both sides; full JFIF files in brackets; range-coded streams for the
entropy bottleneck). Model selection uses the config's validation split (held out from training);
the test split is evaluated once per model. Between stages it prints the time spent and an
estimate of the time left (from the steps still to train at the speed measured so far).
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
DEMO_STAGE1_STEPS = 50  # the entropy recipe's unit-only first stage, within the demo's half epoch
NETWORK_KEYS = ("model", "image_size", "mean", "std", "dataset", "train_split")


def configs(path: str, a):
    bottlenet = cli.load_config_file(path, *getattr(a, "overrides", ()))
    base = ml_collections.ConfigDict(bottlenet.to_dict())
    base.split.update(after=0, unit=False)
    base.codec = ml_collections.ConfigDict(dict(name="identity"))
    base.num_epochs = a.baseline_epochs
    base.seed = bottlenet.seed = a.seed
    return base, finetuned(bottlenet, a)


def finetuned(cfg, a):
    """A split model's config, fine-tuned from the demo's baseline with the demo's schedule."""
    cfg.seed = a.seed
    cfg.init_from = os.path.join(a.workdir, "baseline")
    cfg.num_epochs = a.finetune_epochs
    cfg.learning_rate = a.finetune_lr
    cfg.warmup_epochs = 0.05
    return cfg


def learned_config(path: str, base, a):
    """A learned codec's config fine-tuned like BottleNet; its network must be the baseline's."""
    from bottlenet_jax.errors import ConfigError

    ent = cli.load_config_file(path)
    for k in NETWORK_KEYS:
        if ent[k] != base[k]:
            raise ConfigError(f"{path}: its {k} ({ent[k]}) is not the baseline's ({base[k]})")
    ent.stage1_steps = min(ent.stage1_steps, DEMO_STAGE1_STEPS)
    return finetuned(ent, a)


def identity_trained(bottlenet):
    """The BottleNet config with the identity codec in the loop (same unit, init, epochs, seed)."""
    ident = ml_collections.ConfigDict(bottlenet.to_dict())
    ident.codec = ml_collections.ConfigDict(dict(name="identity"))
    return ident


def matched(bottlenet_top1: float, inputs: list[dict]) -> dict | None:
    """The cheapest input-image JPEG whose top-1 reaches BottleNet's (None if none does)."""
    ok = [r for r in inputs if r["q"] is not None and r["top1"] >= bottlenet_top1]
    return min(ok, key=lambda r: r["bytes_payload_mean"]) if ok else None


class Clock:
    """Time spent so far and an estimate of the time left: the epochs still to train at the speed
    measured so far (compiling and evaluation counted in), plus half a minute per stage left."""

    def __init__(self, epochs: list[float]):
        self.t0, self.epochs = time.time(), epochs

    def stage(self, title: str, k: int) -> str:
        spent, done = time.time() - self.t0, sum(self.epochs[:k])
        if done:
            left = sum(self.epochs[k:]) * spent / done + 30 * (len(self.epochs) + 1 - k)
            eta = f"{spent / 60:.1f} min so far, about {left / 60:.0f} min left"
        else:
            eta = "time left: estimated once a model has trained here"
        return f"### {k + 1}/{len(self.epochs) + 1} {title}  [{eta}]"


def run(a) -> dict:
    """Train/evaluate the models and return their figures (also written to WORKDIR/demo.json)."""

    from bottlenet_jax import train_lib
    from bottlenet_jax.checkpoint import write_json
    from bottlenet_jax.evaluation import evaluate_workdir, input_images

    cli.setup_logging()
    t0 = time.time()
    base, bn = cli.guarded(configs, a.config, a)
    ent = cli.guarded(learned_config, a.entropy_config, base, a) if a.entropy_config else None
    hyp = cli.guarded(learned_config, a.hyperprior_config, base, a) if a.hyperprior_config else None
    runs = [("baseline", base), ("bottlenet", bn)]
    runs += [("entropy", ent)] if ent is not None else []
    runs += [("hyperprior", hyp)] if hyp is not None else []
    runs += [("identity", identity_trained(bn))] if a.identity else []
    # runs that had finished before this call: their training time is not in this call's minutes
    done_before = [n for n, _ in runs if os.path.exists(os.path.join(a.workdir, n, "test.json"))]
    clock = Clock([0.0 if n in done_before else float(c.num_epochs) for n, c in runs])
    titles = {
        "baseline": f"baseline (no bottleneck), {a.baseline_epochs:g} epoch(s), seed {a.seed}",
        "bottlenet": f"BottleNet RB{bn.split.after}, C'={bn.split.channels}, stride {bn.split.stride}, JPEG "
        f"q={bn.codec.get('quality')} in the loop, fine-tuned {a.finetune_epochs:g} epoch(s)",
        "entropy": ent is not None
        and f"entropy bottleneck RB{ent.split.after}, C'={ent.split.channels}, rate_lambda={ent.rate_lambda:g}, "
        f"fine-tuned {a.finetune_epochs:g} epoch(s)",
        "hyperprior": hyp is not None
        and f"hyperprior RB{hyp.split.after}, C'={hyp.split.channels}, rate_lambda={hyp.rate_lambda:g}, "
        f"fine-tuned {a.finetune_epochs:g} epoch(s)",
        "identity": "the BottleNet unit fine-tuned with the identity codec, evaluated with that JPEG",
    }
    out = {}
    for k, (name, cfg) in enumerate(runs):
        print(clock.stage(titles[name], k), flush=True)
        s = cli.guarded(train_lib.train_and_evaluate, cfg, os.path.join(a.workdir, name))
        out[name] = cli.guarded(evaluate_workdir, os.path.join(a.workdir, name), bn)[0] if name == "identity" else s
    print(clock.stage("the test images themselves as JPEG, classified by the baseline", len(runs)), flush=True)
    inputs = cli.guarded(input_images, base, os.path.join(a.workdir, "baseline"), INPUT_QUALITIES)
    out = {
        "seed": a.seed,
        "baseline": out["baseline"],
        "bottlenet": out["bottlenet"],
        "entropy": out.get("entropy"),
        "hyperprior": out.get("hyperprior"),
        "identity": out.get("identity"),
        "inputs": inputs,
        "matched": matched(out["bottlenet"]["top1"], inputs),
        "matched_entropy": matched(out["entropy"]["top1"], inputs) if "entropy" in out else None,
        "matched_hyperprior": matched(out["hyperprior"]["top1"], inputs) if "hyperprior" in out else None,
        "minutes": (time.time() - t0) / 60,
        "trained_before": done_before,
        "dataset": bn.dataset,
        "eval_split": bn.eval_split,
        "validation_split": bn.validation_split,
        "split_after": bn.split.after,
        "channels": bn.split.channels,
        "stride": bn.split.stride,
        "quality": bn.codec.quality,
        "entropy_channels": ent.split.channels if ent is not None else None,
        "rate_lambda": ent.rate_lambda if ent is not None else None,
        "hyperprior_channels": hyp.split.channels if hyp is not None else None,
        "hyperprior_lambda": hyp.rate_lambda if hyp is not None else None,
    }
    write_json(os.path.join(a.workdir, "demo.json"), out)
    return out


def report(r: dict) -> None:
    raw, b, s = r["inputs"][0], r["baseline"], r["bottlenet"]

    def line(name, top1, abbr, full):
        return f"{name:48s} {100 * top1:6.2f} %  {abbr:8.1f} B  [{full:.1f}]"

    print(
        f"\n=== BottleNet demo: {r['dataset']} {r['eval_split']} split ({s['examples']} images), models selected on "
        f"{r['validation_split'] or 'the last step'}, seed {r['seed']}; {r['minutes']:.1f} min ==="
    )
    print(f"{'':48s} {'top-1':>8s}  {'bytes/sample':>10s} [full file]")
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
    for key, label, ch, lam in (
        ("entropy", "entropy bottleneck", "entropy_channels", "rate_lambda"),
        ("hyperprior", "hyperprior", "hyperprior_channels", "hyperprior_lambda"),
    ):
        e = r.get(key)
        if not e:
            continue
        name = f"{label} RB{r['split_after']}, C'={r[ch]}, λ={r[lam]:g}"
        print(line(name, e["top1"], e["bytes_payload_mean"], e["bytes_full_mean"]))
        if e.get("rate_estimate_bytes_mean") is not None:
            print(f"{'  its rate term, at the values sent':48s} {'':8s}  {e['rate_estimate_bytes_mean']:8.1f} B")
        if e.get("side_info_bytes"):
            n = e["examples"]
            print(
                f"{'  + its tables, sent once':48s} {e['side_info_bytes']:>10,d} B once "
                f"({e['side_info_bytes'] / n:.1f} B per image over these {n})"
            )
    print()
    rows = (
        ("BottleNet", s, r["matched"]),
        ("the entropy bottleneck", r.get("entropy"), r.get("matched_entropy")),
        ("the hyperprior", r.get("hyperprior"), r.get("matched_hyperprior")),
    )
    for label, model, m in rows:
        if not model:
            continue
        if m is None:
            print(
                f"no input-image JPEG quality reaches {label}'s {100 * model['top1']:.2f} %: at every quality tried "
                f"the image costs accuracy that {label}'s {model['bytes_payload_mean']:.1f} B payload keeps"
            )
            continue
        ratio = m["bytes_payload_mean"] / model["bytes_payload_mean"]
        print(
            f"at matched accuracy: {label} sends {model['bytes_payload_mean']:.1f} B ({100 * model['top1']:.2f} %); "
            f"the input image needs JPEG q={m['q']}, {m['bytes_payload_mean']:.1f} B ({100 * m['top1']:.2f} %): "
            f"{ratio:.2f}x {'more' if ratio > 1 else f'less ({label} does not win here)'}"
        )


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/fashion_mnist_demo.py", help="the BottleNet config (a file path)")
    p.add_argument(
        "--entropy_config",
        default="configs/fashion_mnist_entropic_student.py",
        help='the entropy bottleneck of this config on the same network ("": leave it out)',
    )
    p.add_argument(
        "--hyperprior_config",
        default="configs/fashion_mnist_hyperprior.py",
        help='the mean-scale hyperprior of this config on the same network ("": leave it out)',
    )
    p.add_argument("--workdir", default="workdir/demo")
    p.add_argument("--baseline_epochs", type=float, default=1.0)
    p.add_argument("--finetune_epochs", type=float, default=0.5)
    p.add_argument("--finetune_lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--identity", action="store_true", help="also the identity-trained unit (the ablation)")
    p.add_argument("--dry_run", action="store_true", help="build and check every config, then stop (no data)")
    return p


def parse(argv=None):
    """The demo's arguments; --config.KEY=VALUE ones override the BottleNet config (cli.apply_overrides)."""
    import sys

    overrides, rest = cli.split_overrides(sys.argv[1:] if argv is None else argv)
    a = parser().parse_args(rest)
    a.overrides = overrides
    return a


def validate(a) -> str:
    from bottlenet_jax.train_lib import validate_config

    base, bn = cli.guarded(configs, a.config, a)
    runs = [base, bn] + [cli.guarded(learned_config, c, base, a) for c in (a.entropy_config, a.hyperprior_config) if c]
    return "; ".join(cli.guarded(validate_config, c) for c in runs)


def main(argv=None):
    a = parse(argv)
    if a.dry_run:
        return print("dry run:", validate(a))
    report(run(a))


if __name__ == "__main__":
    main()
